//! Redrives running at the same time, from every face: wide (packed) dead
//! letters written by a real `host run` are moved by two dashboard requests
//! against one host at once, by two `host dlq redrive` processes at once,
//! and by one of each at once, and each original entry comes back exactly
//! once; a dashboard redrive of many records answers a bounded list of rows
//! with totals of all.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::http::{free_port, get, post_json};
use crate::support::redis_server::RawFields;
use crate::support::{Host, RedisServer, eventually, key};

const WAIT: Duration = Duration::from_secs(120);
const TOKEN: &str = "dlq-moves-token";
/// Dead letters moved by each round.
const RECORDS: usize = 300;
/// Wider than one scripted `XADD` takes (3,900 fields): these records are packed.
const WIDTH: usize = 3_950;

/// Entry `i`: an `n` field naming it, then fields whose values carry `i`
/// too, so two entries never have the same content.
fn wide_entry(i: usize) -> RawFields {
    let mut fields = vec![(b"n".to_vec(), i.to_string().into_bytes())];
    fields.extend((1..WIDTH).map(|j| {
        (
            format!("f{j}").into_bytes(),
            format!("{i}.{j}").into_bytes(),
        )
    }));
    fields
}

/// Appends the wide entries `from..to` to `stream`, a few per round trip.
fn add_wide(redis: &RedisServer, stream: &str, from: usize, to: usize) {
    let mut c = redis.conn();
    for chunk in (from..to).collect::<Vec<_>>().chunks(20) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let cmd = pipe.cmd("XADD").arg(stream).arg("*");
            for (k, v) in wide_entry(i) {
                cmd.arg(k).arg(v);
            }
            cmd.ignore();
        }
        let () = pipe.query(&mut c).expect("XADD of wide entries");
    }
}

/// Lets a `host run` of the misbehaving plugin on `stream` dead-letter every
/// entry it has not seen (each is over `--max-fields`), until `dlq` holds
/// `n` records, all packed.
fn dead_letter_through_the_host(redis: &RedisServer, stream: &str, dlq: &str, n: usize) {
    let mut run = Host::misbehave(redis, stream, &["--max-fields", "100"]);
    eventually(WAIT, &format!("{n} dead letters"), || {
        (redis.range_raw(dlq).len() == n).then_some(())
    });
    run.signal(15);
    run.wait_exit(WAIT);
    let records = redis.range_raw(dlq);
    assert!(
        records
            .iter()
            .all(|(_, r)| r.iter().any(|(k, _)| k == b"packed_fields")),
        "every record is packed"
    );
}

/// The entries of `stream` after `after`, each checked to be one original
/// byte for byte; returns how often each original came back.
fn came_back(redis: &RedisServer, stream: &str, after: &str) -> Vec<usize> {
    let mut seen = vec![0; RECORDS * 2];
    for (id, fields) in redis.range_raw(stream) {
        if crate::dlq_records::id_le(&id, after) {
            continue;
        }
        let i: usize = String::from_utf8_lossy(&fields[0].1)
            .parse()
            .expect("an n field");
        assert_eq!(
            fields,
            wide_entry(i),
            "entry {id} is original {i} byte for byte"
        );
        seen[i] += 1;
    }
    seen
}

/// Asserts that the entries of `stream` after `after` are the originals,
/// each exactly once.
fn exactly_once(redis: &RedisServer, stream: &str, after: &str, who: &str) {
    let seen = came_back(redis, stream, after);
    let appended: usize = seen.iter().sum();
    let wrong: Vec<(usize, usize)> = (0..RECORDS)
        .filter(|&i| seen[i] != 1)
        .map(|i| (i, seen[i]))
        .collect();
    assert_eq!(
        (appended, &wrong[..wrong.len().min(10)]),
        (RECORDS, &[][..]),
        "{who}: {appended} entries appended for {RECORDS} records; (original, times back) not exactly once: {} in all",
        wrong.len()
    );
}

fn last_id(redis: &RedisServer, stream: &str) -> String {
    redis
        .range_raw(stream)
        .last()
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| "0-0".into())
}

/// A host serving the dashboard (admin) whose one pipeline consumes
/// `stream` (given one entry) with `dlq` as its DLQ; and its port.
fn dashboard(redis: &RedisServer, stream: &str, dlq: &str) -> (Host, u16) {
    let port = free_port();
    redis.add(stream, &[("action", "ok")]);
    let host = Host::spawn_env(
        &[
            "run",
            "--redis",
            &redis.url(),
            "--stream",
            stream,
            "--group",
            "g",
            "--plugin",
            crate::support::plugin("misbehave").to_str().unwrap(),
            "--dlq",
            dlq,
            "--block",
            "200ms",
            "--http",
            &port.to_string(),
            "--http-admin",
        ],
        &[("STREAMHOST_HTTP_TOKEN", TOKEN)],
    );
    eventually(WAIT, "the dashboard serves", || {
        (get(port, "/readyz")?.status == 200).then_some(())
    });
    (host, port)
}

