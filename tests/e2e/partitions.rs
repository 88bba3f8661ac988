//! One logical stream over partitions (`--partitions N`): producers route by
//! the documented hash; `--assign shared` reads every partition on every
//! host; `--assign lease` gives each partition one owner at a time, whose
//! writes are fenced on its lease, spread over the live hosts and taken over
//! when an owner dies or stalls — with every entry handled exactly once
//! (receipt xor dead letter) and per-key order held across hosts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::cluster::key_slot;
use crate::support::{Host, RedisServer, eventually, fields_map, key};

/// The partition the README says a key value goes to: the key-slot hash
/// (the tests' own CRC16, written apart from the host's, so the documented
/// routing is checked, not merely reused) of a value without braces, mod N.
fn partition_of(value: &str, n: u32) -> u32 {
    u32::from(key_slot(value)) % n
}

fn partition_key(stream: &str, i: u32) -> String {
    format!("{{{stream}:{i}}}")
}

fn lease_key(stream: &str, i: u32) -> String {
    format!("{{{stream}:{i}}}:lease:g")
}

/// The server's clock, as an entry id's millisecond part compares with it.
fn server_ms(redis: &RedisServer) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(&mut redis.conn()).unwrap();
    s * 1000 + us / 1000
}

fn id_ms(id: &str) -> u64 {
    id.split('-').next().unwrap().parse().unwrap()
}

/// Appends `(customer, seq)` entries to their partitions; returns each
/// new entry's (customer, seq) by `partition-key/id` (ids are per stream:
/// two partitions may hand out the same one).
fn add_routed(
    redis: &RedisServer,
    stream: &str,
    n: u32,
    entries: &[(String, usize)],
    extra: &[(&str, &str)],
) -> HashMap<String, (String, usize)> {
    let mut pipe = redis::pipe();
    let mut keys = Vec::new();
    for (customer, seq) in entries {
        let seq = seq.to_string();
        let mut fields: Vec<(&str, &str)> = vec![
            ("customer", customer.as_str()),
            ("seq", seq.as_str()),
            ("action", "emit"),
        ];
        fields.extend_from_slice(extra);
        let key = partition_key(stream, partition_of(customer, n));
        pipe.xadd(&key, "*", &fields);
        keys.push(key);
    }
    let ids: Vec<String> = pipe.query(&mut redis.conn()).expect("XADD");
    ids.into_iter()
        .zip(keys)
        .map(|(id, key)| format!("{key}/{id}"))
        .zip(entries.iter().cloned())
        .collect()
}

/// What a receipt is for: `partition-key/id`.
fn source(fields: &[(String, String)]) -> String {
    let f = fields_map(fields);
    format!("{}/{}", f["source_stream"], f["source_id"])
}

/// The receipts of `outs`, by the id of the entry each is for.
fn receipts(redis: &RedisServer, outs: &[&str]) -> Vec<(String, String, String)> {
    let mut all = Vec::new();
    for out in outs {
        for (id, fields) in redis.range(out) {
            all.push((source(&fields), id, out.to_string()));
        }
    }
    all
}

/// Asserts every planned entry has exactly one receipt, and, receipts
/// being written atomically with the ack, that each key's entries were
/// committed in their stream order, whichever host committed them.
fn assert_once_and_in_order(
    redis: &RedisServer,
    planned: &HashMap<String, (String, usize)>,
    out: &str,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut order: HashMap<&str, Vec<usize>> = HashMap::new();
    for (id, fields) in redis.range(out) {
        let source = source(&fields);
        let (customer, seq) = planned
            .get(&source)
            .unwrap_or_else(|| panic!("receipt {id} for an unknown entry {source}"));
        *seen.entry(customer.as_str()).or_default() += 1;
        order.entry(customer.as_str()).or_default().push(*seq);
    }
    let receipts: usize = seen.values().sum();
    assert_eq!(receipts, planned.len(), "one receipt per entry");
    for (customer, seqs) in order {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "{customer}'s entries committed out of order");
        sorted.dedup();
        assert_eq!(sorted.len(), seqs.len(), "{customer} has a duplicate");
    }
}

