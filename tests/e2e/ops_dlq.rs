//! `host dlq`: dead letters written by a real `host run` are listed, shown
//! and redriven with their original fields byte for byte (inline and packed
//! records); a redrive killed midway loses and duplicates nothing; purge
//! asks, or refuses without --yes when it cannot.

use std::time::Duration;

use serde_json::Value as Json;

use crate::ops_status::{host, json};
use crate::support::{Host, RedisServer, eventually, fast, key};

const WAIT: Duration = Duration::from_secs(60);

type Raw = Vec<(Vec<u8>, Vec<u8>)>;

fn wide(n: usize) -> Raw {
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

/// Whether stream id `a` is at or before `b`.
pub fn id_le(a: &str, b: &str) -> bool {
    let parts = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    parts(a) <= parts(b)
}

/// A `packed_fields` value: the pairs as a RESP2 array of bulk strings.
pub fn packed(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", fields.len() * 2).into_bytes();
    for (k, v) in fields {
        for s in [k, v] {
            out.extend(format!("${}\r\n", s.len()).bytes());
            out.extend(s);
            out.extend(b"\r\n");
        }
    }
    out
}

/// Writes a DLQ record in the layout `host run` uses, with `source` as its
/// source stream and `originals` either packed (`Some(value)`) or inline.
fn write_record(
    redis: &RedisServer,
    dlq: &str,
    source: &str,
    kind: &str,
    originals: Result<Vec<u8>, &Raw>,
) -> String {
    let mut record: Raw = [
        ("kind", kind),
        ("reason", "written by the test"),
        ("source_stream", source),
        ("source_id", "1-1"),
        ("group", "g"),
        ("deliveries", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect();
    match originals {
        Ok(value) => record.push((b"packed_fields".to_vec(), value)),
        Err(fields) => record.extend(fields.iter().map(|(k, v)| {
            let mut name = b"field:".to_vec();
            name.extend(k);
            (name, v.clone())
        })),
    }
    redis.add_raw(dlq, &record)
}

#[test]
fn a_redrive_onto_a_key_that_is_not_a_stream_keeps_the_record_and_the_key() {
    let redis = RedisServer::start();
    let stream = key("ops-wrong-target");
    let dlq = format!("{stream}:dlq");
    let (string, hash) = (key("ops-wrong-string"), key("ops-wrong-hash"));
    let mut c = redis.conn();
    let () = redis::cmd("SET")
        .arg(&string)
        .arg("keep me")
        .query(&mut c)
        .unwrap();
    let () = redis::cmd("HSET")
        .arg(&hash)
        .arg("a")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let wide = wide(3_950);
    let narrow: Raw = vec![(b"a".to_vec(), b"1".to_vec())];
    for target in [&string, &hash] {
        write_record(&redis, &dlq, target, "permanent", Ok(packed(&wide)));
        write_record(&redis, &dlq, target, "permanent", Err(&narrow));
    }
    let before = redis.range_raw(&dlq);

    let rows = json(&redis, &["dlq", "redrive", "--stream", &stream, "--json"]);
    let outcomes: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["wrong-target"; 4], "{rows}");
    assert_eq!(
        redis.range_raw(&dlq),
        before,
        "every record is still in the DLQ"
    );
    let kept: String = redis::cmd("GET").arg(&string).query(&mut c).unwrap();
    assert_eq!(kept, "keep me");
    let kept: Vec<(String, String)> = redis::cmd("HGETALL").arg(&hash).query(&mut c).unwrap();
    assert_eq!(kept, [("a".to_owned(), "1".to_owned())]);
}

/// `GET path` with the admin token (payload reads may need it); `None`
/// while nothing listens.
fn get_with_token(port: u16, path: &str, token: &str) -> Option<(u16, Json)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Some((status, serde_json::from_str(body).unwrap_or(Json::Null)))
}

#[test]
fn a_malformed_packed_record_is_listed_as_undecodable_and_kept() {
    let redis = RedisServer::start();
    let stream = key("ops-undecodable");
    let dlq = format!("{stream}:dlq");
    redis.add(&stream, &[("action", "ok")]);
    let narrow: Raw = vec![(b"a".to_vec(), b"1".to_vec())];
    let good = write_record(&redis, &dlq, &stream, "permanent", Err(&narrow));
    let cut_short = b"*4\r\n$1\r\nk\r\n$5\r\nab".to_vec();
    let bad = write_record(&redis, &dlq, &stream, "invalid", Ok(cut_short));
    let undecodable = |v: &Json| v["undecodable"].as_str().is_some_and(|why| !why.is_empty());

    let status = json(&redis, &["status", "--stream", &stream, "--json"]);
    let d = &status[0]["dlq"];
    assert_eq!(d["length"], 2, "{d}");
    assert_eq!(
        d["kinds"],
        serde_json::json!({"invalid": 1, "permanent": 1})
    );
    assert_eq!(d["newest"][0]["id"], bad.as_str());
    assert!(
        undecodable(&d["newest"][0]) && !undecodable(&d["newest"][1]),
        "{d}"
    );
    let (code, out, err) = host(&redis, &["status", "--stream", &stream]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("undecodable"), "{out}");

    let listed = json(&redis, &["dlq", "list", "--stream", &stream, "--json"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        !undecodable(&listed[0]) && undecodable(&listed[1]),
        "{listed:?}"
    );
    assert_eq!(listed[0]["fields"][0]["name"], "a");
    let (code, out, err) = host(&redis, &["dlq", "list", "--stream", &stream]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("undecodable"), "{out}");
    let shown = json(
        &redis,
        &["dlq", "show", "--stream", &stream, &bad, "--json"],
    );
    assert!(undecodable(&shown), "{shown}");
    let (code, out, err) = host(&redis, &["dlq", "show", "--stream", &stream, &bad]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("undecodable"), "{out}");

    // The HTTP side: /api/status, /api/dlq and the dashboard's state.
    let port = crate::support::http::free_port();
    let _run = Host::spawn_env(
        &[
            "run",
            "--redis",
            &redis.url(),
            "--stream",
            &stream,
            "--group",
            "g",
            "--plugin",
            crate::support::plugin("misbehave").to_str().unwrap(),
            "--block",
            "200ms",
            "--http",
            &port.to_string(),
            "--http-admin",
        ],
        &[("STREAMHOST_HTTP_TOKEN", "t0ken")],
    );
    let api = eventually(WAIT, "/api/status answers", || {
        let (code, body) = get_with_token(port, "/api/status", "t0ken")?;
        (code == 200 && body["streams"][0].is_object()).then_some(body)
    });
    assert!(undecodable(&api["streams"][0]["dlq"]["newest"][0]), "{api}");
    let (code, list) = get_with_token(port, "/api/dlq?limit=10", "t0ken").unwrap();
    assert_eq!(code, 200, "{list}");
    let records = list["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{list}");
    assert!(
        undecodable(&records[0]) && !undecodable(&records[1]),
        "{list}"
    );
    let state = crate::support::http::first_event(port, "/api/events", "state", |s| {
        s["streams"][0]["dlq"]["length"] == 2
    });
    assert!(
        undecodable(&state["streams"][0]["dlq"]["newest"][0]),
        "{state}"
    );

    // A redrive moves the good record and keeps the malformed one.
    let to = key("ops-undecodable-to");
    let rows = json(
        &redis,
        &["dlq", "redrive", "--stream", &stream, "--to", &to, "--json"],
    );
    let outcome = |id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["outcome"]
            .clone()
    };
    assert_eq!(
        (outcome(&good), outcome(&bad)),
        ("moved".into(), "undecodable".into()),
        "{rows}"
    );
    let left: Vec<String> = redis
        .range_raw(&dlq)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, [bad]);
    assert_eq!(redis.range_raw(&to).len(), 1);
}

