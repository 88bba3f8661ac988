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

/// Waits for `id`'s `trimmed` record, then checks that it stays the only
/// record once everything settled.
fn assert_recorded_once(redis: &RedisServer, stream: &str, id: &str) {
    eventually(WAIT, "a trimmed record", || {
        (trimmed_records(redis, stream).get(id) == Some(&1)).then_some(())
    });
    redis.wait_until_settled(stream, "g", WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        trimmed_records(redis, stream),
        HashMap::from([(id.to_owned(), 1)])
    );
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
    assert_recorded_once(&redis, &stream, &id);
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
    assert_recorded_once(&redis, &stream, &id);
}

#[test]
fn an_entry_trimmed_before_a_handover_is_recorded_once() {
    let redis = RedisServer::start();
    let stream = key("trim-handover");
    let id = redis.add(&stream, &[("action", "sleep"), ("ms", "3000")]);
    // b sweeps rarely: the entry must be found by a's handover itself.
    let slow = [
        "--claim-idle",
        "20s",
        "--claim-interval",
        "20s",
        "--handler-timeout",
        "10s",
    ];
    let (mut a, _b) = crate::support::host::handover_pair(&redis, &stream, &slow);
    xdel(&redis, &stream, &[&id]);
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait_exit(WAIT).code(), Some(0));
    assert_recorded_once(&redis, &stream, &id);
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

fn group_ref(stream: &str, consumer: &str) -> streamhost::stream::GroupRef {
    streamhost::stream::GroupRef {
        stream: stream.to_owned(),
        group: "g".to_owned(),
        consumer: consumer.to_owned(),
        fence: None,
    }
}

fn dead_letters(dlq: &str) -> streamhost::stream::DeadLetters<'_> {
    streamhost::stream::DeadLetters {
        dlq,
        maxlen: None,
        source: streamhost::stream::dlq::DeadLetterSource {
            stream: "s",
            group: "g",
            consumer: "a",
            plugin: "p",
            plugin_version: "v",
        },
    }
}

/// (owner, idle ms, deliveries) of a pending entry.
fn pending_row(redis: &RedisServer, stream: &str, id: &str) -> (String, u64, u32) {
    let mut c = redis.conn();
    let rows: Vec<(String, String, u64, u32)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg("g")
        .arg(id)
        .arg(id)
        .arg(1)
        .query(&mut c)
        .unwrap();
    let (_, owner, idle, count) = rows.into_iter().next().expect("still pending");
    (owner, idle, count)
}

#[test]
fn a_claim_never_takes_an_entry_a_peer_holds_nor_a_replaced_delivery() {
    use streamhost::stream::claims::{ClaimSpec, claim};
    let redis = RedisServer::start();
    let stream = key("claim-fence");
    let id = redis.add(&stream, &[("n", "1")]);
    redis.read_as(&stream, "g", "a", 10);
    // A peer's reaper takes it (a's later, stale view: still a's, count 1).
    let mut c = redis.conn();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg("g")
        .arg("b")
        .arg(0)
        .arg(&id)
        .query(&mut c)
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    rt.block_on(async {
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let a = group_ref(&stream, "a");
        // a restarts and recovers "its own" entries: not this one any more.
        let recovered = claim(
            &mut con,
            &a,
            ClaimSpec::recover("a"),
            dead_letters("dlq"),
            &[(id.as_str(), Some(1))],
        )
        .await
        .unwrap();
        assert!(recovered.claimed.is_empty(), "{recovered:?}");
        assert_eq!(pending_row(&redis, &stream, &id).0, "b");
        // b releases the delivery it had (count 2): done. A stale release of
        // delivery 1 must not touch it again.
        let b = group_ref(&stream, "b");
        let stale = claim(
            &mut con,
            &b,
            ClaimSpec::release("b", "b", Duration::from_secs(60)),
            dead_letters("dlq"),
            &[(id.as_str(), Some(1))],
        )
        .await
        .unwrap();
        assert!(stale.claimed.is_empty());
        assert!(
            pending_row(&redis, &stream, &id).1 < 60_000,
            "idle untouched"
        );
        let fresh = claim(
            &mut con,
            &b,
            ClaimSpec::release("b", "b", Duration::from_secs(60)),
            dead_letters("dlq"),
            &[(id.as_str(), Some(2))],
        )
        .await
        .unwrap();
        assert_eq!(fresh.claimed, [(id.clone(), 2)]);
        assert!(pending_row(&redis, &stream, &id).1 >= 60_000, "released");
        // A reaper claim counts a delivery, durably.
        let reaped = claim(
            &mut con,
            &a,
            ClaimSpec::reap("a", Duration::from_secs(30)),
            dead_letters("dlq"),
            &[(id.as_str(), None)],
        )
        .await
        .unwrap();
        assert_eq!(reaped.claimed, [(id.clone(), 3)]);
        // (Owner and count only: two reads of the idle time may straddle a
        // millisecond.)
        let (owner, _, deliveries) = pending_row(&redis, &stream, &id);
        assert_eq!((owner.as_str(), deliveries), ("a", 3));
    });
    assert!(redis.range("dlq").is_empty());
}