fn nothing_pending(redis: &RedisServer, stream: &str, n: u32) -> bool {
    (0..n).all(|i| redis.pending(&partition_key(stream, i), "g") == 0)
}

#[test]
fn produce_routes_each_key_by_the_documented_hash_and_the_rest_round_robin() {
    let redis = RedisServer::start();
    let stream = key("routed");
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..200)
        .map(|i| format!("{{\"customer\":\"c-{i}\",\"n\":{i}}}\n"))
        .chain((0..8).map(|i| format!("{{\"other\":{i}}}\n")))
        .collect();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines).unwrap();
    let (status, out, err) = Host::output_env(
        &[
            "produce",
            "--redis",
            &redis.url(),
            "--stream",
            &stream,
            "--partitions",
            "4",
            "--partition-by",
            "customer",
            "--from-jsonl",
            input.to_str().unwrap(),
        ],
        &[],
    );
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("over 4 partitions"), "{out}");
    let mut unrouted = Vec::new();
    for i in 0..4 {
        for (_, fields) in redis.range(&partition_key(&stream, i)) {
            match fields_map(&fields).get("customer") {
                Some(c) => assert_eq!(partition_of(c, 4), i, "{c} in partition {i}"),
                None => unrouted.push(i),
            }
        }
    }
    unrouted.sort_unstable();
    assert_eq!(
        unrouted,
        [0, 0, 1, 1, 2, 2, 3, 3],
        "round-robin without the field"
    );
    assert_eq!(
        redis.range(&stream).len(),
        0,
        "nothing in the logical name itself"
    );
    let (status, out) = Host::output(&[
        "produce",
        "--redis",
        &redis.url(),
        "--stream",
        "a{b}",
        "--partitions",
        "2",
        "k=v",
    ]);
    assert_eq!(status.code(), Some(64), "{out}");
    assert!(out.contains("braces"), "{out}");
}

#[test]
fn shared_partitions_are_all_read_and_dead_letter_beside_themselves() {
    let redis = RedisServer::start();
    let stream = key("shared");
    let entries: Vec<(String, usize)> = (0..60).map(|i| (format!("c-{}", i % 12), i)).collect();
    let planned = add_routed(&redis, &stream, 3, &entries, &[("emit_to", "out")]);
    let poison = redis.add(&partition_key(&stream, 2), &[("action", "permanent")]);
    let _host = Host::misbehave(
        &redis,
        &stream,
        &[
            "--partitions",
            "3",
            "--assign",
            "shared",
            "--order-by",
            "customer",
        ],
    );
    redis.wait_for_len("out", planned.len());
    let dlq = eventually(Duration::from_secs(30), "the poison's dead letter", || {
        let records = redis.range(&format!("{}:dlq", partition_key(&stream, 2)));
        (records.len() == 1).then_some(records)
    });
    assert_eq!(fields_map(&dlq[0].1)["source_id"], poison);
    for i in [0, 1] {
        assert!(
            redis
                .range(&format!("{}:dlq", partition_key(&stream, i)))
                .is_empty()
        );
    }
    eventually(Duration::from_secs(30), "nothing pending", || {
        nothing_pending(&redis, &stream, 3).then_some(())
    });
    assert_once_and_in_order(&redis, &planned, "out");
}

/// `host run` of the misbehaving plugin over `n` leased partitions.
fn leased_host(redis: &RedisServer, stream: &str, n: &str, ttl: &str, extra: &[&str]) -> Host {
    let flags = [
        &[
            "--partitions",
            n,
            "--lease-ttl",
            ttl,
            "--order-by",
            "customer",
            "--concurrency",
            "2",
            "--shutdown-grace",
            "200ms",
        ][..],
        extra,
    ]
    .concat();
    Host::misbehave(redis, stream, &flags)
}

