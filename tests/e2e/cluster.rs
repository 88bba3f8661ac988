//! On a real six-node Redis Cluster (three masters, a replica each): hosts
//! given one seed (`--cluster`) read each partition on the node holding its
//! slot and follow it through host kills, a manual failover, a master's
//! death and a slot migrated under load — every entry left in the stream
//! ends with exactly one receipt (written atomically with its ack) or one
//! dead letter, each key's entries committed in order, nothing pending.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::cluster::{RedisCluster, key_slot};
use crate::support::{Host, eventually, fields_map};

const PARTITIONS: u32 = 8;

fn partition_key(stream: &str, i: u32) -> String {
    format!("{{{stream}:{i}}}")
}

/// Receipts of partition `i`: a stream sharing its hash tag, so the
/// receipt is committed with the ack in one single-slot script.
fn receipts_key(stream: &str, i: u32) -> String {
    format!("{{{stream}:{i}}}:receipts")
}

/// The receipts of every partition in one stream, in a slot of its own:
/// they go through the partitions' outboxes.
fn cross_slot_receipts(stream: &str) -> String {
    format!("{stream}:all-receipts")
}

/// Where a customer's receipts go: odd customers' to the cross-slot
/// stream, even ones' beside their partition.
fn receipts_of(stream: &str, customer: usize, partition: u32) -> String {
    if customer % 2 == 1 {
        cross_slot_receipts(stream)
    } else {
        receipts_key(stream, partition)
    }
}

fn partition_of(customer: &str) -> u32 {
    // The README's routing: CRC16 mod 16384 mod N (no braces in the value).
    u32::from(key_slot(customer)) % PARTITIONS
}

fn host(cluster: &RedisCluster, stream: &str) -> Host {
    host_with(cluster, stream, &[])
}

fn host_with(cluster: &RedisCluster, stream: &str, extra: &[&str]) -> Host {
    let flags = [
        &[
            "--cluster",
            "--partitions",
            "8",
            "--lease-ttl",
            "2s",
            "--order-by",
            "customer",
            "--concurrency",
            "2",
            "--shutdown-grace",
            "200ms",
            "--commit-wait",
            "1/200ms",
        ][..],
        extra,
    ]
    .concat();
    Host::run(
        &cluster.seed_url(),
        stream,
        "g",
        &crate::support::plugin("misbehave"),
        &flags,
    )
}

/// Appends one entry per customer (each customer's next seq) to their
/// partitions, on the nodes serving them now; entries a dying master
/// refuses are not appended (the producer would retry them).
fn produce_round(cluster: &RedisCluster, stream: &str, next: &mut [usize]) {
    let mut by_partition: HashMap<u32, Vec<(String, usize)>> = HashMap::new();
    for (k, seq) in next.iter_mut().enumerate() {
        let customer = format!("c-{k}");
        by_partition
            .entry(partition_of(&customer))
            .or_default()
            .push((customer, *seq));
    }
    for (p, entries) in by_partition {
        let key = partition_key(stream, p);
        let Ok(mut c) = std::panic::catch_unwind(|| cluster.conn_for(&key)) else {
            continue;
        };
        let mut pipe = redis::pipe();
        for (customer, seq) in &entries {
            let seq = seq.to_string();
            let k: usize = customer[2..].parse().unwrap();
            pipe.xadd(
                &key,
                "*",
                &[
                    ("customer", customer.as_str()),
                    ("seq", seq.as_str()),
                    ("action", "emit"),
                    ("emit_to", receipts_of(stream, k, p).as_str()),
                    ("sleep_ms", "5"),
                ],
            );
        }
        if pipe.query::<Vec<String>>(&mut c).is_ok() {
            for (customer, _) in entries {
                let k: usize = customer[2..].parse().unwrap();
                next[k] += 1;
            }
        }
    }
}

