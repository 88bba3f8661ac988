//! Limits as obeyed/violated pairs against the misbehaving plugin: a trap, a
//! runaway loop or a memory bomb costs one retry, never the host.

use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, fast, key};

const WAIT: Duration = Duration::from_secs(30);

fn emitted_sources(redis: &RedisServer, stream: &str) -> Vec<(String, String)> {
    redis
        .range(stream)
        .into_iter()
        .map(|(_, f)| {
            let get = |k: &str| {
                f.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get("source_id"), get("calls"))
        })
        .collect()
}

#[test]
fn trap_timeout_and_memory_cap_leave_the_host_healthy_and_the_entry_pending() {
    let redis = RedisServer::start();
    let stream = key("limits");
    let trap = redis.add(&stream, &[("action", "trap")]);
    let looping = redis.add(&stream, &[("action", "loop")]);
    let bomb = redis.add(&stream, &[("action", "oom")]);
    // Obeyed counterparts: within the deadline, within the memory cap.
    let slow_ok = redis.add(&stream, &[("action", "sleep"), ("ms", "100")]);
    let alloc_ok = redis.add(&stream, &[("action", "alloc"), ("mb", "8")]);
    let after = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let host = Host::misbehave(
        &redis,
        &stream,
        &[
            "--handler-timeout",
            "500ms",
            "--max-memory",
            "24MiB",
            "--concurrency",
            "1",
        ],
    );
    eventually(WAIT, "entry after the misbehaving ones handled", || {
        emitted_sources(&redis, "out")
            .iter()
            .any(|(id, _)| *id == after)
            .then_some(())
    });
    let pending = redis.pending_ids(&stream, "g");
    let mut expected = vec![trap.clone(), looping.clone(), bomb.clone()];
    expected.sort();
    assert_eq!(
        pending, expected,
        "violations stay pending; obeyed entries ({slow_ok}, {alloc_ok}) are acked"
    );
    host.wait_for_log("handler exceeded its deadline of 500ms", WAIT);
    host.wait_for_log("memory limit of 24MiB exceeded", WAIT);
    host.wait_for_log(
        "plugin trapped: wasm trap: wasm `unreachable` instruction executed",
        WAIT,
    );
    let log = host.log();
    for id in [&trap, &looping, &bomb] {
        assert!(
            log.lines()
                .any(|l| l.contains(id.as_str()) && l.contains("entry stays pending for retry")),
            "no retry line for {id}:\n{log}"
        );
    }
    assert!(
        redis.range(&format!("{stream}:dlq")).is_empty(),
        "a trap is retryable, never a dead letter by itself"
    );
}

#[test]
fn a_trapped_instance_is_replaced_and_a_healthy_one_is_kept_warm() {
    let redis = RedisServer::start();
    let stream = key("instances");
    let a = redis.add(&stream, &[("action", "count")]);
    let b = redis.add(&stream, &[("action", "count")]);
    redis.add(&stream, &[("action", "trap")]);
    let c = redis.add(&stream, &[("action", "count")]);
    let _host = Host::misbehave(
        &redis,
        &stream,
        &["--concurrency", "1", "--plugin-config", "unused=1"],
    );
    let out = eventually(WAIT, "three count emits", || {
        let r = emitted_sources(&redis, "misbehave:out");
        (r.len() == 3).then_some(r)
    });
    assert_eq!(
        out,
        [(a, "1".into()), (b, "2".into()), (c, "1".into())],
        "state persists across calls until a trap discards the instance"
    );
}

#[test]
fn fresh_instance_gives_every_entry_a_new_instance() {
    let redis = RedisServer::start();
    let stream = key("fresh");
    let ids: Vec<String> = (0..4)
        .map(|_| redis.add(&stream, &[("action", "count")]))
        .collect();
    let _host = Host::misbehave(&redis, &stream, &["--concurrency", "1", "--fresh-instance"]);
    let out = eventually(WAIT, "four count emits", || {
        let r = emitted_sources(&redis, "misbehave:out");
        (r.len() == 4).then_some(r)
    });
    let expected: Vec<(String, String)> = ids.into_iter().map(|id| (id, "1".into())).collect();
    assert_eq!(out, expected, "no guest state survives between entries");
}

/// The multi-memory fixture with each of its two memories `mib` MiB large.
fn two_memories(dir: &std::path::Path, mib: u32) -> std::path::PathBuf {
    let wat = include_str!("../fixtures/multi-memory.wat")
        .replace("MEMORY_PAGES", &(mib * 16).to_string());
    let path = dir.join("two-memories.wasm");
    std::fs::write(
        &path,
        wat::parse_str(&wat).expect("the fixture is valid WAT"),
    )
    .unwrap();
    path
}

#[test]
fn the_memory_cap_covers_all_of_an_instances_memories_together() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Two memories of 20 MiB: each fits a 32 MiB cap, both together do not.
    let plugin = two_memories(dir.path(), 20);
    let stream = key("two-memories");
    let id = redis.add(&stream, &[("n", "1")]);
    let over = Host::run(
        &redis.url(),
        &stream,
        "g",
        &plugin,
        &fast(&["--max-memory", "32MiB", "--max-deliveries", "1"]),
    );
    let dlq = redis.wait_for_len(&format!("{stream}:dlq"), 1);
    let rec = crate::support::fields_map(&dlq[0].1);
    assert_eq!(rec["source_id"], id);
    assert!(
        rec["reason"].contains("memory limit of 32MiB exceeded"),
        "{rec:?}"
    );
    drop(over);
    // Obeyed: with room for both, the same component acks.
    let stream = key("two-memories-fit");
    redis.add(&stream, &[("n", "1")]);
    let _fits = Host::run(
        &redis.url(),
        &stream,
        "g",
        &plugin,
        &["--max-memory", "48MiB"],
    );
    eventually(WAIT, "acked", || {
        (redis.entries_read(&stream, "g") == Some(1) && redis.pending(&stream, "g") == 0)
            .then_some(())
    });
    assert!(redis.range(&format!("{stream}:dlq")).is_empty());
}
