//! `host dlq`: dead letters written by a real `host run` are listed, shown
//! and redriven with their original fields byte for byte (inline and packed
//! records); a redrive killed midway loses and duplicates nothing; purge
//! asks, or refuses without --yes when it cannot.

use std::time::Duration;

use serde_json::Value as Json;

use crate::ops_status::{host, json};
use crate::support::{Host, RedisServer, eventually, fast, key};

const WAIT: Duration = Duration::from_secs(60);

pub type Raw = Vec<(Vec<u8>, Vec<u8>)>;

pub fn wide(n: usize) -> Raw {
    let mut fields = vec![(b"action".to_vec(), b"emit".to_vec())];
    fields.extend((1..n).map(|i| (format!("f{i}").into_bytes(), vec![(i % 251) as u8; i % 7])));
    fields
}

#[test]
fn redrive_puts_dead_letters_back_byte_for_byte() {
    let redis = RedisServer::start();
    let stream = key("ops-redrive");
    let dlq = format!("{stream}:dlq");
    let binary: Raw = vec![
        (b"action".to_vec(), b"permanent".to_vec()),
        (b"reason".to_vec(), b"poison pill".to_vec()),
        (b"blob".to_vec(), b"\x00\xff\r\n\x1b[2J\\".to_vec()),
        (b"empty".to_vec(), Vec::new()),
    ];
    let bad_name: Raw = vec![
        (b"\xffname".to_vec(), b"v".to_vec()),
        (b"action".to_vec(), b"ok".to_vec()),
    ];
    let wide = wide(4_000);
    let originals = [binary.clone(), bad_name.clone(), wide.clone()];
    let source_ids: Vec<String> = originals
        .iter()
        .map(|f| redis.add_raw(&stream, f))
        .collect();
    let mut run = Host::misbehave(&redis, &stream, &fast(&["--max-fields", "1000"]));
    eventually(WAIT, "three dead letters", || {
        (redis.range_raw(&dlq).len() == 3).then_some(())
    });
    run.signal(15);
    run.wait_exit(WAIT);

    let listed = json(&redis, &["dlq", "list", "--stream", &stream, "--json"]);
    // Dead-lettered in whatever order the host settled them: find each by its source id.
    let record = |i: usize| -> Json {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["source_id"] == source_ids[i].as_str())
            .cloned()
            .unwrap()
    };
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let kinds: Vec<Json> = (0..3).map(|i| record(i)["kind"].clone()).collect();
    assert_eq!(kinds, ["permanent", "invalid", "invalid"]);
    assert_eq!(record(0)["reason"], "poison pill");
    assert_eq!(record(0)["deliveries"], 1);
    assert_eq!(record(2)["packed"], true);
    assert_eq!(record(0)["packed"], false);
    let only = json(
        &redis,
        &[
            "dlq",
            "list",
            "--stream",
            &stream,
            "--json",
            "--kind",
            "permanent",
            "--reason",
            "POISON",
        ],
    );
    assert_eq!(only.as_array().unwrap().len(), 1);
    let none = json(
        &redis,
        &[
            "dlq",
            "list",
            "--stream",
            &stream,
            "--json",
            "--plugin-version",
            "0000000",
        ],
    );
    assert_eq!(none.as_array().unwrap().len(), 0);

    // show: binary-safe text, exact bytes in the JSON's hex.
    let id = record(0)["id"].as_str().unwrap().to_owned();
    let (code, out, err) = host(&redis, &["dlq", "show", "--stream", &stream, &id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(r"\x00\xff\r\n\x1b[2J\\") && !out.contains('\x1b'),
        "{out}"
    );
    let shown = json(&redis, &["dlq", "show", "--stream", &stream, &id, "--json"]);
    assert_eq!(shown["fields"][2]["value_hex"], "00ff0d0a1b5b324a5c");

    // A dry run moves nothing.
    let (code, out, _) = host(
        &redis,
        &["dlq", "redrive", "--stream", &stream, "--dry-run"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("would move 3 of 3"), "{out}");
    assert_eq!(redis.range_raw(&dlq).len(), 3);

    // Redrive elsewhere, then check every byte.
    let fixed = key("ops-redrive-fixed");
    let rows = json(
        &redis,
        &[
            "dlq", "redrive", "--stream", &stream, "--to", &fixed, "--json",
        ],
    );
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "moved"),
        "{rows}"
    );
    let back: Vec<Raw> = redis
        .range_raw(&fixed)
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    assert_eq!(back.len(), 3);
    for want in &originals {
        let n = back.iter().filter(|got| *got == want).count();
        assert_eq!(
            n,
            1,
            "an entry of {} fields comes back exactly once, byte for byte",
            want.len()
        );
    }
    assert_eq!(redis.range_raw(&dlq).len(), 0, "the DLQ is empty");
    // Nothing left to move: a second redrive moves nothing.
    let rows = json(&redis, &["dlq", "redrive", "--stream", &stream, "--json"]);
    assert_eq!(rows, Json::Array(vec![]));
}

