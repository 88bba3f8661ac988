//! Supervision, with faults injected into the real binary (debug builds read
//! `STREAMHOST_FAULT`): a task that dies drains the pipeline and exits
//! non-zero naming it; a host panic while handling an entry costs that entry
//! a retry and nothing else.

use std::time::{Duration, Instant};

use crate::support::{Host, RedisServer, fast, fields_map, key, plugin, scripted_plugin};

const WAIT: Duration = Duration::from_secs(30);

/// `task` of the only pipeline panics half a second after it starts, with
/// ten entries of 100 ms each read and in hand.
fn dying_task(task: &str) {
    let redis = RedisServer::start();
    let stream = key(&format!("dies-{task}"));
    let ids: Vec<String> = (0..10)
        .map(|_| {
            redis.add(
                &stream,
                &[("action", "emit"), ("emit_to", "out"), ("sleep_ms", "100")],
            )
        })
        .collect();
    let fault = format!("panic:{task}");
    let mut host = Host::misbehave_env(
        &redis,
        &stream,
        &["--concurrency", "1", "--shutdown-grace", "5s"],
        // A full backtrace makes the panic hook slow, as in CI: the panic
        // must still be what is reported, not a task that ended because of it.
        &[
            ("STREAMHOST_FAULT", fault.as_str()),
            ("RUST_BACKTRACE", "full"),
        ],
    );
    let started = Instant::now();
    let status = host.wait_exit(WAIT);
    assert_eq!(status.code(), Some(70), "{}", host.log());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the drain is bounded by the grace period"
    );
    let log = host.log();
    assert!(
        log.contains(&format!(
            "the {task} task of pipeline \"g\" panicked: injected fault: panic:{task}"
        )),
        "{log}"
    );
    let pending = redis.pending_ids(&stream, "g");
    let emitted: Vec<String> = redis
        .range("out")
        .iter()
        .map(|(_, f)| fields_map(f)["source_id"].to_owned())
        .collect();
    let read = redis.entries_read(&stream, "g").unwrap_or(0) as usize;
    assert_eq!(read, ids.len(), "all ten were read before the fault");
    // Each emitted at most once.
    for id in &ids {
        assert!(
            emitted.iter().filter(|e| *e == id).count() <= 1,
            "{id} emitted twice"
        );
    }
    if task == "committer" {
        // Nothing can be acked any more: what was not yet committed stays
        // pending for the next owner, and was in hand when it died.
        assert!(
            !pending.is_empty(),
            "work was in flight when the committer died"
        );
        for id in &ids {
            assert!(
                pending.contains(id) ^ emitted.contains(id),
                "{id} neither acked with its emit nor pending"
            );
        }
    } else {
        // The drain finished what was in hand and acked it before the
        // exit: every entry read is acked with its emit.
        assert!(
            pending.is_empty() && ids.iter().all(|id| emitted.contains(id)),
            "the drain left {pending:?} pending; emitted {} of {}",
            emitted.len(),
            ids.len()
        );
    }
}

#[test]
fn a_dead_committer_drains_the_pipeline_and_exits_non_zero() {
    dying_task("committer");
}

#[test]
fn a_dead_reader_drains_the_pipeline_and_exits_non_zero() {
    dying_task("reader");
}

#[test]
fn a_dead_holder_drains_the_pipeline_and_exits_non_zero() {
    dying_task("holder");
}

#[test]
fn a_host_panic_while_handling_an_entry_costs_that_entry_a_retry() {
    let redis = RedisServer::start();
    let stream = key("worker-panic");
    let first = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let second = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let mut host = Host::misbehave_env(
        &redis,
        &stream,
        &fast(&["--concurrency", "1"]),
        &[("STREAMHOST_FAULT", "worker-panic")],
    );
    let out = redis.wait_for_len("out", 2);
    let delivery = |id: &str| {
        out.iter()
            .map(|(_, f)| fields_map(f))
            .find(|f| f["source_id"] == id)
            .map(|f| f["delivery"].to_owned())
            .unwrap()
    };
    assert_eq!(delivery(&first), "2", "retried after the panic");
    assert_eq!(delivery(&second), "1", "its neighbour never noticed");
    redis.wait_until_settled(&stream, "g", WAIT);
    host.wait_for_log("the host panicked handling an entry", WAIT);
    // The process lives on and keeps handling: a later entry goes through
    // on its first delivery.
    assert!(host.is_running(), "the panic ended the process");
    let third = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let out = redis.wait_for_len("out", 3);
    let later = out
        .iter()
        .map(|(_, f)| fields_map(f))
        .find(|f| f["source_id"] == third)
        .map(|f| f["delivery"].to_owned());
    assert_eq!(later.as_deref(), Some("1"), "handled after the panic");
    assert!(host.is_running());
}

/// Shutdown is bounded by `--shutdown-grace` plus a small constant (5 s of
/// drain, under a second to leave) even while a plugin compiles: a 15 MB
/// Python component takes seconds to compile, and SIGTERM arrives mid-way,
/// first during the start-up compile, then during a hot swap's.
#[test]
fn a_signal_during_a_plugin_compile_stops_within_the_bound() {
    let redis = RedisServer::start();
    let stream = key("compile-signal");
    let big = scripted_plugin("python-fraud", "fraud");
    let bound = Duration::from_secs(1 + 5 + 1);
    let grace = ["--shutdown-grace", "1s", "--no-cache"];

    // At start-up.
    let host = Host::run(&redis.url(), &stream, "g", &big, &grace);
    std::thread::sleep(Duration::from_millis(300));
    stops_within(host, bound, " starting ");

    // During a hot swap.
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.wasm");
    std::fs::copy(plugin("noop"), &live).unwrap();
    let host = Host::run(&redis.url(), &stream, "g", &live, &grace);
    host.wait_for_log("starting", WAIT);
    std::fs::copy(&big, dir.path().join("next.wasm")).unwrap();
    std::fs::rename(dir.path().join("next.wasm"), &live).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    stops_within(host, bound, "plugin swapped");
}

/// SIGTERM ends `host` cleanly within `bound`, before the compile that
/// would have logged `not_yet` finished.
fn stops_within(mut host: Host, bound: Duration, not_yet: &str) {
    let signalled = Instant::now();
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
    let took = signalled.elapsed();
    assert!(took < bound, "took {took:?}");
    assert!(
        !host.log().contains(not_yet),
        "the compile was still running"
    );
}