/// Who holds each partition's lease (`None`: nobody).
fn holders(redis: &RedisServer, stream: &str, n: u32) -> Vec<Option<String>> {
    let mut c = redis.conn();
    (0..n)
        .map(|i| {
            redis::cmd("GET")
                .arg(lease_key(stream, i))
                .query(&mut c)
                .unwrap()
        })
        .collect()
}

#[test]
fn three_hosts_over_eight_partitions_lose_nothing_and_keep_key_order_through_kill_9s() {
    let redis = RedisServer::start();
    let stream = key("leased");
    let spawn = |redis: &RedisServer| {
        leased_host(
            redis,
            &stream,
            "8",
            "2s",
            &["--plugin-config", "emit_to=out"],
        )
    };
    let mut hosts: Vec<Host> = (0..3).map(|_| spawn(&redis)).collect();
    eventually(
        Duration::from_secs(60),
        "the partitions spread over the three hosts",
        || {
            let held = holders(&redis, &stream, 8);
            let owners: HashSet<&str> = held
                .iter()
                .flatten()
                .map(|t| t.split('#').next().unwrap())
                .collect();
            (held.iter().all(Option::is_some) && owners.len() == 3).then_some(())
        },
    );

    // A producer adds 40 customers' entries, each key's in sequence, while
    // a host is killed and replaced every few seconds.
    let producing = Arc::new(AtomicBool::new(true));
    let planned = std::thread::scope(|s| {
        let producer = s.spawn(|| {
            let mut planned = HashMap::new();
            let mut next = vec![0usize; 40];
            let started = Instant::now();
            let mut round = 0usize;
            while started.elapsed() < Duration::from_secs(14) {
                let batch: Vec<(String, usize)> = (0..40)
                    .map(|k| {
                        let k = (k + round) % 40;
                        next[k] += 1;
                        (format!("c-{k}"), next[k])
                    })
                    .collect();
                planned.extend(add_routed(
                    &redis,
                    &stream,
                    8,
                    &batch,
                    &[("sleep_ms", "10")],
                ));
                round += 1;
                std::thread::sleep(Duration::from_millis(150));
            }
            producing.store(false, Ordering::Relaxed);
            planned
        });
        let mut victim = 0;
        while producing.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(3));
            hosts[victim].signal(9);
            hosts[victim] = spawn(&redis);
            victim = (victim + 1) % 3;
        }
        producer.join().unwrap()
    });
    assert!(planned.len() > 2_000, "{} entries", planned.len());
    eventually(Duration::from_secs(90), "every entry committed", || {
        (redis.range("out").len() >= planned.len() && nothing_pending(&redis, &stream, 8))
            .then_some(())
    });
    assert_once_and_in_order(&redis, &planned, "out");
    for i in 0..8 {
        let dlq = format!("{}:dlq", partition_key(&stream, i));
        assert!(redis.range(&dlq).is_empty(), "{dlq}: nothing dead-lettered");
    }
    drop(hosts);
}

#[test]
fn a_dead_owners_partitions_are_taken_over_within_the_lease_ttl() {
    let redis = RedisServer::start();
    let stream = key("takeover");
    let mut a = leased_host(
        &redis,
        &stream,
        "4",
        "2s",
        &["--plugin-config", "emit_to=out"],
    );
    eventually(Duration::from_secs(60), "a owns every partition", || {
        holders(&redis, &stream, 4)
            .iter()
            .all(Option::is_some)
            .then_some(())
    });
    let _b = leased_host(
        &redis,
        &stream,
        "4",
        "2s",
        &["--plugin-config", "emit_to=out"],
    );
    let owner = |t: &Option<String>| t.as_ref().map(|t| t.split('#').next().unwrap().to_owned());
    eventually(
        Duration::from_secs(30),
        "the partitions spread over a and b",
        || {
            let owners: HashSet<_> = holders(&redis, &stream, 4).iter().map(owner).collect();
            (owners.len() == 2 && !owners.contains(&None)).then_some(())
        },
    );
    let pid_a = format!("-{}", a.pid());
    let is_a = |t: &Option<String>| owner(t).is_some_and(|o| o.ends_with(&pid_a));
    assert!(
        holders(&redis, &stream, 4).iter().any(is_a),
        "a owned some partitions"
    );
    a.signal(9);
    let killed = Instant::now();
    let _ = a.wait_exit(Duration::from_secs(5));
    eventually(Duration::from_secs(30), "b owns every partition", || {
        let now = holders(&redis, &stream, 4);
        now.iter().all(|t| t.is_some() && !is_a(t)).then_some(())
    });
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(2) + Duration::from_secs(3),
        "taken over in {took:?}: within the 2s lease plus a few seconds"
    );
    let entries: Vec<(String, usize)> = (0..40).map(|i| (format!("c-{i}"), 1)).collect();
    let planned = add_routed(&redis, &stream, 4, &entries, &[]);
    redis.wait_for_len("out", planned.len());
    assert_once_and_in_order(&redis, &planned, "out");
}