/// Every entry left in every partition has exactly one receipt — beside
/// its partition, or forwarded to the cross-slot stream — and each
/// customer's receipts are in seq order; nothing is pending, nothing was
/// dead-lettered, every outbox is empty.
fn assert_exactly_once_in_order(cluster: &RedisCluster, stream: &str) -> usize {
    let mut entries: HashMap<String, (String, usize)> = HashMap::new();
    for p in 0..PARTITIONS {
        let key = partition_key(stream, p);
        for (id, f) in cluster.range(&key) {
            let f = fields_map(&f);
            entries.insert(
                format!("{key}/{id}"),
                (f["customer"].to_owned(), f["seq"].parse().unwrap()),
            );
        }
        assert_eq!(cluster.pending(&key, "g"), 0, "{key}: nothing pending");
        assert!(
            cluster.range(&format!("{key}:dlq")).is_empty(),
            "{key}: no dead letter"
        );
        let outbox = format!("{key}:streamhost:outbox");
        assert!(cluster.range(&outbox).is_empty(), "{outbox} is drained");
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut order: HashMap<String, Vec<usize>> = HashMap::new();
    let streams: Vec<String> = (0..PARTITIONS)
        .map(|p| receipts_key(stream, p))
        .chain([cross_slot_receipts(stream)])
        .collect();
    let mut cross = 0;
    for receipts in &streams {
        for (receipt, fields) in cluster.range(receipts) {
            let f = fields_map(&fields);
            let source = format!("{}/{}", f["source_stream"], f["source_id"]);
            let (customer, seq) = entries.get(&source).unwrap_or_else(|| {
                panic!("{receipts}: receipt {receipt} for {source}, not in the stream")
            });
            order.entry(customer.clone()).or_default().push(*seq);
            *seen.entry(source).or_default() += 1;
            if *receipts == cross_slot_receipts(stream) {
                cross += 1;
            }
        }
    }
    for id in entries.keys() {
        assert_eq!(seen.get(id), Some(&1), "{id} has one receipt");
    }
    assert!(cross > 0, "some receipts crossed slots");
    for (customer, seqs) in order {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "{customer}'s entries committed out of order");
    }
    entries.len()
}

fn all_committed(cluster: &RedisCluster, stream: &str) -> bool {
    let len = |key: &str| -> usize {
        redis::cmd("XLEN")
            .arg(key)
            .query(&mut cluster.conn_for(key))
            .unwrap_or(0)
    };
    let mut entries = 0;
    let mut receipts = len(&cross_slot_receipts(stream));
    for p in 0..PARTITIONS {
        let key = partition_key(stream, p);
        entries += len(&key);
        receipts += len(&receipts_key(stream, p));
        if cluster.pending(&key, "g") != 0 || len(&format!("{key}:streamhost:outbox")) != 0 {
            return false;
        }
    }
    entries > 0 && receipts >= entries
}

#[test]
fn three_hosts_over_eight_partitions_ride_host_kills_a_failover_and_a_dead_master() {
    let mut cluster = RedisCluster::start();
    let stream = "orders";
    let mut hosts: Vec<Host> = (0..3).map(|_| host(&cluster, stream)).collect();
    // Leases live in their partitions' slots, on three different masters.
    eventually(Duration::from_secs(60), "every partition owned", || {
        (0..PARTITIONS)
            .all(|p| {
                let lease = format!("{}:lease:g", partition_key(stream, p));
                redis::cmd("EXISTS")
                    .arg(&lease)
                    .query::<bool>(&mut cluster.conn_for(&lease))
                    .unwrap_or(false)
            })
            .then_some(())
    });
    let producing = AtomicBool::new(true);
    let mut next = vec![1usize; 24];
    let started = Instant::now();
    let mut step = 0;
    while started.elapsed() < Duration::from_secs(24) {
        produce_round(&cluster, stream, &mut next);
        std::thread::sleep(Duration::from_millis(100));
        let at = started.elapsed().as_secs();
        match (step, at) {
            (0, 4..) => {
                hosts[0].signal(9);
                hosts[0] = host(&cluster, stream);
                step += 1;
            }
            (1, 8..) => {
                cluster.fail_over(&partition_key(stream, 0));
                step += 1;
            }
            (2, 12..) => {
                hosts[1].signal(9);
                hosts[1] = host(&cluster, stream);
                step += 1;
            }
            (3, 15..) => {
                cluster.kill_master_of(&partition_key(stream, 3));
                cluster.wait_served(&partition_key(stream, 3));
                step += 1;
            }
            _ => {}
        }
    }
    producing.store(false, Ordering::Relaxed);
    assert_eq!(step, 4, "every fault was injected");
    eventually(Duration::from_secs(120), "every entry committed", || {
        all_committed(&cluster, stream).then_some(())
    });
    let total = assert_exactly_once_in_order(&cluster, stream);
    assert!(total > 1_000, "{total} entries");
    drop(hosts);
}

