//! Operator commands and the HTTP status on a large stream (200,000 entries
//! of about 1 KB, a group lagging far behind): what they show is right —
//! checked against counts this test makes itself — and their memory does not
//! grow with the stream: the host's peak RSS stays under [`RSS_BOUND`] and
//! Redis's `used_memory_peak` grows by less than [`REDIS_GROWTH_BOUND`].

use std::time::Duration;

use redis::Value;
use serde_json::Value as Json;
use streamhost::ops::status::LIVE_COUNT_CAP;
use streamhost::ops::trim::LOST_IDS_LISTED;

use crate::support::http::{first_event, free_port, get, get_json};
use crate::support::measured::mib;
use crate::support::{Host, RedisServer, eventually, key, plugin};

/// Entries in the stream.
const ENTRIES: usize = 200_000;
/// Bytes of each entry's payload field.
const PAYLOAD: usize = 1_000;
/// Index of the last entry the lagging group has had delivered: everything
/// up to it lies behind its retention floor.
const DELIVERED_UP_TO: usize = 150_999;
/// The lagging group's reads: 1,000 entries, of which the first 500 are acked.
const READ: usize = 1_000;
const ACKED: usize = 500;
/// An entry deleted in the undelivered range: Redis can no longer tell the
/// lagging group's lag, so it must be counted.
const DELETED: usize = 180_000;
/// The host's peak RSS allowed (loading the entries behind the floor would
/// take 150 MB).
const RSS_BOUND: u64 = 64 << 20;
/// How much Redis's memory peak may grow while it answers (one reply of the
/// entries behind the floor would be 150 MB).
const REDIS_GROWTH_BOUND: u64 = 16 << 20;

/// A 200k-entry stream with one lagging group, and the ids this test knows.
struct Large {
    redis: RedisServer,
    stream: String,
    ids: Vec<String>,
}

impl Large {
    /// The stream, filled with pipelined `XADD`s; group `lagging` created at
    /// entry [`DELIVERED_UP_TO`] − [`READ`], has read [`READ`] entries and
    /// acked [`ACKED`]; entry [`DELETED`] is deleted.
    fn build(test: &str) -> Self {
        let redis = RedisServer::start();
        let mut con = redis.conn();
        // Not a durability test: no fsync per batch.
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendonly")
            .arg("no")
            .query(&mut con)
            .unwrap();
        let stream = key(test);
        let payload = "x".repeat(PAYLOAD);
        let mut ids = Vec::with_capacity(ENTRIES);
        for start in (0..ENTRIES).step_by(1_000) {
            let mut pipe = redis::pipe();
            for i in start..(start + 1_000).min(ENTRIES) {
                pipe.cmd("XADD")
                    .arg(&stream)
                    .arg("*")
                    .arg("n")
                    .arg(i)
                    .arg("payload")
                    .arg(&payload);
            }
            let batch: Vec<String> = pipe.query(&mut con).unwrap();
            ids.extend(batch);
        }
        let from = &ids[DELIVERED_UP_TO - READ];
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg("lagging")
            .arg(from)
            .query(&mut con)
            .unwrap();
        redis.read_as(&stream, "lagging", "slow", READ);
        redis.ack(
            &stream,
            "lagging",
            &ids[DELIVERED_UP_TO - READ + 1..][..ACKED],
        );
        let _: u64 = redis::cmd("XDEL")
            .arg(&stream)
            .arg(&ids[DELETED])
            .query(&mut con)
            .unwrap();
        Self { redis, stream, ids }
    }

    /// The oldest entry the lagging group still needs (its oldest pending).
    fn floor(&self) -> &str {
        &self.ids[DELIVERED_UP_TO - READ + 1 + ACKED]
    }

    /// Entries not yet delivered to the lagging group.
    fn lag(&self) -> u64 {
        (ENTRIES - 1 - DELIVERED_UP_TO - 1) as u64
    }

    fn length(&self) -> u64 {
        ENTRIES as u64 - 1
    }

    /// Fails if Redis's memory peak grew by [`REDIS_GROWTH_BOUND`] or more
    /// since `before` (a [`RedisServer::memory_peak`]).
    fn assert_redis_peak_grew_little(&self, before: u64) {
        let grown = self.redis.memory_peak().saturating_sub(before);
        assert!(
            grown < REDIS_GROWTH_BOUND,
            "Redis's memory peak grew by {}",
            mib(grown)
        );
    }
}

/// Runs `host ARGS --redis URL` to completion; returns its exit code,
/// stdout, stderr and peak RSS in bytes.
fn measured(redis: &RedisServer, args: &[&str]) -> (i32, String, String, u64) {
    let m = crate::support::measured::host_command(redis, args);
    (m.code, m.stdout, m.stderr, m.peak_rss)
}

fn group<'a>(status: &'a Json, name: &str) -> &'a Json {
    status["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == name))
        .unwrap_or_else(|| panic!("group {name} in {status}"))
}