#[test]
fn a_host_whose_lease_was_taken_neither_reads_nor_commits_until_it_holds_one_again() {
    let redis = RedisServer::start();
    let stream = key("fenced");
    let part = partition_key(&stream, 0);
    let lease = lease_key(&stream, 0);
    // Renewed every 10s: the host cannot notice the theft for seconds.
    let _host = leased_host(
        &redis,
        &stream,
        "1",
        "30s",
        &["--plugin-config", "emit_to=out"],
    );
    let token: String = eventually(Duration::from_secs(60), "the lease taken", || {
        redis::cmd("GET").arg(&lease).query(&mut redis.conn()).ok()
    });
    let first = redis.add(&part, &[("action", "emit"), ("customer", "c")]);
    redis.wait_for_len("out", 1);
    let delivered = |redis: &RedisServer| -> String {
        let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&part)
            .query(&mut redis.conn())
            .unwrap();
        redis::from_redis_value(groups[0]["last-delivered-id"].clone()).unwrap()
    };
    assert_eq!(delivered(&redis), first);

    // Another owner takes the lease; entries arrive meanwhile.
    let _: () = redis::cmd("SET")
        .arg(&lease)
        .arg("intruder")
        .arg("PX")
        .arg(60_000)
        .query(&mut redis.conn())
        .unwrap();
    let stolen_at = server_ms(&redis);
    let ids: Vec<String> = (0..20)
        .map(|i| redis.add(&part, &[("action", "emit"), ("customer", &format!("k{i}"))]))
        .collect();
    // Until the host notices the theft at a renewal (up to 10s) and drains
    // the partition, deleting its consumer, it reads every 200ms.
    eventually(
        Duration::from_secs(30),
        "the host drained the partition",
        || redis.consumers(&part, "g").is_empty().then_some(()),
    );
    assert_eq!(
        delivered(&redis),
        first,
        "nothing was read under another's lease"
    );
    assert_eq!(
        redis.range("out").len(),
        1,
        "nothing was committed under another's lease"
    );
    // The intruder leaves; the host takes the lease anew and catches up.
    let _: () = redis::cmd("DEL")
        .arg(&lease)
        .query(&mut redis.conn())
        .unwrap();
    let released_at = server_ms(&redis);
    let out = redis.wait_for_len("out", 21);
    let now: String = redis::cmd("GET")
        .arg(&lease)
        .query(&mut redis.conn())
        .unwrap();
    assert_ne!(now, token, "a new acquisition has a new token");
    for (receipt, fields) in &out[1..] {
        assert!(
            id_ms(receipt) >= released_at,
            "receipt {receipt} written while fenced"
        );
        assert!(ids.contains(&fields_map(fields)["source_id"].to_owned()));
        assert_eq!(fields_map(fields)["source_stream"], part);
    }
    assert!(stolen_at <= released_at);
}

