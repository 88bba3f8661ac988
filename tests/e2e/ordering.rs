//! Per-key ordering (`--order-by`): the order in which each key's entries
//! commit (their emits land in `out` atomically with the ack) is their stream
//! order, while keys run in parallel.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, key};

const WAIT: Duration = Duration::from_secs(120);

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// `keys` × `per_key` emitting entries, keys interleaved at random, each
/// with `customer` and its place `seq` among its key's entries. Entries
/// for which `retry(key, seq, rng)` says so fail retryably until their
/// second delivery; some busy-wait a few milliseconds. Returns each id's
/// (customer, seq).
fn add_workload(
    redis: &RedisServer,
    stream: &str,
    keys: usize,
    per_key: usize,
    retry: impl Fn(usize, usize, &mut Rng) -> bool,
) -> HashMap<String, (String, usize)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut order: Vec<usize> = (0..keys).flat_map(|k| vec![k; per_key]).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut next = vec![0usize; keys];
    let mut planned = Vec::new();
    let mut pipe = redis::pipe();
    for k in order {
        let seq = next[k];
        next[k] += 1;
        let customer = format!("c-{k}");
        let mut fields = vec![
            ("customer", customer.clone()),
            ("seq", seq.to_string()),
            ("action", "emit".into()),
            ("emit_to", "out".into()),
        ];
        if rng.below(10) == 0 {
            fields.push(("sleep_ms", (1 + rng.below(4)).to_string()));
        }
        if retry(k, seq, &mut rng) {
            fields.push(("fail_until", "2".into()));
        }
        pipe.xadd(stream, "*", &fields);
        planned.push((customer, seq));
    }
    let ids: Vec<String> = pipe.query(&mut redis.conn()).expect("XADD");
    ids.into_iter().zip(planned).collect()
}

/// Each key's seqs in the order their entries committed.
fn commit_order(
    redis: &RedisServer,
    planned: &HashMap<String, (String, usize)>,
) -> HashMap<String, Vec<usize>> {
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    for (_, fields) in redis.range("out") {
        let source = fields
            .iter()
            .find(|(k, _)| k == "source_id")
            .map(|(_, v)| v.as_str())
            .expect("source_id");
        let (customer, seq) = &planned[source];
        seen.entry(customer.clone()).or_default().push(*seq);
    }
    seen
}

fn run_workload(stream: &str, redis: &RedisServer, extra: &[&str]) -> Host {
    let flags = [
        &[
            "--concurrency",
            "4",
            "--retry-backoff",
            "50ms",
            "--claim-idle",
            "2s",
            "--claim-interval",
            "100ms",
            "--handler-timeout",
            "1s",
        ][..],
        extra,
    ]
    .concat();
    Host::misbehave(redis, stream, &flags)
}

#[test]
fn each_keys_entries_commit_in_stream_order_with_delays_and_retries() {
    let redis = RedisServer::start();
    let stream = key("ordered");
    let (keys, per_key) = (50, 200);
    let planned = add_workload(&redis, &stream, keys, per_key, |_, _, rng| {
        rng.below(40) == 0
    });
    let retries = redis
        .range(&stream)
        .iter()
        .filter(|(_, f)| f.iter().any(|(k, _)| k == "fail_until"))
        .count();
    assert!(retries > 100, "the workload retries: {retries}");
    let host = run_workload(&stream, &redis, &["--order-by", "customer"]);
    redis.wait_for_len("out", keys * per_key);
    redis.wait_until_settled(&stream, "g", WAIT);
    let seen = commit_order(&redis, &planned);
    assert_eq!(seen.len(), keys);
    let expected: Vec<usize> = (0..per_key).collect();
    for (customer, seqs) in &seen {
        assert_eq!(
            seqs, &expected,
            "{customer}'s entries committed out of stream order (or not once each)"
        );
    }
    assert_eq!(redis.range(&format!("{stream}:dlq")).len(), 0);
    drop(host);
}

/// The counterpart: the same kind of workload without `--order-by` does
/// commit later entries of a key before an earlier one that is retrying —
/// the property above is not an accident of the workload.
#[test]
fn without_order_by_a_retrying_entry_is_overtaken_by_later_ones_of_its_key() {
    let redis = RedisServer::start();
    let stream = key("unordered");
    let (keys, per_key) = (10, 20);
    // Every key's first entry retries once.
    let planned = add_workload(&redis, &stream, keys, per_key, |_, seq, _| seq == 0);
    let host = run_workload(&stream, &redis, &[]);
    redis.wait_for_len("out", keys * per_key);
    redis.wait_until_settled(&stream, "g", WAIT);
    let seen = commit_order(&redis, &planned);
    let overtaken = seen
        .values()
        .filter(|seqs| seqs.windows(2).any(|w| w[0] > w[1]))
        .count();
    assert!(overtaken > 0, "no key out of order: {seen:?}");
    drop(host);
}

/// An entry reclaimed from a dead consumer goes before the newer entries of
/// its key still waiting on this host (it cannot overtake one already
/// running).
#[test]
fn a_reclaimed_entry_runs_before_newer_waiting_entries_of_its_key() {
    let redis = RedisServer::start();
    let stream = key("ordered-reclaim");
    let add = |seq: &str, extra: &[(&str, &str)]| {
        let mut fields = vec![
            ("customer", "c-1"),
            ("seq", seq),
            ("action", "emit"),
            ("emit_to", "out"),
        ];
        fields.extend_from_slice(extra);
        redis.add(&stream, &fields)
    };
    let first = add("0", &[]);
    redis.read_as(&stream, "g", "dead", 1); // its consumer dies holding it
    let running = add("1", &[("sleep_ms", "2500")]);
    add("2", &[]);
    let host = Host::misbehave(
        &redis,
        &stream,
        &[
            "--order-by",
            "customer",
            "--claim-idle",
            "30s",
            "--claim-interval",
            "100ms",
            "--handler-timeout",
            "3s",
        ],
    );
    // Seq 0 becomes claimable only once seq 1 runs: its idle time is set
    // past --claim-idle then (XCLAIM … IDLE, JUSTID: no delivery counted).
    eventually(WAIT, "seq 1 delivered to the host", || {
        redis
            .pending_ids(&stream, "g")
            .contains(&running)
            .then_some(())
    });
    let _: Vec<String> = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg("g")
        .arg("dead")
        .arg(0)
        .arg(&first)
        .arg("IDLE")
        .arg(60_000)
        .arg("JUSTID")
        .query(&mut redis.conn())
        .unwrap();
    redis.wait_for_len("out", 3);
    let order: Vec<String> = redis
        .range("out")
        .into_iter()
        .map(|(_, f)| {
            f.into_iter()
                .find(|(k, _)| k == "source_id")
                .map(|(_, v)| v)
                .unwrap()
        })
        .collect();
    let ids = redis.range(&stream);
    let seq_of = |id: &str| {
        ids.iter()
            .find(|(i, _)| i == id)
            .and_then(|(_, f)| f.iter().find(|(k, _)| k == "seq"))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let seqs: Vec<String> = order.iter().map(|id| seq_of(id)).collect();
    assert_eq!(
        seqs,
        ["1", "0", "2"],
        "seq 1 was running when {first} was reclaimed; seq 2 was waiting"
    );
    drop(host);
}
