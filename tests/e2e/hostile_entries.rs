//! Hostile entries: wide, huge or odd entries reach the dead-letter stream
//! with every byte kept, and never pin the pending list or retention.

use std::time::Duration;

use crate::support::{Host, RedisServer, fast, key, meta, original_fields};

const WAIT: Duration = Duration::from_secs(60);

fn wide(n: usize, action: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields = vec![(b"action".to_vec(), action.as_bytes().to_vec())];
    fields.extend((1..n).map(|i| (format!("f{i}").into_bytes(), vec![(i % 251) as u8; i % 7])));
    fields
}

/// Waits for the DLQ record of `id` and returns it raw.
fn dead_letter(redis: &RedisServer, dlq: &str, id: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    crate::support::eventually(WAIT, &format!("a dead letter for {id}"), || {
        redis
            .range_raw(dlq)
            .into_iter()
            .map(|(_, rec)| rec)
            .find(|rec| meta(rec, "source_id") == id)
    })
}

#[test]
fn entries_too_wide_for_the_limit_are_dead_lettered_with_every_field() {
    let redis = RedisServer::start();
    let stream = key("wide");
    let five_k = wide(5_000, "emit");
    let hundred_k = wide(100_000, "emit");
    let a = redis.add_raw(&stream, &five_k);
    let b = redis.add_raw(&stream, &hundred_k);
    let fine = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let _host = Host::misbehave(&redis, &stream, &fast(&["--max-fields", "1000"]));
    let dlq = format!("{stream}:dlq");
    for (id, fields) in [(&a, &five_k), (&b, &hundred_k)] {
        let rec = dead_letter(&redis, &dlq, id);
        assert_eq!(meta(&rec, "kind"), "invalid");
        assert!(
            meta(&rec, "reason")
                .contains(&format!("{} fields, over --max-fields 1000", fields.len())),
            "{}",
            meta(&rec, "reason")
        );
        assert!(
            original_fields(&rec) == *fields,
            "the DLQ record keeps all {} fields byte for byte",
            fields.len()
        );
    }
    redis.wait_for_len("out", 1);
    redis.wait_until_settled(&stream, "g", WAIT);
    assert_eq!(
        redis.range(&dlq).len(),
        2,
        "one record each, {fine} not among them"
    );
}

#[test]
fn a_wide_entry_within_the_limit_that_fails_permanently_is_dead_lettered_inline() {
    let redis = RedisServer::start();
    let stream = key("wide-permanent");
    // 3,900 fields is the most a DLQ record can carry inline; a failing
    // entry that wide must still make it there in one atomic step.
    let fields = wide(3_900, "permanent");
    let id = redis.add_raw(&stream, &fields);
    let _host = Host::misbehave(
        &redis,
        &stream,
        &fast(&["--max-fields", "3900", "--max-entry-size", "4MiB"]),
    );
    let rec = dead_letter(&redis, &format!("{stream}:dlq"), &id);
    assert_eq!(meta(&rec, "kind"), "permanent");
    assert!(
        rec.iter().any(|(k, _)| k == b"field:f3899"),
        "inline layout"
    );
    assert!(original_fields(&rec) == fields);
    redis.wait_until_settled(&stream, "g", WAIT);
}

#[test]
fn max_fields_is_obeyed_at_the_limit_and_enforced_past_it() {
    let redis = RedisServer::start();
    let stream = key("max-fields");
    let at = redis.add_raw(&stream, &wide(10, "emit"));
    let past = redis.add_raw(&stream, &wide(11, "emit"));
    let _host = Host::misbehave(&redis, &stream, &fast(&["--max-fields", "10"]));
    let rec = dead_letter(&redis, &format!("{stream}:dlq"), &past);
    assert_eq!(meta(&rec, "kind"), "invalid");
    assert_eq!(
        meta(&rec, "reason"),
        "entry has 11 fields, over --max-fields 10"
    );
    assert_eq!(original_fields(&rec), wide(11, "emit"));
    let out = redis.wait_for_len("misbehave:out", 1);
    assert_eq!(crate::support::fields_map(&out[0].1)["source_id"], at);
    redis.wait_until_settled(&stream, "g", WAIT);
}