#[test]
fn a_paused_owner_commits_nothing_once_it_resumes() {
    let redis = RedisServer::start();
    let stream = key("paused");
    let a = leased_host(
        &redis,
        &stream,
        "4",
        "2s",
        &["--plugin-config", "emit_to=out-a"],
    );
    eventually(Duration::from_secs(60), "a owns every partition", || {
        holders(&redis, &stream, 4)
            .iter()
            .all(Option::is_some)
            .then_some(())
    });
    let b = leased_host(
        &redis,
        &stream,
        "4",
        "2s",
        &["--plugin-config", "emit_to=out-b"],
    );
    let pid_a = a.pid().to_string();
    let held_by_a = |redis: &RedisServer| {
        holders(redis, &stream, 4)
            .iter()
            .filter(|t| {
                t.as_deref()
                    .is_some_and(|t| t.split('#').next().unwrap().ends_with(&pid_a))
            })
            .count()
    };
    eventually(
        Duration::from_secs(30),
        "b took half the partitions",
        || {
            (held_by_a(&redis) == 2 && holders(&redis, &stream, 4).iter().all(Option::is_some))
                .then_some(())
        },
    );
    // Slow entries keep a busy in its handler when it is stopped.
    let producing = Arc::new(AtomicBool::new(true));
    let (planned, resumed_at) = std::thread::scope(|s| {
        let producer = s.spawn(|| {
            let mut planned = HashMap::new();
            let mut seq = 0;
            while producing.load(Ordering::Relaxed) {
                seq += 1;
                let batch: Vec<(String, usize)> = (0..6).map(|k| (format!("c-{k}"), seq)).collect();
                planned.extend(add_routed(
                    &redis,
                    &stream,
                    4,
                    &batch,
                    &[("sleep_ms", "40")],
                ));
                std::thread::sleep(Duration::from_millis(100));
            }
            planned
        });
        // a is stopped while it holds entries of its partitions.
        eventually(Duration::from_secs(15), "a holding entries", || {
            let mine = holders(&redis, &stream, 4);
            (0..4u32)
                .filter(|i| {
                    mine[*i as usize]
                        .as_deref()
                        .is_some_and(|t| t.split('#').next().unwrap().ends_with(&pid_a))
                })
                .any(|i| redis.pending(&partition_key(&stream, i), "g") > 0)
                .then_some(())
        });
        a.signal(19); // SIGSTOP
        eventually(Duration::from_secs(15), "b took a's partition over", || {
            (held_by_a(&redis) == 0).then_some(())
        });
        a.signal(18); // SIGCONT
        let resumed_at = server_ms(&redis);
        // Entries keep coming while a wakes up with a stale lease, until it
        // holds a lease anew (it may win a partition back).
        let started = Instant::now();
        let mut reacquired_at = u64::MAX;
        while started.elapsed() < Duration::from_secs(4) {
            if reacquired_at == u64::MAX && held_by_a(&redis) > 0 {
                reacquired_at = server_ms(&redis);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        producing.store(false, Ordering::Relaxed);
        (producer.join().unwrap(), (resumed_at, reacquired_at))
    });
    let (resumed_at, reacquired_at) = resumed_at;
    eventually(Duration::from_secs(60), "every entry committed", || {
        let n = redis.range("out-a").len() + redis.range("out-b").len();
        (n >= planned.len() && nothing_pending(&redis, &stream, 4)).then_some(())
    });
    let all = receipts(&redis, &["out-a", "out-b"]);
    let mut by_entry: BTreeMap<&str, usize> = BTreeMap::new();
    for (source, receipt, out) in &all {
        *by_entry.entry(source.as_str()).or_default() += 1;
        if out == "out-a" {
            let at = id_ms(receipt);
            assert!(
                at < resumed_at || at >= reacquired_at,
                "a committed {source} at {receipt}, after it resumed ({resumed_at}) and before it held a lease again ({reacquired_at})"
            );
        }
    }
    assert_eq!(by_entry.len(), planned.len(), "every entry has a receipt");
    assert!(by_entry.values().all(|n| *n == 1), "and only one");
    drop(b);
}

/// A partition taken over by a host whose plugin file no longer loads
/// (replaced by a broken one) cannot run there: its entries wait, the
/// host's `/readyz` names it, and it is tried again until the file loads —
/// then it runs, and every entry is handled.
#[test]
fn a_taken_over_partition_whose_plugin_does_not_load_waits_named_by_readyz_until_it_loads() {
    let redis = RedisServer::start();
    let stream = key("unloadable");
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("handler.wasm");
    std::fs::copy(crate::support::plugin("misbehave"), &plugin).unwrap();
    let port = crate::support::http::free_port();
    let addr = format!("127.0.0.1:{port}");
    let leased = [
        "--partitions",
        "4",
        "--lease-ttl",
        "2s",
        "--shutdown-grace",
        "200ms",
    ];
    let _a = Host::run(
        &redis.url(),
        &stream,
        "g",
        &plugin,
        &[&leased[..], &["--http", &addr]].concat(),
    );
    let mut b = Host::run(&redis.url(), &stream, "g", &plugin, &leased);
    eventually(
        Duration::from_secs(60),
        "the partitions spread over both hosts",
        || {
            let held = holders(&redis, &stream, 4);
            let owners: HashSet<String> = held
                .iter()
                .flatten()
                .map(|t| t.split('#').next().unwrap().to_owned())
                .collect();
            (held.iter().all(Option::is_some) && owners.len() == 2).then_some(())
        },
    );

    // Both run their partitions: an entry in each is handled.
    for i in 0..4 {
        redis.add(&partition_key(&stream, i), &[("n", "0")]);
    }
    eventually(
        Duration::from_secs(60),
        "each partition's first entry handled",
        || {
            (0..4)
                .all(|i| {
                    let key = partition_key(&stream, i);
                    redis.entries_read(&key, "g") == Some(1) && redis.pending(&key, "g") == 0
                })
                .then_some(())
        },
    );

    // The file breaks (the running partitions keep the version in service),
    // then B dies: A takes its partitions over but cannot run them.
    let b_name = format!("-{}", b.pid());
    let of_b: Vec<u32> = (0..4)
        .filter(|i| {
            holders(&redis, &stream, 4)[*i as usize]
                .as_deref()
                .is_some_and(|t| t.split('#').next().unwrap().ends_with(&b_name))
        })
        .collect();
    assert!(!of_b.is_empty(), "B held some partitions");
    std::fs::write(&plugin, b"not a component").unwrap();
    b.signal(9);
    b.wait_exit(Duration::from_secs(10));
    for i in 0..4 {
        redis.add(&partition_key(&stream, i), &[("n", "1")]);
    }
    // A takes each of B's partitions over as its lease runs out, and
    // /readyz names each one it cannot run.
    let taken_over = eventually(
        Duration::from_secs(30),
        "every lease A's, and /readyz naming B's partitions",
        || {
            let owners: HashSet<String> = holders(&redis, &stream, 4)
                .iter()
                .flatten()
                .map(|t| t.split('#').next().unwrap().to_owned())
                .collect();
            let a = crate::support::http::get(port, "/readyz")?;
            (owners.len() == 1
                && a.status == 503
                && of_b.iter().all(|i| a.body.contains(&format!("g/{i}"))))
            .then_some(of_b.clone())
        },
    );
    // They wait, their entries unread, while the file is broken.
    for i in &taken_over {
        let key = partition_key(&stream, *i);
        assert_ne!(
            redis.entries_read(&key, "g"),
            Some(redis.range(&key).len() as u64),
            "{key} unread"
        );
    }

    // The file loads again: the waiting partitions start and catch up.
    std::fs::copy(crate::support::plugin("misbehave"), &plugin).unwrap();
    eventually(
        Duration::from_secs(60),
        "every partition's entries handled",
        || {
            (0..4)
                .all(|i| {
                    let key = partition_key(&stream, i);
                    redis.entries_read(&key, "g") == Some(redis.range(&key).len() as u64)
                        && redis.pending(&key, "g") == 0
                })
                .then_some(())
        },
    );
    eventually(Duration::from_secs(30), "/readyz ready again", || {
        (crate::support::http::get(port, "/readyz")?.status == 200).then_some(())
    });
}
