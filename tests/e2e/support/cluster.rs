//! A private Redis Cluster: six `redis-server --cluster-enabled yes` nodes
//! on loopback (three masters, a replica each), made one cluster with
//! `redis-cli --cluster create`, with ways to find the node of a key, kill a
//! master (its replica is promoted) and fail one over by hand.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use redis::{Connection, Value};

use super::{RedisServer, eventually};

/// A running six-node cluster owned by one test; every node killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Nodes this test killed (their servers are gone).
    dead: Vec<usize>,
}

/// Redis Cluster's CRC16 (XMODEM), for the slot of a key in the tests.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(bytes) {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

impl RedisCluster {
    /// Starts six nodes and joins them: three masters with a replica each;
    /// returns once every slot is served and every replica is in sync.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6).map(|_| RedisServer::start_cluster_node()).collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self {
            nodes,
            dead: Vec::new(),
        };
        cluster.wait_healthy();
        cluster
    }

    /// Waits until every live node says `cluster_state:ok`, every slot has a
    /// live master, and each master has a replica whose link is up.
    pub fn wait_healthy(&self) {
        eventually(Duration::from_secs(60), "a healthy cluster", || {
            for i in self.live() {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut self.nodes[i].conn())
                    .ok()?;
                if !info.contains("cluster_state:ok") {
                    return None;
                }
            }
            let masters = self.masters();
            (masters.len() == 3 && masters.values().all(|i| self.replicas_in_sync(*i) >= 1))
                .then_some(())
        });
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| !self.dead.contains(i))
    }

    /// `redis://…` of a live node: the seed a host is given.
    pub fn seed_url(&self) -> String {
        self.nodes[self.live().next().expect("a live node")].url()
    }

    /// Each live master's index, by the first slot of its range.
    fn masters(&self) -> HashMap<u16, usize> {
        let Some(i) = self.live().next() else {
            return HashMap::new();
        };
        let Ok(slots) = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Value>(&mut self.nodes[i].conn())
        else {
            return HashMap::new();
        };
        let Value::Array(ranges) = slots else {
            return HashMap::new();
        };
        let mut out = HashMap::new();
        for range in ranges {
            let Value::Array(items) = range else { continue };
            let (Some(Value::Int(first)), Some(Value::Array(master))) =
                (items.first(), items.get(2))
            else {
                continue;
            };
            let Some(Value::Int(port)) = master.get(1) else {
                continue;
            };
            if let Some(index) = self
                .live()
                .find(|n| i64::from(self.nodes[*n].port()) == *port)
            {
                out.insert(*first as u16, index);
            }
        }
        out
    }

    fn replicas_in_sync(&self, master: usize) -> usize {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut self.nodes[master].conn())
            .unwrap_or_default();
        info.lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .count()
    }

    /// The index of the live master that serves `key`'s slot.
    pub fn master_of(&self, key: &str) -> usize {
        let slot = key_slot(key);
        eventually(Duration::from_secs(30), "the master of a slot", || {
            let i = self.live().next()?;
            let slots: Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query(&mut self.nodes[i].conn())
                .ok()?;
            let Value::Array(ranges) = slots else {
                return None;
            };
            ranges.into_iter().find_map(|range| {
                let Value::Array(items) = range else {
                    return None;
                };
                let (Some(Value::Int(a)), Some(Value::Int(b)), Some(Value::Array(m))) =
                    (items.first(), items.get(1), items.get(2))
                else {
                    return None;
                };
                let Some(Value::Int(port)) = m.get(1) else {
                    return None;
                };
                ((*a..=*b).contains(&i64::from(slot)))
                    .then(|| {
                        self.live()
                            .find(|n| i64::from(self.nodes[*n].port()) == *port)
                    })
                    .flatten()
            })
        })
    }

    /// The node that serves `key` now.
    pub fn node_of(&self, key: &str) -> &RedisServer {
        &self.nodes[self.master_of(key)]
    }

    /// A connection to the node that serves `key` now.
    pub fn conn_for(&self, key: &str) -> Connection {
        self.node_of(key).conn()
    }

    /// SIGKILLs the master that serves `key`; its replica takes over once
    /// the others notice (`cluster-node-timeout`). Returns its index.
    pub fn kill_master_of(&mut self, key: &str) -> usize {
        let i = self.master_of(key);
        self.nodes[i].kill();
        self.dead.push(i);
        i
    }

    /// Waits until `key`'s slot is served by a live master again.
    pub fn wait_served(&self, key: &str) {
        eventually(Duration::from_secs(60), "the slot served again", || {
            let mut c = self.conn_for(key);
            redis::cmd("PING").query::<String>(&mut c).ok()?;
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).ok()?;
            info.contains("cluster_state:ok").then_some(())
        });
    }

    /// A manual `CLUSTER FAILOVER` of the master serving `key`: one of its
    /// replicas takes over without losing a write. Returns the new master.
    pub fn fail_over(&self, key: &str) -> usize {
        let master = self.master_of(key);
        let port = i64::from(self.nodes[master].port());
        let replica = self
            .live()
            .find(|i| {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut self.nodes[*i].conn())
                    .unwrap_or_default();
                info.contains("role:slave") && info.contains(&format!("master_port:{port}"))
            })
            .expect("a replica of the master");
        let () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut self.nodes[replica].conn())
            .expect("CLUSTER FAILOVER");
        eventually(Duration::from_secs(30), "the replica promoted", || {
            (self.master_of(key) == replica).then_some(())
        });
        replica
    }

    /// Entries of `stream`, from the node that serves it.
    pub fn range(&self, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
        self.node_of(stream).range(stream)
    }

    /// Pending entries of `group` on `stream`.
    pub fn pending(&self, stream: &str, group: &str) -> usize {
        self.node_of(stream).pending(stream, group)
    }
}

impl RedisCluster {
    fn node_id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[i].conn())
            .expect("CLUSTER MYID")
    }

    /// Moves `key`'s slot to another master the way `redis-cli --cluster
    /// reshard` does — `SETSLOT … IMPORTING` on the target, `MIGRATING` on
    /// the source, `MIGRATE` of its keys a few at a time (pausing `pause`
    /// between batches, so clients meet the slot half-moved), then `SETSLOT
    /// … NODE` everywhere. Returns (source, target).
    pub fn migrate_slot_of(&self, key: &str, pause: Duration) -> (usize, usize) {
        let slot = key_slot(key);
        let source = self.master_of(key);
        let target = *self
            .masters()
            .values()
            .find(|i| **i != source)
            .expect("another master");
        let (source_id, target_id) = (self.node_id(source), self.node_id(target));
        let setslot = |node: usize, how: &str, id: &str| {
            let () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(how)
                .arg(id)
                .query(&mut self.nodes[node].conn())
                .unwrap_or_else(|e| panic!("SETSLOT {slot} {how} on node {node}: {e}"));
        };
        setslot(target, "IMPORTING", &source_id);
        setslot(source, "MIGRATING", &target_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(2)
                .query(&mut self.nodes[source].conn())
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[target].port())
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut self.nodes[source].conn())
                .expect("MIGRATE");
            std::thread::sleep(pause);
        }
        setslot(target, "NODE", &target_id);
        setslot(source, "NODE", &target_id);
        for i in self.masters().into_values() {
            if i != source && i != target {
                setslot(i, "NODE", &target_id);
            }
        }
        eventually(
            Duration::from_secs(30),
            "the slot served by its new master",
            || (self.master_of(key) == target).then_some(()),
        );
        (source, target)
    }
}