#[test]
fn max_entry_size_counts_each_fields_overhead() {
    let redis = RedisServer::start();
    let stream = key("overhead");
    // No bytes of names or values at all, but 100 fields of 48 bytes each
    // in the host: 4,800 bytes against a 4 KiB limit. 80 fields fit.
    let empty = |n: usize| {
        let mut f = vec![(b"action".to_vec(), b"emit".to_vec())];
        f.extend((1..n).map(|_| (Vec::new(), Vec::new())));
        f
    };
    let past = redis.add_raw(&stream, &empty(100));
    let at = redis.add_raw(&stream, &empty(80));
    let _host = Host::misbehave(&redis, &stream, &fast(&["--max-entry-size", "4KiB"]));
    let rec = dead_letter(&redis, &format!("{stream}:dlq"), &past);
    assert_eq!(meta(&rec, "kind"), "invalid");
    assert!(
        meta(&rec, "reason").contains("over --max-entry-size 4KiB"),
        "{}",
        meta(&rec, "reason")
    );
    assert_eq!(original_fields(&rec), empty(100));
    let out = redis.wait_for_len("misbehave:out", 1);
    assert_eq!(crate::support::fields_map(&out[0].1)["source_id"], at);
}

/// An entry with a 64 MiB binary value.
fn huge_entry() -> Vec<(Vec<u8>, Vec<u8>)> {
    let blob: Vec<u8> = (0..64 << 20).map(|i| (i % 253) as u8).collect();
    vec![
        (b"action".to_vec(), b"emit".to_vec()),
        (b"blob".to_vec(), blob),
    ]
}

#[test]
fn a_huge_value_is_dead_lettered_whole_without_the_host_holding_it() {
    let redis = RedisServer::start();
    let stream = key("huge");
    let fields = huge_entry();
    let id = redis.add_raw(&stream, &fields);
    let after = redis.add(&stream, &[("action", "emit")]);
    let host = Host::misbehave(
        &redis,
        &stream,
        &fast(&[
            "--max-entry-size",
            "1MiB",
            "--batch",
            "10",
            "--max-in-flight",
            "10",
        ]),
    );
    let rec = dead_letter(&redis, &format!("{stream}:dlq"), &id);
    assert_eq!(meta(&rec, "kind"), "invalid");
    assert!(
        original_fields(&rec) == fields,
        "the 64 MiB value kept byte for byte"
    );
    let out = redis.wait_for_len("misbehave:out", 1);
    assert_eq!(crate::support::fields_map(&out[0].1)["source_id"], after);
    let peak = host.peak_rss();
    assert!(
        peak < 48 << 20,
        "host peak RSS {} MiB: it held the 64 MiB value",
        peak >> 20
    );
}

#[test]
fn a_huge_entry_taken_back_on_start_is_held_to_the_same_limits() {
    let redis = RedisServer::start();
    let stream = key("huge-recovered");
    let fields = huge_entry();
    let id = redis.add_raw(&stream, &fields);
    // A crashed previous run of consumer `w` had read it.
    redis.read_as(&stream, "g", "w", 10);
    let host = Host::misbehave(
        &redis,
        &stream,
        &fast(&["--consumer", "w", "--max-entry-size", "1MiB"]),
    );
    let rec = dead_letter(&redis, &format!("{stream}:dlq"), &id);
    assert_eq!(meta(&rec, "kind"), "invalid");
    assert_eq!(meta(&rec, "deliveries"), "2", "recovered, not read anew");
    assert!(original_fields(&rec) == fields);
    redis.wait_until_settled(&stream, "g", WAIT);
    let peak = host.peak_rss();
    assert!(
        peak < 48 << 20,
        "host peak RSS {} MiB: recovery held the 64 MiB value",
        peak >> 20
    );
}
