//! Dead letters that cannot move or cannot be read back stay where they
//! are and are shown for what they are: a redrive onto a key that is not a
//! stream keeps the record and the key; a malformed `packed_fields` never
//! fails a listing on any face, is marked undecodable with the reason
//! (worded alike by Redis and the host), and is kept by a redrive; what a
//! header carries of a long reason is capped.

use std::time::Duration;

use serde_json::Value as Json;

use crate::ops_dlq::{Raw, wide};
use crate::ops_status::{host, json};
use crate::support::{Host, RedisServer, eventually, key};

const WAIT: Duration = Duration::from_secs(60);

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
