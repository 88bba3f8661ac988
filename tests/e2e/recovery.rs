//! Start-up recovery of this consumer's own pending entries.

use std::time::Duration;

use crate::support::{
    Host, LossyProxy, RedisServer, counting_claim, eventually, fast, key, plugin,
};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn own_pending_entries_are_recovered_on_start_with_durable_delivery_counts() {
    let mut redis = RedisServer::start();
    let stream = key("recover");
    let a = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let gone = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let b = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let stuck = redis.add(&stream, &[("action", "retryable"), ("reason", "not yet")]);
    redis.read_as(&stream, "g", "worker-1", 1000); // a crashed previous run
    let mut c = redis.conn();
    let _: i64 = redis::cmd("XDEL")
        .arg(&stream)
        .arg(&gone)
        .query(&mut c)
        .unwrap();
    // The pending list, its counts included, survives a restart (AOF).
    redis.restart();
    let mut host = Host::misbehave(
        &redis,
        &stream,
        &["--consumer", "worker-1", "--retry-backoff", "5m"],
    );
    let out = redis.wait_for_len("out", 2);
    let mut handled: Vec<(String, String)> = out
        .iter()
        .map(|(_, fields)| {
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get("source_id"), get("delivery"))
        })
        .collect();
    handled.sort();
    // The second delivery, counted by the claim (durably) rather than by re-reading the PEL.
    assert_eq!(
        handled,
        [(a.clone(), "2".to_owned()), (b.clone(), "2".to_owned())]
    );
    let dlq = eventually(WAIT, "trimmed entry dead-lettered", || {
        let r = redis.range(&format!("{stream}:dlq"));
        (!r.is_empty()).then_some(r)
    });
    let rec: std::collections::HashMap<_, _> = dlq[0].1.iter().cloned().collect();
    assert_eq!(rec["kind"], "trimmed");
    assert_eq!(rec["source_id"], gone);
    assert!(
        !rec.keys().any(|k| k.starts_with("field:")),
        "no payload to keep"
    );
    eventually(WAIT, "only the failing entry left pending", || {
        (redis.pending_ids(&stream, "g") == [stuck.clone()]).then_some(())
    });
    host.wait_for_log("recovered this consumer's pending entries", WAIT);
    // The count the recovery raised is in Redis's durable state: it is
    // still there after the host dies and Redis restarts.
    host.signal(libc::SIGKILL);
    host.wait_exit(WAIT);
    redis.restart();
    let mut c = redis.conn();
    let rows: Vec<(String, String, u64, u32)> = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("g")
        .arg("-")
        .arg("+")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].0.as_str(), rows[0].3), (stuck.as_str(), 2));
}

#[test]
fn recovered_entries_over_max_deliveries_are_dead_lettered_without_another_call() {
    let redis = RedisServer::start();
    let stream = key("tired");
    let id = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    redis.read_as(&stream, "g", "w", 1000); // a crashed previous run
    let mut c = redis.conn();
    // Two more deliveries, as XCLAIM would have counted them.
    for _ in 0..2 {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&stream)
            .arg("g")
            .arg("w")
            .arg(0)
            .arg(&id)
            .query(&mut c)
            .unwrap();
    }
    let _host = Host::misbehave(
        &redis,
        &stream,
        &["--consumer", "w", "--max-deliveries", "3"],
    );
    let dlq = eventually(WAIT, "dead-lettered", || {
        let r = redis.range(&format!("{stream}:dlq"));
        (!r.is_empty()).then_some(r)
    });
    let rec: std::collections::HashMap<_, _> = dlq[0].1.iter().cloned().collect();
    assert_eq!(rec["kind"], "max-deliveries");
    assert_eq!(
        rec["deliveries"], "3",
        "deliveries made, not counting the claim that found it exhausted"
    );
    assert_eq!(rec["reason"], "delivered 3 times without success");
    assert_eq!(rec["field:action"], "emit");
    assert!(
        redis.range("out").is_empty(),
        "the handler was not called a fourth time"
    );
    assert_eq!(redis.pending(&stream, "g"), 0);
}

/// Start-up recovery whose claim reply is lost (the claim took effect): the
/// repeated recovery must not count a second delivery for the same call.
#[test]
fn a_recovery_claim_whose_reply_is_lost_costs_no_delivery() {
    let redis = RedisServer::start();
    let proxy = LossyProxy::start(&redis);
    let stream = key("recover-lost");
    let pill = redis.add(&stream, &[("action", "retryable"), ("reason", "not yet")]);
    redis.read_as(&stream, "g", "worker-1", 10); // a crashed previous run: delivery 1
    proxy.lose_reply_once(counting_claim(&redis, "worker-1", &pill));
    let host = Host::run(
        &proxy.url(),
        &stream,
        "g",
        &plugin("misbehave"),
        &fast(&["--consumer", "worker-1", "--max-deliveries", "3"]),
    );
    let dlq = redis.wait_for_len(&format!("{stream}:dlq"), 1);
    assert_eq!(proxy.lost(), 1, "recovery's claim went through the proxy");
    let rec: std::collections::HashMap<_, _> = dlq[0].1.iter().cloned().collect();
    assert_eq!(rec["deliveries"], "3");
    // Deliveries 2 and 3 are handler calls; the first was the crashed run's.
    assert_eq!(
        host.failed_calls(&pill),
        2,
        "one handler call per delivery counted:\n{}",
        host.log()
    );
    assert_eq!(redis.pending(&stream, "g"), 0);
}
