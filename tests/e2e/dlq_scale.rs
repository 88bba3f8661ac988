//! A large dead-letter stream costs the host no more memory than a small
//! one: `host status`, `host dlq purge` and `host dlq redrive` processes,
//! and a running host answering `/api/status` and the dashboard's state,
//! stay under [`RSS_BOUND`] with 20,000 records of 10 KB (200 MB) in the
//! DLQ, Redis's own peak memory barely moves, and the figures are right.

use std::time::Duration;

use crate::support::http::{first_event, free_port, get};
use crate::support::measured::mib;
use crate::support::{Host, RedisServer, eventually, key, plugin};

const WAIT: Duration = Duration::from_secs(120);
const RECORDS: usize = 20_000;
const PAYLOAD: usize = 10_000;
/// The most resident memory any process may reach (the DLQ is 200 MB).
const RSS_BOUND: u64 = 64 << 20;
/// The most Redis's peak memory may grow while status is read.
const REDIS_GROWTH_BOUND: u64 = 32 << 20;

fn kind(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "permanent"
    } else {
        "max-deliveries"
    }
}

/// `RECORDS` records of `PAYLOAD` bytes in the layout `host run` writes;
/// record `i` has kind [`kind`]`(i)` and original fields `n=i`, `payload`.
fn big_dlq(redis: &RedisServer, stream: &str, dlq: &str) {
    let mut c = redis.conn();
    let payload = vec![b'x'; PAYLOAD];
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(200) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("XADD")
                .arg(dlq)
                .arg("*")
                .arg(&["kind", kind(i), "reason", "r", "source_stream", stream])
                .arg("field:n")
                .arg(i)
                .arg("field:payload")
                .arg(&payload)
                .ignore();
        }
        let () = pipe.query(&mut c).unwrap();
    }
}

/// Runs `host ARGS --redis URL` to its end; returns its exit code, stdout
/// and peak resident memory.
fn measured(redis: &RedisServer, args: &[&str]) -> (i32, String, u64) {
    let m = crate::support::measured::host_command(redis, args);
    (m.code, m.stdout, m.peak_rss)
}

#[test]
fn status_purge_and_redrive_of_a_large_dlq_stay_within_a_fixed_memory_bound() {
    let redis = RedisServer::start();
    let stream = key("dlq-scale");
    let dlq = format!("{stream}:dlq");
    redis.add(&stream, &[("action", "ok")]);
    big_dlq(&redis, &stream, &dlq);
    let redis_before = redis.memory_peak();
    let mut over = Vec::new();
    let mut bounded = |what: &str, peak: u64| {
        eprintln!("{what}: peak RSS {}", mib(peak));
        if peak >= RSS_BOUND {
            over.push(format!(
                "{what} peaked at {} (bound {})",
                mib(peak),
                mib(RSS_BOUND)
            ));
        }
    };

    // status: the kinds it counts are those of the records it says it scanned.
    let (code, out, peak) = measured(&redis, &["status", "--stream", &stream, "--json"]);
    assert_eq!(code, 0, "{out}");
    bounded("host status", peak);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let d = &status[0]["dlq"];
    let scanned = d["scanned"].as_u64().unwrap() as usize;
    assert!(scanned > 0 && scanned <= RECORDS, "{d}");
    assert_eq!(d["length"], RECORDS);
    for k in ["permanent", "max-deliveries"] {
        let want = (RECORDS - scanned..RECORDS)
            .filter(|&i| kind(i) == k)
            .count();
        assert_eq!(d["kinds"][k], want, "{k} among the newest {scanned}: {d}");
    }

    // A running host answering /api/status and the dashboard's state.
    let port = free_port();
    let host = Host::run(
        &redis.url(),
        &stream,
        "g",
        &plugin("misbehave"),
        &["--http", &port.to_string()],
    );
    eventually(WAIT, "the host serves", || {
        (get(port, "/readyz")?.status == 200).then_some(())
    });
    for _ in 0..3 {
        let answer = get(port, "/api/status").expect("/api/status answers");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    first_event(port, "/api/events", "state", |s| {
        s["streams"][0]["dlq"]["length"] == RECORDS
    });
    bounded("host run serving /api/status", host.peak_rss());
    drop(host);
    // Reading adds nothing to Redis's data: its peak grows only by what
    // answering costs it.
    let growth = redis.memory_peak().saturating_sub(redis_before);
    eprintln!(
        "redis peak memory grew by {} while status was read",
        mib(growth)
    );
    let redis_over = (growth >= REDIS_GROWTH_BOUND).then(|| {
        format!(
            "Redis's peak memory grew by {} (bound {})",
            mib(growth),
            mib(REDIS_GROWTH_BOUND)
        )
    });

    // purge and redrive, each of half the records.
    let (code, out, peak) = measured(
        &redis,
        &[
            "dlq",
            "purge",
            "--stream",
            &stream,
            "--kind",
            "max-deliveries",
            "--yes",
        ],
    );
    assert_eq!(code, 0, "{out}");
    bounded("host dlq purge", peak);
    assert!(
        out.contains(&format!("deleted {} dead letters", RECORDS / 2)),
        "{out}"
    );
    let to = key("dlq-scale-to");
    let (code, out, peak) = measured(
        &redis,
        &["dlq", "redrive", "--stream", &stream, "--to", &to],
    );
    assert_eq!(code, 0, "{out}");
    bounded("host dlq redrive", peak);
    let half = RECORDS / 2;
    assert!(
        out.contains(&format!("moved {half} of {half}")),
        "{}",
        out.lines().last().unwrap_or("")
    );
    let mut c = redis.conn();
    let (dlq_len, to_len): (usize, usize) = redis::pipe()
        .cmd("XLEN")
        .arg(&dlq)
        .cmd("XLEN")
        .arg(&to)
        .query(&mut c)
        .unwrap();
    assert_eq!((dlq_len, to_len), (0, half));

    over.extend(redis_over);
    assert!(over.is_empty(), "{}", over.join("; "));
    assert_eq!(d["kinds_estimated"], scanned < RECORDS, "{d}");
}