#[test]
fn status_of_a_large_lagging_stream_is_right_and_stays_small() {
    let big = Large::build("large-status");
    let before = big.redis.memory_peak();
    let (code, out, err, peak) = measured(
        &big.redis,
        &[
            "status",
            "--stream",
            &big.stream,
            "--maxlen",
            "10",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(peak < RSS_BOUND, "status --json peaked at {}", mib(peak));
    let s = &serde_json::from_str::<Json>(&out).unwrap()[0];
    assert_eq!(s["length"], big.length());
    let g = group(s, "lagging");
    assert_eq!(g["lag"], big.lag(), "counted in full: {g}");
    assert_eq!(g["lag_exact"], true);
    assert_eq!(g["pending"], (READ - ACKED) as u64);
    let r = &s["retention"];
    assert_eq!(r["floor"], big.floor());
    assert_eq!(
        (&r["held_back"], &r["held_by"]),
        (&Json::from(true), &Json::from("lagging"))
    );

    let (code, out, err, peak) = measured(
        &big.redis,
        &["status", "--stream", &big.stream, "--maxlen", "10"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(peak < RSS_BOUND, "status peaked at {}", mib(peak));
    let line = out.lines().find(|l| l.starts_with("lagging ")).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[2], big.lag().to_string(), "{out}");
    assert!(out.contains("HELD BACK by group lagging"), "{out}");
    big.assert_redis_peak_grew_little(before);
}

#[test]
fn api_status_and_the_dashboard_state_of_a_large_stream_stay_small() {
    let big = Large::build("large-http");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // The host's own group starts at the end: it has nothing to read, and
    // its first trim is an hour away, so the stream stays as built while its
    // retention policy is judged.
    let host = Host::run(
        &big.redis.url(),
        &big.stream,
        "live",
        &plugin("noop"),
        &[
            "--start-id",
            "$",
            "--http",
            &addr,
            "--maxlen",
            "10",
            "--trim-interval",
            "1h",
        ],
    );
    eventually(Duration::from_secs(30), "the host serves", || {
        (get(port, "/readyz")?.status == 200).then_some(())
    });
    let before = big.redis.memory_peak();
    for _ in 0..3 {
        let body = get_json(port, "/api/status");
        let s = &body["streams"][0];
        assert_eq!(s["length"], big.length());
        let g = group(s, "lagging");
        assert_eq!(g["pending"], (READ - ACKED) as u64);
        // Counted up to the cap of views refreshed often: a lower bound,
        // marked as such.
        assert!(big.lag() > LIVE_COUNT_CAP);
        assert_eq!(
            (&g["lag"], &g["lag_exact"]),
            (&Json::from(LIVE_COUNT_CAP), &Json::from(false)),
            "{g}"
        );
        let r = &s["retention"];
        assert_eq!(
            (&r["floor"], &r["floor_group"]),
            (&Json::from(big.floor()), &Json::from("lagging"))
        );
        assert_eq!(
            (&r["held_back"], &r["held_by"]),
            (&Json::from(true), &Json::from("lagging"))
        );
    }
    let state = first_event(port, "/api/events", "state", |s| {
        s["streams"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(state["streams"][0]["length"], big.length());
    let peak = host.peak_rss();
    assert!(peak < RSS_BOUND, "the host peaked at {}", mib(peak));
    big.assert_redis_peak_grew_little(before);
}

#[test]
fn a_forced_trim_of_a_large_stream_reports_its_losses_in_bounded_memory() {
    let big = Large::build("large-trim");
    let before = big.redis.memory_peak();
    let (code, out, err, peak) = measured(
        &big.redis,
        &[
            "trim",
            "--stream",
            &big.stream,
            "--maxlen",
            "10",
            "--force",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(peak < RSS_BOUND, "trim --force peaked at {}", mib(peak));
    let report: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(report["after"], 10);
    let xlen: u64 = redis::cmd("XLEN")
        .arg(&big.stream)
        .query(&mut big.redis.conn())
        .unwrap();
    assert_eq!(xlen, 10);
    let lost = &report["lost"][0];
    assert_eq!(lost["group"], "lagging");
    // Every pending entry and every undelivered one but the 10 kept (one
    // undelivered entry was deleted before).
    let pending = (READ - ACKED) as u64;
    assert_eq!(lost["pending_count"], pending, "{lost}");
    assert_eq!(lost["pending_exact"], true, "{lost}");
    assert_eq!(lost["undelivered"], big.lag() - 10, "{lost}");
    assert_eq!(lost["undelivered_exact"], true, "{lost}");
    // The ids are listed up to a cap, oldest first.
    let listed: Vec<&str> = lost["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(pending > LOST_IDS_LISTED as u64);
    assert_eq!(listed.len(), LOST_IDS_LISTED, "{lost}");
    assert_eq!(listed[0], big.floor());
    assert!(
        err.contains(&format!("{pending} pending"))
            && err.contains(&format!("{} not yet delivered", big.lag() - 10)),
        "{err}"
    );
    big.assert_redis_peak_grew_little(before);
}

#[test]
fn setid_on_a_large_stream_counts_what_it_would_skip_in_bounded_memory() {
    let big = Large::build("large-setid");
    let before = big.redis.memory_peak();
    let last_delivered = |big: &Large| -> String {
        let rows: Vec<std::collections::HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&big.stream)
            .query(&mut big.redis.conn())
            .unwrap();
        redis::from_redis_value(rows[0]["last-delivered-id"].clone()).unwrap()
    };
    let args = [
        "groups",
        "setid",
        "--stream",
        &big.stream,
        "--group",
        "lagging",
        "--id",
        "$",
    ];
    let (code, _, err, peak) = measured(&big.redis, &args);
    assert_eq!(code, 64, "{err}");
    assert!(peak < RSS_BOUND, "setid peaked at {}", mib(peak));
    assert!(
        err.contains(&format!("would skip {} entries", big.lag())),
        "{err}"
    );
    assert_eq!(last_delivered(&big), big.ids[DELIVERED_UP_TO]);
    let (code, out, err, peak) = measured(&big.redis, &[&args[..], &["--force"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(peak < RSS_BOUND, "setid --force peaked at {}", mib(peak));
    assert!(
        out.contains(&format!("({} undelivered entries skipped)", big.lag())),
        "{out}"
    );
    assert_eq!(last_delivered(&big), big.ids[ENTRIES - 1]);
    big.assert_redis_peak_grew_little(before);
}