#[test]
fn redis_and_the_host_give_the_same_reason_for_a_malformed_packed_record() {
    let redis = RedisServer::start();
    let stream = key("ops-undecodable-reasons");
    let dlq = format!("{stream}:dlq");
    redis.add(&stream, &[("action", "ok")]);
    let malformed: [&[u8]; 9] = [
        b"",
        b"$3\r\nabc\r\n",
        b"*1234567890123456789\r\n",
        b"*3\r\n",
        b"*2\r\n$1\r\nk\r\n:1\r\n",
        b"*4\r\n$1\r\nk\r\n$5\r\nab",
        b"*2\r\n$1\r\nkX\n$0\r\n\r\n",
        b"*2\r\n$1\r\nk\r\n$0\r\n\r\nxy",
        b"*999999999999999998\r\n$0\r\n\r\n",
    ];
    for value in malformed {
        write_record(&redis, &dlq, &stream, "invalid", Ok(value.to_vec()));
    }
    let good = write_record(&redis, &dlq, &stream, "invalid", Ok(packed(&wide(5))));

    // The host decodes the records it lists whole; a dry run asks Redis.
    let listed = json(&redis, &["dlq", "list", "--stream", &stream, "--json"]);
    let checked = json(
        &redis,
        &["dlq", "redrive", "--stream", &stream, "--dry-run", "--json"],
    );
    let (listed, checked) = (listed.as_array().unwrap(), checked.as_array().unwrap());
    assert_eq!((listed.len(), checked.len()), (10, 10));
    for (host, lua) in listed.iter().zip(checked) {
        assert_eq!(host["id"], lua["id"]);
        if host["id"] == good.as_str() {
            assert_eq!(
                (&host["undecodable"], &lua["outcome"]),
                (&Json::Null, &"would-move".into())
            );
            continue;
        }
        let why = host["undecodable"].as_str().expect("undecodable");
        assert_eq!(lua["outcome"], "undecodable", "{lua}");
        assert_eq!(lua["detail"], why, "Redis and the host agree");
    }
}

#[test]
fn status_shows_the_first_16_kib_of_a_reason_and_cuts_a_longer_one() {
    let redis = RedisServer::start();
    let stream = key("ops-reason-cap");
    let dlq = format!("{stream}:dlq");
    redis.add(&stream, &[("action", "ok")]);
    let cap = 16 * 1024;
    for len in [cap, cap + 1] {
        let reason = "r".repeat(len);
        redis.add(
            &dlq,
            &[("kind", "permanent"), ("reason", &reason), ("field:a", "1")],
        );
    }
    let status = json(&redis, &["status", "--stream", &stream, "--json"]);
    let d = &status[0]["dlq"];
    assert_eq!(
        (d["scanned"].as_u64(), &d["kinds_estimated"]),
        (Some(2), &Json::Bool(false))
    );
    let shown: Vec<&str> = d["newest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        shown[1],
        "r".repeat(cap),
        "a reason of 16 KiB is shown whole"
    );
    assert_eq!(
        shown[0],
        format!("{}…", "r".repeat(cap)),
        "a longer one is cut"
    );
    // A listing's JSON reads the records it lists whole.
    let listed = json(&redis, &["dlq", "list", "--stream", &stream, "--json"]);
    assert_eq!(listed[1]["reason"].as_str().unwrap().len(), cap + 1);
}
