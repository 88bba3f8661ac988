//! Behind Sentinel (`--sentinel`, `--sentinel-master`): the host finds the
//! master through three sentinels and follows it when it dies and its
//! replica is promoted, mid-run — every entry left in the stream ends with
//! exactly one receipt (written atomically with its ack), nothing pending.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::sentinel::Sentinels;
use crate::support::{Host, RedisServer, eventually, fields_map, plugin};

#[test]
fn a_host_behind_sentinel_rides_a_dead_master_to_its_promoted_replica() {
    let mut master = RedisServer::start();
    let replica = RedisServer::start();
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(master.port())
        .query(&mut replica.conn())
        .unwrap();
    let sentinels = Sentinels::watch(master.port());
    let master_port = master.port();
    let _host = Host::spawn(&[
        "run",
        "--sentinel",
        &sentinels.flag(),
        "--sentinel-master",
        "mymaster",
        "--stream",
        "orders",
        "--group",
        "g",
        "--plugin",
        plugin("misbehave").to_str().unwrap(),
        "--plugin-config",
        "emit_to=out",
        "--block",
        "200ms",
        "--claim-idle",
        "2s",
        "--handler-timeout",
        "1s",
    ]);
    let started = Instant::now();
    let mut killed_at = None;
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(12) {
        if let Some(port) = sentinels.master_port() {
            let node = match port {
                p if p == master_port && killed_at.is_none() => Some(&master),
                p if p == replica.port() => Some(&replica),
                _ => None,
            };
            if let Some(node) = node {
                let added: redis::RedisResult<String> = redis::cmd("XADD")
                    .arg("orders")
                    .arg("*")
                    .arg(&[("action", "emit"), ("n", &n.to_string())])
                    .query(&mut node.conn());
                if added.is_ok() {
                    n += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(4) {
            master.kill();
            killed_at = Some(Instant::now());
        }
    }
    eventually(Duration::from_secs(30), "the replica promoted", || {
        (sentinels.master_port() == Some(replica.port())).then_some(())
    });
    eventually(Duration::from_secs(60), "every entry committed", || {
        let entries = replica.range("orders").len();
        (entries > 0
            && replica.range("out").len() >= entries
            && replica.pending("orders", "g") == 0)
            .then_some(())
    });
    let entries: Vec<String> = replica
        .range("orders")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut receipts: HashMap<String, usize> = HashMap::new();
    for (_, f) in replica.range("out") {
        *receipts
            .entry(fields_map(&f)["source_id"].to_owned())
            .or_default() += 1;
    }
    for id in &entries {
        assert_eq!(receipts.get(id), Some(&1), "{id} has one receipt");
    }
    assert_eq!(
        receipts.len(),
        entries.len(),
        "no receipt for an entry not in the stream"
    );
    assert!(entries.len() > 200, "{} entries", entries.len());
}