#[test]
fn one_failed_keep_alive_round_does_not_let_a_peer_steal_work_in_progress() {
    let redis = RedisServer::start();
    let mut admin = redis.conn();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "ua", "on", ">pw", "~*", "&*", "+@all"])
        .query(&mut admin)
        .unwrap();
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    let url = format!("redis://ua:pw@127.0.0.1:{port}");
    let stream = key("keepalive-fails");
    // One worker: the second entry waits in the window while the first
    // runs, so it is held for 3 s in all, past --claim-idle.
    let first = redis.add(
        &stream,
        &[("action", "emit"), ("emit_to", "out"), ("sleep_ms", "1500")],
    );
    let long = redis.add(
        &stream,
        &[("action", "emit"), ("emit_to", "out"), ("sleep_ms", "1500")],
    );
    // --claim-idle 2s: keep-alive renews entries held for 1s, every 250ms.
    let flags = [
        "--claim-idle",
        "2s",
        "--claim-interval",
        "100ms",
        "--handler-timeout",
        "1900ms",
        "--concurrency",
        "1",
    ];
    let _a = Host::run(
        &url,
        &stream,
        "g",
        &crate::support::plugin("misbehave"),
        &[&flags[..], &["--consumer", "a"]].concat(),
    );
    eventually(WAIT, "a holds the entries", || {
        (redis.pending(&stream, "g") == 2).then_some(())
    });
    let held = std::time::Instant::now();
    let _b = Host::misbehave(
        &redis,
        &stream,
        &[&flags[..], &["--consumer", "b"]].concat(),
    );
    // a's first renewal, around 1s in, fails: no scripts for a meanwhile.
    std::thread::sleep(Duration::from_millis(800).saturating_sub(held.elapsed()));
    let mut acl = |rule: &str| {
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", "ua", rule])
            .query(&mut admin)
            .unwrap();
    };
    acl("-@scripting");
    std::thread::sleep(Duration::from_millis(1400).saturating_sub(held.elapsed()));
    acl("+@scripting");
    redis.wait_for_len("out", 2);
    redis.wait_until_settled(&stream, "g", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let out: Vec<(String, String)> = redis
        .range("out")
        .iter()
        .map(|(_, f)| {
            let f = fields_map(f);
            (f["source_id"].to_owned(), f["delivery"].to_owned())
        })
        .collect();
    assert_eq!(
        out,
        [(first, "1".to_owned()), (long, "1".to_owned())],
        "each handled once, by a: b never took one"
    );
    // And a's scripts were refused meanwhile (Redis's own record of it):
    // the window did cost it a keep-alive round.
    let log: Vec<HashMap<String, redis::Value>> =
        redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    let text = |v: Option<&redis::Value>| match v {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    };
    let refused = log
        .iter()
        .filter(|e| text(e.get("username")) == "ua" && text(e.get("object")).starts_with("eval"))
        .count();
    assert!(refused > 0, "no script of a was refused: {log:?}");
}