type Request = std::thread::JoinHandle<(u16, serde_json::Value)>;

/// `POST /api/dlq/redrive {"all": true}` for `stream`'s pipelines, started.
fn dashboard_redrive(port: u16, stream: &str) -> Request {
    let body = json!({"stream": stream, "all": true});
    std::thread::spawn(move || post_json(port, "/api/dlq/redrive", Some(TOKEN), &body))
}

fn finished_request(r: Request) {
    let (status, answer) = r.join().unwrap();
    assert_eq!(status, 200, "{answer}");
}

/// `host dlq redrive --stream STREAM`, started.
fn cli_redrive(redis: &RedisServer, stream: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "dlq",
            "redrive",
            "--redis",
            &redis.url(),
            "--stream",
            stream,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning host")
}

fn finished_process(c: std::process::Child) {
    let out = c.wait_with_output().expect("redrive exits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
}

#[test]
fn concurrent_redrives_of_wide_dead_letters_move_each_exactly_once() {
    let redis = RedisServer::start();
    let stream = key("dlq-moves");
    let dlq = format!("{stream}:dlq");
    add_wide(&redis, &stream, 0, RECORDS);
    dead_letter_through_the_host(&redis, &stream, &dlq, RECORDS);
    let originals_end = last_id(&redis, &stream);

    // Two dashboard requests at once, against one host. Its pipeline
    // consumes another stream but shares the DLQ, so nothing re-reads the
    // redriven entries while they are counted.
    let other = key("dlq-moves-idle");
    let (_dashboard, port) = dashboard(&redis, &other, &dlq);
    let requests = [
        dashboard_redrive(port, &other),
        dashboard_redrive(port, &other),
    ];
    for r in requests {
        finished_request(r);
    }
    exactly_once(&redis, &stream, &originals_end, "two dashboard requests");
    assert!(redis.range_raw(&dlq).is_empty(), "the DLQ is empty");

    // The redriven entries are new to group g: dead-lettered again, then
    // moved by two CLI processes at once.
    dead_letter_through_the_host(&redis, &stream, &dlq, RECORDS);
    let round_end = last_id(&redis, &stream);
    let children = [cli_redrive(&redis, &stream), cli_redrive(&redis, &stream)];
    for c in children {
        finished_process(c);
    }
    exactly_once(&redis, &stream, &round_end, "two CLI processes");
    assert!(redis.range_raw(&dlq).is_empty(), "the DLQ is empty");

    // And a dashboard request and a CLI process at once.
    dead_letter_through_the_host(&redis, &stream, &dlq, RECORDS);
    let round_end = last_id(&redis, &stream);
    let (request, child) = (
        dashboard_redrive(port, &other),
        cli_redrive(&redis, &stream),
    );
    finished_request(request);
    finished_process(child);
    exactly_once(
        &redis,
        &stream,
        &round_end,
        "a dashboard request and a CLI process",
    );
    assert!(redis.range_raw(&dlq).is_empty(), "the DLQ is empty");
}

/// `n` narrow records in `dlq` whose source stream is `target`.
fn narrow_records(redis: &RedisServer, dlq: &str, target: &str, n: usize) {
    let mut c = redis.conn();
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("XADD")
            .arg(dlq)
            .arg("*")
            .arg(&["kind", "permanent", "reason", "r", "source_stream", target])
            .arg("field:n")
            .arg(i)
            .ignore();
    }
    let () = pipe.query(&mut c).unwrap();
}

#[test]
fn a_dashboard_redrive_lists_at_most_1000_rows_and_counts_them_all() {
    let redis = RedisServer::start();
    let target = key("dlq-rows-target");
    let dlq = key("dlq-rows:dlq");
    let other = key("dlq-rows-idle");
    let (_dashboard, port) = dashboard(&redis, &other, &dlq);
    let redrive_all = || {
        let (status, answer) = post_json(
            port,
            "/api/dlq/redrive",
            Some(TOKEN),
            &json!({"stream": other, "all": true}),
        );
        assert_eq!(status, 200, "{answer}");
        answer
    };
    for (n, listed, cut) in [(1_000, 1_000, false), (1_001, 1_000, true)] {
        narrow_records(&redis, &dlq, &target, n);
        let answer = redrive_all();
        assert_eq!(
            answer["rows"].as_array().unwrap().len(),
            listed,
            "{n} records"
        );
        assert_eq!(answer["rows_cut"], cut, "{n} records");
        assert_eq!(answer["totals"]["records"], n);
        assert_eq!(answer["totals"]["outcomes"]["moved"], n);
        assert!(redis.range_raw(&dlq).is_empty());
    }
    assert_eq!(redis.range_raw(&target).len(), 2_001);
}
