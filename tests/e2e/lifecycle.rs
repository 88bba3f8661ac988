//! Shutdown and Redis outages: drain cleanly, exit 0, lose nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, key, plugin};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn sigterm_finishes_in_flight_work_flushes_acks_and_exits_zero() {
    let redis = RedisServer::start();
    let stream = key("drain");
    for _ in 0..40 {
        redis.add(&stream, &[("action", "sleep"), ("ms", "100")]);
    }
    let mut host = Host::misbehave(&redis, &stream, &["--concurrency", "2", "--batch", "10"]);
    eventually(WAIT, "some entries handled", || {
        (redis.entries_read(&stream, "g").unwrap_or(0) >= 10).then_some(())
    });
    host.signal(libc::SIGTERM);
    let status = host.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "log:\n{}", host.log());
    assert_eq!(
        redis.pending(&stream, "g"),
        0,
        "everything read before SIGTERM was finished and acked:\n{}",
        host.log()
    );
    let read = redis.entries_read(&stream, "g").unwrap();
    assert!(read < 40, "reading stopped at the signal (read {read})");
    assert!(host.log().contains("abandoned=false"));
    assert!(
        redis.consumers(&stream, "g").is_empty(),
        "a consumer with nothing pending deletes itself"
    );
}

#[test]
fn shutdown_grace_bounds_the_drain_and_leaves_unfinished_entries_pending() {
    let redis = RedisServer::start();
    let stream = key("grace");
    let stuck = redis.add(&stream, &[("action", "sleep"), ("ms", "3000")]);
    let mut host = Host::misbehave(
        &redis,
        &stream,
        &["--shutdown-grace", "300ms", "--handler-timeout", "10s"],
    );
    eventually(WAIT, "entry delivered", || {
        (redis.pending(&stream, "g") == 1).then_some(())
    });
    host.signal(libc::SIGTERM);
    let start = std::time::Instant::now();
    let status = host.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "exited after the grace period, not after the handler"
    );
    assert_eq!(redis.pending_ids(&stream, "g"), [stuck]);
    assert!(host.log().contains("abandoning unfinished entries"));
}

#[test]
fn redis_killed_and_restarted_mid_run_loses_nothing_and_emits_nothing_twice() {
    let mut redis = RedisServer::start();
    let stream = key("outage");
    let url = redis.url();
    // A producer that keeps writing through the outage, retrying failed XADDs.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        let (url, stream) = (url.clone(), stream.clone());
        std::thread::spawn(move || {
            let mut produced = 0u32;
            while !stop.load(Ordering::Relaxed) && produced < 3000 {
                let ok = redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                    .and_then(|mut c| {
                        redis::cmd("XADD")
                            .arg(&stream)
                            .arg("*")
                            .arg("action")
                            .arg("emit")
                            .arg("emit_to")
                            .arg("out")
                            .query::<String>(&mut c)
                    })
                    .is_ok();
                if ok {
                    produced += 1;
                }
                std::thread::sleep(Duration::from_millis(if ok { 1 } else { 50 }));
            }
        })
    };
    let host = Host::run(&url, &stream, "g", &plugin("misbehave"), &["--batch", "50"]);
    eventually(WAIT, "processing under way", || {
        (redis.range("out").len() > 300).then_some(())
    });
    redis.kill();
    std::thread::sleep(Duration::from_millis(1500));
    redis.restart();
    host.wait_for_log("redis connection lost", WAIT);
    host.wait_for_log("redis connection restored", WAIT);
    eventually(WAIT, "more entries after the restart", || {
        (redis.range(&stream).len() > 1500).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let ids: BTreeSet<String> = redis.range(&stream).into_iter().map(|(id, _)| id).collect();
    eventually(WAIT, "every entry handled", || {
        (redis.entries_read(&stream, "g") == Some(ids.len() as u64)
            && redis.pending(&stream, "g") == 0)
            .then_some(())
    });
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, fields) in redis.range("out") {
        let src = fields
            .iter()
            .find(|(k, _)| k == "source_id")
            .map(|(_, v)| v.clone())
            .unwrap();
        *seen.entry(src).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "emitted twice: {twice:?}");
    let emitted: BTreeSet<String> = seen.into_keys().collect();
    assert_eq!(emitted, ids, "every entry acked with its emit, none lost");
    assert_eq!(
        host.count_log("redis connection lost"),
        1,
        "one line per state change:\n{}",
        host.log()
    );
}

#[test]
fn a_host_started_while_redis_is_down_waits_and_then_serves() {
    let mut redis = RedisServer::start();
    let stream = key("late");
    let id = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    redis.kill();
    let mut host = Host::misbehave(&redis, &stream, &[]);
    host.wait_for_log("redis connection lost", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    redis.restart();
    let out = eventually(WAIT, "entry handled once Redis is back", || {
        let r = redis.range("out");
        (!r.is_empty()).then_some(r)
    });
    assert!(out[0].1.iter().any(|(k, v)| k == "source_id" && *v == id));
    host.wait_for_log("redis connection restored", WAIT);
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn entries_waiting_out_a_retry_backoff_count_against_max_in_flight() {
    let redis = RedisServer::start();
    let stream = key("backpressure");
    for _ in 0..50 {
        redis.add(
            &stream,
            &[("action", "retryable"), ("reason", "downstream down")],
        );
    }
    let host = Host::misbehave(
        &redis,
        &stream,
        &[
            "--batch",
            "10",
            "--max-in-flight",
            "10",
            "--retry-backoff",
            "5m",
            "--max-deliveries",
            "100",
        ],
    );
    eventually(WAIT, "the first window failed", || {
        (host.count_log("entry stays pending for retry") >= 10).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        redis.entries_read(&stream, "g"),
        Some(10),
        "no more entries read while ten wait out their backoff"
    );
    assert_eq!(redis.pending(&stream, "g"), 10);
}
