//! Hostile emits: a plugin's output is bounded per call, and one entry's bad
//! emits never break its neighbours' commits.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, fast, fields_map, key};

const WAIT: Duration = Duration::from_secs(60);

/// How many times each source id appears in `stream`.
fn counts(redis: &RedisServer, stream: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for (_, f) in redis.range(stream) {
        if let Some(id) = fields_map(&f).get("source_id") {
            *seen.entry((*id).to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

/// DLQ records by source id, each as a map of its fields.
type Records = HashMap<String, HashMap<String, String>>;

/// The DLQ records of `stream` by source id.
fn dead_letters(redis: &RedisServer, stream: &str) -> Records {
    redis
        .range(&format!("{stream}:dlq"))
        .into_iter()
        .map(|(_, f)| {
            let rec: HashMap<String, String> = f.into_iter().collect();
            (rec["source_id"].clone(), rec)
        })
        .collect()
}

#[test]
fn one_entrys_bad_emits_never_touch_its_neighbours_commits() {
    let redis = RedisServer::start();
    let stream = key("neighbours");
    let mut c = redis.conn();
    let _: () = redis::cmd("SET")
        .arg("not-a-stream")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let mut ordinary = Vec::new();
    let mut wide = String::new();
    let mut wrong = String::new();
    for i in 0..60 {
        ordinary.push(redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]));
        if i == 20 {
            wide = redis.add(
                &stream,
                &[("action", "emit-wide"), ("n", "5000"), ("emit_to", "out")],
            );
        }
        if i == 40 {
            wrong = redis.add(&stream, &[("action", "emit"), ("emit_to", "not-a-stream")]);
        }
    }
    // One worker and big batches: all of these are committed together.
    let _host = Host::misbehave(
        &redis,
        &stream,
        &fast(&[
            "--concurrency",
            "1",
            "--batch",
            "100",
            "--max-deliveries",
            "3",
        ]),
    );
    eventually(WAIT, "both bad entries dead-lettered", || {
        (dead_letters(&redis, &stream).len() == 2).then_some(())
    });
    redis.wait_until_settled(&stream, "g", WAIT);
    let seen = counts(&redis, "out");
    for id in &ordinary {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "{id} emitted exactly once: {seen:?}"
        );
    }
    assert_eq!(seen.get(&wide), None, "a failed entry's emits never appear");
    let dead = dead_letters(&redis, &stream);
    assert!(
        ordinary.iter().all(|id| !dead.contains_key(id)),
        "no ordinary entry dead-lettered: {:?}",
        dead.keys()
    );
    assert_eq!(dead[&wide]["kind"], "permanent");
    assert!(
        dead[&wide]["reason"].contains("--max-fields"),
        "{:?}",
        dead[&wide]
    );
    assert_eq!(dead[&wrong]["kind"], "max-deliveries");
    assert!(
        dead[&wrong]["reason"].contains("WRONGTYPE")
            && dead[&wrong]["reason"].contains("not-a-stream"),
        "the commit failure's reason reaches the record: {:?}",
        dead[&wrong]
    );
}

#[test]
fn a_flood_of_wide_emits_stays_within_the_host_memory_bound() {
    let redis = RedisServer::start();
    let stream = key("emit-flood");
    // 200 emits of 600,000 empty fields each, within the deadline and the
    // guest's memory cap: once cost the host 2.3 GB.
    let bomb = redis.add(
        &stream,
        &[("action", "emit-many"), ("count", "200"), ("n", "600000")],
    );
    let after = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let host = Host::misbehave(
        &redis,
        &stream,
        &[
            "--handler-timeout",
            "5s",
            "--max-memory",
            "64MiB",
            "--concurrency",
            "1",
        ],
    );
    redis.wait_for_len("out", 1);
    let dead = eventually(WAIT, "the bomb dead-lettered", || {
        dead_letters(&redis, &stream).remove(&bomb)
    });
    assert_eq!(dead["kind"], "permanent");
    assert!(dead["reason"].contains("--max-fields"), "{dead:?}");
    let peak = host.peak_rss();
    assert!(
        peak < 400 << 20,
        "host peak RSS {} MiB, over the bound for --max-memory 64MiB and one worker",
        peak >> 20
    );
    let _ = after;
}

/// Peak RSS of a host that handles one `emit-many` entry of one emit of
/// `n` empty fields, once it is dead-lettered.
fn peak_rss_for_one_emit_of(n: usize) -> u64 {
    let redis = RedisServer::start();
    let stream = key("emit-width");
    let n = n.to_string();
    let id = redis.add(
        &stream,
        &[
            ("action", "emit-many"),
            ("count", "1"),
            ("n", &n),
            ("emit_to", "out"),
        ],
    );
    let host = Host::misbehave(
        &redis,
        &stream,
        &["--concurrency", "1", "--max-memory", "64MiB"],
    );
    let dead = eventually(WAIT, "the wide emit dead-lettered", || {
        dead_letters(&redis, &stream).remove(&id)
    });
    assert!(dead["reason"].contains("--max-fields"), "{dead:?}");
    host.peak_rss()
}

#[test]
fn an_emit_over_max_fields_is_refused_before_the_host_copies_it() {
    // A million fields take the guest ~40 MB to build; lifting them into
    // host strings cost the host another ~50 MB before the refusal. Now
    // the host reads only the list's length: all a million-field emit may
    // add to a host with one just over the limit is the guest's own
    // memory, which its cap bounds.
    let narrow = peak_rss_for_one_emit_of(1_001);
    let wide = peak_rss_for_one_emit_of(1_000_000);
    assert!(
        wide < narrow + (64 << 20),
        "a refused million-field emit raised the host's peak RSS from {} to {} MiB, more than the guest's 64 MiB cap",
        narrow >> 20,
        wide >> 20
    );
}

/// One entry per case, each with its own host flags; returns the DLQ
/// records and the source ids that reached `out`.
fn emit_case(
    name: &str,
    entry: &[(&str, &str)],
    flags: &[&str],
) -> (Records, HashMap<String, usize>, String) {
    let redis = RedisServer::start();
    let stream = key(name);
    let id = redis.add(&stream, entry);
    let _host = Host::misbehave(&redis, &stream, flags);
    redis.wait_until_settled(&stream, "g", WAIT);
    eventually(WAIT, "the entry read", || {
        (redis.entries_read(&stream, "g") == Some(1)).then_some(())
    });
    redis.wait_until_settled(&stream, "g", WAIT);
    (dead_letters(&redis, &stream), counts(&redis, "out"), id)
}

fn assert_refused(dead: &Records, id: &str, rule: &str) {
    let rec = dead
        .get(id)
        .unwrap_or_else(|| panic!("{id} not dead-lettered: {dead:?}"));
    assert_eq!(rec["kind"], "permanent");
    assert!(rec["reason"].contains(rule), "{rec:?}");
}

#[test]
fn max_emits_is_a_per_call_budget() {
    let many = [
        ("action", "emit-many"),
        ("count", "11"),
        ("n", "1"),
        ("emit_to", "out"),
    ];
    let (dead, _, id) = emit_case("emits-over", &many, &["--max-emits", "10"]);
    assert_refused(&dead, &id, "--max-emits");
    let fits = [
        ("action", "emit-many"),
        ("count", "10"),
        ("n", "1"),
        ("emit_to", "out"),
    ];
    let (dead, _, _) = emit_case("emits-within", &fits, &["--max-emits", "10"]);
    assert!(dead.is_empty(), "{dead:?}");

    // Per call, not per instance: one instance (one worker) handles three
    // entries of 10 emits each, then one of 11, then 10 again.
    let redis = RedisServer::start();
    let stream = key("emits-per-call");
    let mut ids: Vec<String> = (0..3).map(|_| redis.add(&stream, &fits)).collect();
    let over = redis.add(&stream, &many);
    ids.push(redis.add(&stream, &fits));
    let _host = Host::misbehave(
        &redis,
        &stream,
        &["--max-emits", "10", "--concurrency", "1"],
    );
    eventually(WAIT, "all five handled", || {
        (redis.entries_read(&stream, "g") == Some(5) && redis.pending(&stream, "g") == 0)
            .then_some(())
    });
    // `emit-many`'s emits carry no source id: 4 calls of 10 and nothing of
    // the refused one make 40.
    assert_eq!(redis.range("out").len(), 40, "each call's own budget of 10");
    let dead = dead_letters(&redis, &stream);
    for id in &ids {
        assert!(!dead.contains_key(id), "{id} within its budget");
    }
    assert_refused(&dead, &over, "--max-emits");
    assert_eq!(dead.len(), 1, "{dead:?}");
}

#[test]
fn max_emit_bytes_counts_fields_and_overheads() {
    // 100 fields of 3-byte names and 1-byte values: 400 bytes of data, but
    // over 5 KiB with the per-field overhead.
    let wide = [("action", "emit-wide"), ("n", "100"), ("emit_to", "out")];
    let (dead, out, id) = emit_case("emit-bytes-over", &wide, &["--max-emit-bytes", "4KiB"]);
    assert_refused(&dead, &id, "--max-emit-bytes");
    assert!(out.is_empty(), "nothing of a refused call appended");
    let narrow = [("action", "emit-wide"), ("n", "40"), ("emit_to", "out")];
    let (dead, out, id) = emit_case("emit-bytes-within", &narrow, &["--max-emit-bytes", "4KiB"]);
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(out.get(&id), Some(&1));
}

#[test]
fn emitted_entries_obey_max_fields() {
    let over = [("action", "emit-wide"), ("n", "11"), ("emit_to", "out")];
    let (dead, _, id) = emit_case("emit-fields-over", &over, &["--max-fields", "10"]);
    assert_refused(&dead, &id, "--max-fields");
    let within = [("action", "emit-wide"), ("n", "10"), ("emit_to", "out")];
    let (dead, out, id) = emit_case("emit-fields-within", &within, &["--max-fields", "10"]);
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(out.get(&id), Some(&1));
}

#[test]
fn emits_to_the_source_stream_or_the_dlq_are_refused_unless_allowed_by_name() {
    let source = key("loop");
    let to_source = [("action", "emit"), ("emit_to", source.as_str())];
    let (dead, _, id) = emit_case("loop", &to_source, &[]);
    assert_refused(&dead, &id, "source stream");
    let dlq = format!("{}:dlq", key("forge"));
    let to_dlq = [("action", "emit"), ("emit_to", dlq.as_str())];
    let (dead, _, id) = emit_case("forge", &to_dlq, &[]);
    assert_refused(&dead, &id, "dead-letter stream");
    // Allowed by name, the loop is the operator's choice.
    let redis = RedisServer::start();
    let stream = key("allowed-loop");
    let first = redis.add(&stream, &[("action", "emit"), ("emit_to", stream.as_str())]);
    let _host = Host::misbehave(&redis, &stream, &["--emit-allow", stream.as_str()]);
    let all = redis.wait_for_len(&stream, 2);
    assert_eq!(fields_map(&all[1].1)["source_id"], first);
}

#[test]
fn emit_allow_restricts_targets_to_its_patterns() {
    let elsewhere = [("action", "emit"), ("emit_to", "other")];
    let (dead, _, id) = emit_case("allow-miss", &elsewhere, &["--emit-allow", "out*"]);
    assert_refused(&dead, &id, "matches no allowed pattern");
    let inside = [("action", "emit"), ("emit_to", "out")];
    let (dead, out, id) = emit_case("allow-hit", &inside, &["--emit-allow", "out*"]);
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(out.get(&id), Some(&1));
}