#[test]
fn on_a_cluster_a_stream_and_its_dead_letters_must_share_a_slot() {
    let (status, err) = Host::output(&[
        "run",
        "--redis",
        "redis://127.0.0.1:1",
        "--cluster",
        "--stream",
        "orders",
        "--group",
        "g",
        "--plugin",
        "x.wasm",
    ]);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains("share a slot")
            && err.contains("--partitions")
            && err.contains("{orders}:dlq"),
        "{err}"
    );
    assert_ne!(key_slot("orders"), key_slot("orders:dlq"));
}

#[test]
fn a_partitions_slot_migrated_under_load_loses_and_repeats_nothing() {
    let cluster = RedisCluster::start();
    let stream = "moving";
    // The same emit twice in an outbox (as a forwarder that died between
    // forwarding and deleting leaves it): it lands once.
    let outbox = format!("{}:streamhost:outbox", partition_key(stream, 1));
    for _ in 0..2 {
        let _: String = redis::cmd("XADD")
            .arg(&outbox)
            .arg("*")
            .arg(&[
                ("streamhost:target", "dedup-check"),
                ("streamhost:idem", "{moving:1}/1-0/0"),
                ("order", "o-1"),
            ])
            .query(&mut cluster.conn_for(&outbox))
            .unwrap();
    }
    assert_ne!(key_slot(&outbox), key_slot("dedup-check"));
    let port = crate::support::http::free_port();
    let listen = format!("127.0.0.1:{port}");
    let _host = host_with(&cluster, stream, &["--http", &listen]);
    let moved = partition_key(stream, 0);
    let mut next = vec![1usize; 24];
    let started = Instant::now();
    let mut migrated = None;
    while started.elapsed() < Duration::from_secs(12) {
        produce_round(&cluster, stream, &mut next);
        std::thread::sleep(Duration::from_millis(100));
        if migrated.is_none() && started.elapsed() > Duration::from_secs(4) {
            // The partition's stream, lease, receipts and group move one
            // MIGRATE at a time, while the host keeps reading and committing.
            migrated = Some(cluster.migrate_slot_of(&moved, Duration::from_millis(300)));
        }
    }
    let (source, target) = migrated.expect("the slot was migrated");
    assert_ne!(source, target);
    assert_eq!(cluster.master_of(&moved), target);
    eventually(Duration::from_secs(90), "every entry committed", || {
        all_committed(&cluster, stream).then_some(())
    });
    let total = assert_exactly_once_in_order(&cluster, stream);
    assert!(total > 500, "{total} entries");
    // Health and metrics look at each partition on its node, the migrated
    // one on its new master.
    eventually(
        Duration::from_secs(30),
        "ready, with every partition's group",
        || {
            let ready = crate::support::http::get(port, "/readyz")?;
            let metrics = crate::support::http::get(port, "/metrics")?;
            let gauges = (0..PARTITIONS)
                .filter(|p| {
                    metrics.body.lines().any(|l| {
                        l.starts_with("streamhost_group_pending{")
                            && l.contains(&format!("pipeline=\"g/{p}\""))
                    })
                })
                .count();
            (ready.status == 200 && gauges == PARTITIONS as usize).then_some(())
        },
    );
    let landed = cluster.range("dedup-check");
    assert_eq!(landed.len(), 1, "one of the two copies landed");
    assert_eq!(fields_map(&landed[0].1)["order"], "o-1");
}

