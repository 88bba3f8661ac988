//! Hostile handler calls: whatever a call does — loop in wasm, block in a
//! host call, panic the host — it ends within its deadline and costs at most
//! a retry, never a worker, the pipeline or a neighbouring entry.

use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, fast, fields_map, key};

const WAIT: Duration = Duration::from_secs(30);

/// Milliseconds of a stream id (`<ms>-<seq>`): when Redis appended it.
fn id_ms(id: &str) -> u64 {
    id.split('-').next().unwrap().parse().unwrap()
}

/// The id of the entry `out` holds for `source`, once it is there.
fn emitted_for(redis: &RedisServer, out: &str, source: &str) -> String {
    eventually(WAIT, &format!("an emit for {source} in {out}"), || {
        redis
            .range(out)
            .into_iter()
            .find(|(_, f)| fields_map(f).get("source_id") == Some(&source))
            .map(|(id, _)| id)
    })
}

#[test]
fn a_call_blocked_in_a_host_sleep_ends_at_its_deadline() {
    let redis = RedisServer::start();
    let stream = key("wasi-sleep");
    // Violated: a minute of WASI sleep (time spent in host code, where epoch
    // interruption never fires) under a 500ms deadline. Obeyed: 100ms.
    // A marker first: its emit's time (Redis's clock) is when the only
    // worker turned to the sleeper — after start-up and the plugin's compile.
    let marker = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let sleeper = redis.add(&stream, &[("action", "wasi-sleep"), ("ms", "60000")]);
    let napper = redis.add(
        &stream,
        &[
            ("action", "emit"),
            ("emit_to", "out"),
            ("wasi_sleep_ms", "100"),
        ],
    );
    let host = Host::misbehave(
        &redis,
        &stream,
        &fast(&[
            "--handler-timeout",
            "500ms",
            "--claim-idle",
            "2s",
            "--concurrency",
            "1",
            "--max-deliveries",
            "1",
        ]),
    );
    // One worker: the napper waits behind the sleeper, so its emit's time
    // (Redis's clock) tells when the sleeper's call ended.
    let napped = emitted_for(&redis, "out", &napper);
    let started = emitted_for(&redis, "out", &marker);
    let took = id_ms(&napped) - id_ms(&started);
    assert!(
        took < 500 + 100 + 1500,
        "the sleeper held the only worker for {took} ms, past its 500ms deadline"
    );
    let dlq = redis.wait_for_len(&format!("{stream}:dlq"), 1);
    let rec = fields_map(&dlq[0].1);
    assert_eq!(rec["source_id"], sleeper);
    assert_eq!(rec["kind"], "max-deliveries");
    assert!(
        rec["reason"].contains("exceeded its deadline of 500ms"),
        "{rec:?}"
    );
    redis.wait_until_settled(&stream, "g", WAIT);
    drop(host);
}

#[test]
fn every_worker_asleep_in_host_calls_does_not_stop_the_pipeline() {
    let redis = RedisServer::start();
    let stream = key("all-asleep");
    let sleepers: Vec<String> = (0..4)
        .map(|_| redis.add(&stream, &[("action", "wasi-sleep"), ("ms", "60000")]))
        .collect();
    let ordinary: Vec<String> = (0..20)
        .map(|_| redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]))
        .collect();
    let _host = Host::misbehave(
        &redis,
        &stream,
        &fast(&[
            "--handler-timeout",
            "300ms",
            "--claim-idle",
            "2s",
            "--concurrency",
            "2",
            "--max-deliveries",
            "2",
        ]),
    );
    let out = redis.wait_for_len("out", ordinary.len());
    let last = out.iter().map(|(id, _)| id_ms(id)).max().unwrap();
    assert!(
        last - id_ms(&ordinary[0]) < 10_000,
        "ordinary entries waited {} ms behind sleeping workers",
        last - id_ms(&ordinary[0])
    );
    let dlq = redis.wait_for_len(&format!("{stream}:dlq"), sleepers.len());
    for (_, f) in &dlq {
        let rec = fields_map(f);
        assert!(sleepers.contains(&rec["source_id"].to_owned()));
        assert!(rec["reason"].contains("deadline of 300ms"), "{rec:?}");
    }
}

#[test]
fn a_host_sleep_within_the_deadline_is_an_ordinary_call() {
    let redis = RedisServer::start();
    let stream = key("nap");
    let napper = redis.add(
        &stream,
        &[
            ("action", "emit"),
            ("emit_to", "out"),
            ("wasi_sleep_ms", "200"),
        ],
    );
    let _host = Host::misbehave(&redis, &stream, &["--handler-timeout", "1s"]);
    let out = redis.wait_for_len("out", 1);
    assert_eq!(fields_map(&out[0].1)["source_id"], napper);
    assert_eq!(
        fields_map(&out[0].1)["delivery"],
        "1",
        "no retry was needed"
    );
    redis.wait_until_settled(&stream, "g", WAIT);
    assert!(redis.range(&format!("{stream}:dlq")).is_empty());
}