/// A DLQ of `n` records (written in the layout `host run` uses) whose
/// original entries carry `n=<i>`.
fn big_dlq(redis: &RedisServer, stream: &str, n: usize) {
    let mut c = redis.conn();
    let dlq = format!("{stream}:dlq");
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg(&dlq)
                .arg("*")
                .arg(&["kind", "permanent", "reason", "r", "source_stream", stream])
                .arg("field:n")
                .arg(i.to_string())
                .ignore();
        }
        let () = pipe.query(&mut c).unwrap();
    }
}

fn numbers(redis: &RedisServer, key: &str, field: &str) -> Vec<usize> {
    redis
        .range(key)
        .into_iter()
        .filter_map(|(_, f)| {
            f.into_iter()
                .find(|(k, _)| k == field)
                .map(|(_, v)| v.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_redrive_killed_midway_loses_and_duplicates_nothing() {
    let redis = RedisServer::start();
    let stream = key("ops-killed");
    let dlq = format!("{stream}:dlq");
    let n = 2_000;
    big_dlq(&redis, &stream, n);
    let mut redrive = Host::spawn_env(
        &[
            "dlq",
            "redrive",
            "--redis",
            &redis.url(),
            "--stream",
            &stream,
        ],
        &[("STREAMHOST_FAULT", "redrive-slow")],
    );
    eventually(WAIT, "a few hundred redriven", || {
        (redis.range(&stream).len() >= 300).then_some(())
    });
    redrive.signal(9);
    redrive.wait_exit(WAIT);
    let moved = numbers(&redis, &stream, "n");
    let left = numbers(&redis, &dlq, "field:n");
    assert!(
        moved.len() < n,
        "killed midway: {} of {n} moved",
        moved.len()
    );
    let mut all: Vec<usize> = moved.iter().chain(&left).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "every record once: in the stream or still in the DLQ"
    );

    // Finishing the job moves the rest, still exactly once each.
    let (code, out, err) = host(&redis, &["dlq", "redrive", "--stream", &stream]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("moved {} of {}", left.len(), left.len())),
        "{out}"
    );
    let mut moved = numbers(&redis, &stream, "n");
    moved.sort_unstable();
    assert_eq!(moved, (0..n).collect::<Vec<_>>());
    assert!(redis.range(&dlq).is_empty());
}

#[test]
fn purge_asks_or_needs_yes() {
    let redis = RedisServer::start();
    let stream = key("ops-purge");
    let dlq = format!("{stream}:dlq");
    redis.add(
        &dlq,
        &[
            ("kind", "permanent"),
            ("reason", "a"),
            ("source_stream", &stream),
            ("field:x", "1"),
        ],
    );
    redis.add(
        &dlq,
        &[
            ("kind", "trimmed"),
            ("reason", "b"),
            ("source_stream", &stream),
        ],
    );
    // Not a terminal and no --yes: refused, nothing deleted.
    let (code, _, err) = host(&redis, &["dlq", "purge", "--stream", &stream]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("without --yes"), "{err}");
    assert_eq!(redis.range(&dlq).len(), 2);
    // A trimmed record cannot be redriven: it stays.
    let rows = json(
        &redis,
        &[
            "dlq", "redrive", "--stream", &stream, "--kind", "trimmed", "--json",
        ],
    );
    assert_eq!(rows[0]["outcome"], "no-payload");
    assert_eq!(redis.range(&dlq).len(), 2);
    // On a terminal it asks: "n" keeps them, "y" deletes them.
    let (code, err) = purge_answering(&redis, &stream, "n\n");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("delete 1 dead letters"), "{err}");
    assert!(err.contains("nothing deleted"), "{err}");
    assert_eq!(redis.range(&dlq).len(), 2);
    let (code, err) = purge_answering(&redis, &stream, "y\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(redis.range(&dlq).len(), 1);
    redis.add(
        &dlq,
        &[
            ("kind", "trimmed"),
            ("reason", "b"),
            ("source_stream", &stream),
        ],
    );
    let (code, out, err) = host(
        &redis,
        &[
            "dlq", "purge", "--stream", &stream, "--kind", "trimmed", "--yes",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted 1 dead letters"), "{out}");
    let left = redis.range(&dlq);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1[0], ("kind".to_owned(), "permanent".to_owned()));
}

/// `dlq purge --kind trimmed` with its stdin (and stderr, where it asks) on
/// a pseudo-terminal, `answer` typed; returns the exit code and what it
/// wrote on the terminal.
fn purge_answering(redis: &RedisServer, stream: &str, answer: &str) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};

    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut master = std::fs::File::from(master);
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "dlq",
            "purge",
            "--redis",
            &redis.url(),
            "--stream",
            stream,
            "--kind",
            "trimmed",
        ])
        .stdin(Stdio::from(terminal.try_clone().unwrap()))
        .stderr(Stdio::from(terminal))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Typed ahead: the terminal holds the line until the prompt reads it.
    master.write_all(answer.as_bytes()).unwrap();
    let status = child.wait().unwrap();
    // Everything written on the terminal (the echo of the answer too),
    // without waiting for more once the child is gone.
    let mut seen = Vec::new();
    let fd = rustix::fs::fcntl_getfl(&master).unwrap();
    rustix::fs::fcntl_setfl(&master, fd | rustix::fs::OFlags::NONBLOCK).unwrap();
    let _ = master.read_to_end(&mut seen);
    (status.code(), String::from_utf8_lossy(&seen).into_owned())
}