/// `examples/cluster.toml`, fed by `host produce --cluster --partitions 8
/// --partition-by customer`: both groups read every partition on its node,
/// and their emits to other slots arrive through the outboxes, one per
/// event.
#[test]
fn the_cluster_example_consumes_what_produce_routed() {
    let cluster = RedisCluster::start();
    let (status, out, err) = Host::output_env(
        &[
            "produce",
            "--redis",
            &cluster.seed_url(),
            "--cluster",
            "--stream",
            "demo:orders",
            "--partitions",
            "8",
            "--partition-by",
            "customer",
            "--demo-orders",
            "200",
        ],
        &[],
    );
    assert!(status.success(), "{out}{err}");
    let events: usize = (0..PARTITIONS)
        .map(|p| cluster.range(&partition_key("demo:orders", p)).len())
        .sum();
    assert!(events >= 200, "{events} events over the partitions");
    for p in 0..PARTITIONS {
        for (_, f) in cluster.range(&partition_key("demo:orders", p)) {
            let customer = fields_map(&f)["customer"].to_owned();
            assert_eq!(
                partition_of(&customer),
                p,
                "{customer} routed to partition {p}"
            );
        }
    }
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.toml");
    let dir = crate::support::plugin_dir().display().to_string();
    let env = [("REDIS_URL", cluster.seed_url()), ("PLUGIN_DIR", dir)];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let _host = Host::spawn_env(
        &["run".as_ref(), "--config".as_ref(), example.as_os_str()],
        &env,
    );
    eventually(
        Duration::from_secs(90),
        "both groups done with every partition",
        || {
            (0..PARTITIONS)
                .all(|p| {
                    let key = partition_key("demo:orders", p);
                    let node = cluster.node_of(&key);
                    let len = node.range(&key).len() as u64;
                    // An empty partition's group has read nothing (entries-read nil).
                    ["notifications", "analytics"].iter().all(|g| {
                        (len == 0 || node.entries_read(&key, g) == Some(len))
                            && node.pending(&key, g) == 0
                    })
                })
                .then_some(())
        },
    );
    let notified = eventually(
        Duration::from_secs(30),
        "the notifications forwarded",
        || {
            let n = cluster.range("notifications:outbox").len();
            (n > 0
                && (0..PARTITIONS).all(|p| {
                    cluster
                        .range(&format!(
                            "{}:streamhost:outbox",
                            partition_key("demo:orders", p)
                        ))
                        .is_empty()
                }))
            .then_some(n)
        },
    );
    let dead: usize = (0..PARTITIONS)
        .map(|p| {
            cluster
                .range(&format!("{}:dlq", partition_key("demo:orders", p)))
                .len()
        })
        .sum();
    assert_eq!(
        notified + dead,
        events,
        "one notification or one dead letter per event"
    );
    assert!(!cluster.range("analytics:totals").is_empty());

    // The operator commands, given the same config file, find each
    // partition on its node and show the stream whole.
    let ops = |args: &[&str]| -> serde_json::Value {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        all.extend(["--config".as_ref(), example.as_os_str()]);
        let (status, out, err) = Host::output_env(&all, &env);
        assert!(status.success(), "host {args:?}: {out}{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let status = ops(&["status", "--json"]);
    let s = &status[0];
    assert_eq!(s["partitions"], PARTITIONS);
    assert_eq!(s["length"], events);
    assert_eq!(s["dead_letters"], dead);
    for p in 0..PARTITIONS {
        let key = partition_key("demo:orders", p);
        let row = &s["rows"][p as usize];
        assert_eq!(row["status"]["length"], cluster.range(&key).len());
        for g in ["notifications", "analytics"] {
            let token: String = redis::cmd("GET")
                .arg(format!("{key}:lease:{g}"))
                .query(&mut cluster.conn_for(&key))
                .unwrap();
            assert_eq!(
                row["owners"][g].as_str(),
                Some(token.rsplit_once('#').unwrap().0),
                "{key}'s {g} lease"
            );
        }
    }
    let listed = ops(&[
        "dlq",
        "list",
        "--pipeline",
        "notifications",
        "--limit",
        "100000",
        "--json",
    ]);
    assert_eq!(listed.as_array().unwrap().len(), dead);
    let replayed = ops(&[
        "replay",
        "--pipeline",
        "notifications",
        "--count",
        "100000",
        "--json",
    ]);
    assert_eq!(replayed["entries"].as_array().unwrap().len(), events);
}

/// `host demo --cluster`: the demo's stream and dead letters in one hash
/// tag, its notifications forwarded from the stream's outbox to another
/// slot. After a clean stop, every order the groups were given was
/// notified once or dead-lettered once (or is still pending), and the
/// outbox is empty.
#[test]
fn the_demo_runs_on_a_cluster_and_notifies_each_order_once_or_dead_letters_it() {
    let cluster = RedisCluster::start();
    let stream = "{demo:events:orders}";
    let port = crate::support::http::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut demo = Host::spawn_env(
        &[
            "demo",
            "--redis",
            &cluster.seed_url(),
            "--cluster",
            "--http",
            &addr,
            "--rate",
            "60",
        ],
        &[],
    );
    eventually(
        Duration::from_secs(120),
        "orders notified and a malformed one dead-lettered",
        || {
            (cluster.range("notifications:outbox").len() >= 150
                && !cluster.range(&format!("{stream}:dlq")).is_empty())
            .then_some(())
        },
    );
    let status = crate::support::http::get_json(port, "/api/status");
    let seen = &status["streams"][0];
    assert_eq!(seen["stream"], stream);
    let groups: Vec<&str> = seen["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["analytics", "notifications"]);
    demo.signal(15);
    assert!(demo.wait_exit(Duration::from_secs(60)).success());

    let ms_seq = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    let mut con = cluster.conn_for(stream);
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(&mut con)
        .unwrap();
    let last: String = groups
        .iter()
        .find(|g| g.get("name") == Some(&redis::Value::BulkString(b"notifications".to_vec())))
        .and_then(|g| match g.get("last-delivered-id") {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .expect("the notifications group");
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg("notifications")
        .arg("-")
        .arg("+")
        .arg(100_000)
        .query(&mut con)
        .unwrap();
    let pending: std::collections::HashSet<String> = pending.into_iter().map(|p| p.0).collect();
    let mut notified: HashMap<String, usize> = HashMap::new();
    for (_, f) in cluster.range("notifications:outbox") {
        *notified
            .entry(fields_map(&f)["source_id"].to_owned())
            .or_default() += 1;
    }
    let mut dead: HashMap<String, usize> = HashMap::new();
    for (_, f) in cluster.range(&format!("{stream}:dlq")) {
        let f = fields_map(&f);
        if f["group"] == "notifications" {
            *dead.entry(f["source_id"].to_owned()).or_default() += 1;
        }
    }
    let delivered: Vec<String> = cluster
        .range(stream)
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| ms_seq(id) <= ms_seq(&last))
        .collect();
    assert!(delivered.len() >= 150, "{} delivered", delivered.len());
    for id in &delivered {
        let ends = notified.get(id).copied().unwrap_or(0)
            + dead.get(id).copied().unwrap_or(0)
            + usize::from(pending.contains(id));
        assert_eq!(
            ends, 1,
            "order {id}: notified, dead-lettered or pending, once"
        );
    }
    assert!(
        cluster
            .range(&format!("{stream}:streamhost:outbox"))
            .is_empty(),
        "the outbox forwarded before the exit"
    );
}
