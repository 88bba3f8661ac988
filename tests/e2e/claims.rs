//! Claims and trimmed entries: every entry whose payload vanished while it
//! was pending gets exactly one `trimmed` record, whichever path finds it
//! (keep-alive, retry release, handover, recovery, a peer's reaper), and no
//! claim ever takes an entry from a peer that holds it.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, fast, fields_map, key};

const WAIT: Duration = Duration::from_secs(60);

/// `trimmed` records per source id.
fn trimmed_records(redis: &RedisServer, stream: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for (_, f) in redis.range(&format!("{stream}:dlq")) {
        let rec = fields_map(&f);
        assert_eq!(rec["kind"], "trimmed", "{rec:?}");
        *seen.entry(rec["source_id"].to_owned()).or_insert(0) += 1;
    }
    seen
}

fn xdel(redis: &RedisServer, stream: &str, ids: &[&str]) {
    let mut c = redis.conn();
    let n: usize = redis::cmd("XDEL")
        .arg(stream)
        .arg(ids)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, ids.len());
}

#[test]
fn an_entry_trimmed_during_a_long_call_is_recorded_once() {
    let redis = RedisServer::start();
    let stream = key("trim-long-call");
    // The call outlives half of --claim-idle, so keep-alive re-claims the
    // entry while it runs; by then its payload is gone.
    let id = redis.add(
        &stream,
        &[
            ("action", "retryable"),
            ("sleep_ms", "800"),
            ("reason", "slow"),
        ],
    );
    // No reaper sweep for a while: only this host's own claims can find it.
    let _host = Host::misbehave(
        &redis,
        &stream,
        &fast(&["--max-deliveries", "50", "--claim-interval", "20s"]),
    );
    eventually(WAIT, "entry delivered", || {
        (redis.pending(&stream, "g") == 1).then_some(())
    });
    xdel(&redis, &stream, &[&id]);
    eventually(WAIT, "a trimmed record", || {
        (trimmed_records(&redis, &stream).get(&id) == Some(&1)).then_some(())
    });
    redis.wait_until_settled(&stream, "g", WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(trimmed_records(&redis, &stream), HashMap::from([(id, 1)]));
}

#[test]
fn an_entry_trimmed_while_waiting_out_a_retry_backoff_is_recorded_once() {
    let redis = RedisServer::start();
    let stream = key("trim-backoff");
    let id = redis.add(&stream, &[("action", "retryable"), ("reason", "later")]);
    let host = Host::misbehave(
        &redis,
        &stream,
        &fast(&[
            "--retry-backoff",
            "700ms",
            "--max-deliveries",
            "50",
            "--claim-interval",
            "20s",
        ]),
    );
    host.wait_for_log("entry stays pending for retry", WAIT);
    xdel(&redis, &stream, &[&id]);
    eventually(WAIT, "a trimmed record", || {
        (trimmed_records(&redis, &stream).get(&id) == Some(&1)).then_some(())
    });
    redis.wait_until_settled(&stream, "g", WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(trimmed_records(&redis, &stream), HashMap::from([(id, 1)]));
}

#[test]
fn an_entry_trimmed_before_a_handover_is_recorded_once() {
    let redis = RedisServer::start();
    let stream = key("trim-handover");
    let id = redis.add(&stream, &[("action", "sleep"), ("ms", "3000")]);
    let slow = [
        "--claim-idle",
        "20s",
        "--claim-interval",
        "200ms",
        "--handler-timeout",
        "10s",
    ];
    let mut a = Host::misbehave(
        &redis,
        &stream,
        &[
            &slow[..],
            &["--consumer", "a", "--handover", "--shutdown-grace", "100ms"],
        ]
        .concat(),
    );
    eventually(WAIT, "a holds the entry", || {
        (redis.pending(&stream, "g") == 1).then_some(())
    });
    let _b = Host::misbehave(&redis, &stream, &[&slow[..], &["--consumer", "b"]].concat());
    eventually(WAIT, "b registered", || {
        redis
            .consumers(&stream, "g")
            .contains(&"b".to_owned())
            .then_some(())
    });
    xdel(&redis, &stream, &[&id]);
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait_exit(WAIT).code(), Some(0));
    eventually(WAIT, "a trimmed record", || {
        (trimmed_records(&redis, &stream).get(&id) == Some(&1)).then_some(())
    });
    redis.wait_until_settled(&stream, "g", WAIT);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(trimmed_records(&redis, &stream), HashMap::from([(id, 1)]));
}

#[test]
fn trimmed_entries_found_by_racing_hosts_are_recorded_exactly_once() {
    let redis = RedisServer::start();
    let stream = key("trim-race");
    let ids: Vec<String> = (0..300)
        .map(|_| redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]))
        .collect();
    // A crashed consumer `a` left them pending; then their payloads went.
    redis.read_as(&stream, "g", "a", 1000);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    xdel(&redis, &stream, &refs);
    std::thread::sleep(Duration::from_millis(1100));
    // `a` comes back (recovering its own pending list) while two peers'
    // reapers sweep the same idle entries.
    let hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|name| Host::misbehave(&redis, &stream, &fast(&["--consumer", name])))
        .collect();
    redis.wait_until_settled(&stream, "g", WAIT);
    std::thread::sleep(Duration::from_millis(1000));
    let seen = trimmed_records(&redis, &stream);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "recorded more than once: {twice:?}");
    assert_eq!(seen.len(), ids.len(), "every trimmed entry recorded");
    drop(hosts);
}
