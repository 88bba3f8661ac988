//! Three Redis Sentinels watching one master (`mymaster`), started from
//! config files of their own on loopback, quick to fail over: a master down
//! for a second is replaced by its replica.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;

/// The sentinels, killed on drop.
#[derive(Debug)]
pub struct Sentinels {
    ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Sentinels {
    /// Three sentinels monitoring the master on `master_port` as `mymaster`,
    /// once all three know it.
    pub fn watch(master_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ports = Vec::new();
        let mut children = Vec::new();
        for i in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 2\nsentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\nsentinel parallel-syncs mymaster 1\n",
                    dir.path().display()
                ),
            )
            .expect("sentinel config");
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning redis-server --sentinel");
            ports.push(port);
            children.push(child);
        }
        let sentinels = Self {
            ports,
            children,
            _dir: dir,
        };
        eventually(
            Duration::from_secs(30),
            "the sentinels see the master and its replica",
            || {
                sentinels
                    .ports
                    .iter()
                    .all(|p| {
                        let replicas: Option<Vec<redis::Value>> =
                            redis::Client::open(format!("redis://127.0.0.1:{p}"))
                                .and_then(|c| c.get_connection())
                                .and_then(|mut c| {
                                    redis::cmd("SENTINEL")
                                        .arg("REPLICAS")
                                        .arg("mymaster")
                                        .query(&mut c)
                                })
                                .ok();
                        replicas.is_some_and(|r| !r.is_empty())
                    })
                    .then_some(())
            },
        );
        sentinels
    }

    /// `127.0.0.1:a,127.0.0.1:b,127.0.0.1:c`, for `--sentinel`.
    pub fn flag(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> Option<u16> {
        self.ports.iter().find_map(|p| {
            let mut c = redis::Client::open(format!("redis://127.0.0.1:{p}"))
                .and_then(|c| c.get_connection())
                .ok()?;
            let (_, port): (String, u16) = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg("mymaster")
                .query(&mut c)
                .ok()?;
            Some(port)
        })
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
