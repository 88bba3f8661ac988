//! `host replay`: a window printed without touching any group, and a
//! handler's verdicts on it reported correctly while XINFO GROUPS, the DLQ
//! and the emit streams stay exactly as they were (unless --emit).

use serde_json::Value as Json;

use crate::ops_status::{host, json};
use crate::support::{RedisServer, key, plugin};

fn snapshot(
    redis: &RedisServer,
    stream: &str,
    out: &str,
) -> (redis::Value, redis::Value, usize, usize) {
    let mut c = redis.conn();
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(&mut c)
        .unwrap();
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("g")
        .query(&mut c)
        .unwrap();
    (
        groups,
        pending,
        redis.range(&format!("{stream}:dlq")).len(),
        redis.range(out).len(),
    )
}

#[test]
fn replay_reports_each_outcome_and_changes_nothing() {
    let redis = RedisServer::start();
    let stream = key("ops-replay");
    let out = key("ops-replay-out");
    let ids = [
        redis.add(&stream, &[("action", "ok")]),
        redis.add(&stream, &[("action", "emit"), ("emit_to", &out)]),
        redis.add(
            &stream,
            &[("action", "permanent"), ("reason", "bad amount")],
        ),
        redis.add(&stream, &[("action", "retryable"), ("reason", "db down")]),
        redis.add_raw(&stream, &vec![(b"\xffname".to_vec(), b"v".to_vec())]),
        redis.add(&stream, &[("action", "trap")]),
    ];
    // A group with history and a DLQ record that must stay as they are.
    redis.read_as(&stream, "g", "c", 2);
    redis.ack(&stream, "g", &ids[..1]);
    redis.add(
        &format!("{stream}:dlq"),
        &[("kind", "permanent"), ("reason", "old")],
    );
    let before = snapshot(&redis, &stream, &out);

    let misbehave = plugin("misbehave").display().to_string();
    let report = json(
        &redis,
        &[
            "replay", "--stream", &stream, "--plugin", &misbehave, "--json",
        ],
    );
    let rows = report["entries"].as_array().unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    let want: Vec<(&str, &str)> = ids
        .iter()
        .map(String::as_str)
        .zip(["ack", "ack", "dead-letter", "retry", "dead-letter", "retry"])
        .collect();
    assert_eq!(got, want);
    assert_eq!(rows[1]["emits"][0]["stream"], out.as_str());
    assert_eq!(rows[1]["emits"][0]["fields"][0]["value"], ids[1].as_str());
    assert_eq!(rows[0]["emits"], Json::Array(vec![]));
    assert_eq!(
        (rows[2]["kind"].as_str(), rows[2]["reason"].as_str()),
        (Some("permanent"), Some("bad amount"))
    );
    assert_eq!(rows[3]["reason"], "db down");
    assert_eq!(rows[4]["kind"], "invalid");
    assert!(
        rows[5]["reason"].as_str().unwrap().contains("trap"),
        "{}",
        rows[5]
    );
    let totals = &report["totals"];
    assert_eq!(
        (
            totals["ack"].as_u64(),
            totals["retry"].as_u64(),
            totals["dead_letter"].as_u64(),
            totals["emits"].as_u64()
        ),
        (Some(2), Some(2), Some(2), Some(1))
    );
    assert_eq!(
        snapshot(&redis, &stream, &out),
        before,
        "groups, pending list, DLQ and emit stream unchanged"
    );

    // A window, without a plugin: printed as it is.
    let (code, text, err) = host(
        &redis,
        &[
            "replay", "--stream", &stream, "--from", &ids[2], "--count", "2",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains(&ids[2])
            && text.contains(&ids[3])
            && !text.contains(&ids[4])
            && text.contains("reason=bad amount"),
        "{text}"
    );

    // --emit appends the emits, and still acks and dead-letters nothing.
    let (code, text, err) = host(
        &redis,
        &[
            "replay", "--stream", &stream, "--plugin", &misbehave, "--emit",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("2 ack, 2 retry, 2 dead-letter; 1 emits (1 appended)"),
        "{text}"
    );
    let after = snapshot(&redis, &stream, &out);
    assert_eq!(
        (&after.0, &after.1, after.2),
        (&before.0, &before.1, before.2)
    );
    assert_eq!(after.3, 1);

    // A missing plugin is refused clearly.
    let (code, _, err) = host(
        &redis,
        &[
            "replay",
            "--stream",
            &stream,
            "--plugin",
            "/nonexistent.wasm",
        ],
    );
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("cannot load plugin /nonexistent.wasm"),
        "{err}"
    );
}
