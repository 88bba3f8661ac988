//! A private `redis-server` on a free loopback port, with AOF on (fsync every
//! write) so tests can kill and restart it without losing acknowledged data;
//! or one that speaks only TLS on that port ([`RedisServer::start_tls`]).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::{Commands, Connection, Value};

use super::eventually;
use super::pki::{Identity, Pki};

/// An entry's field/value pairs as raw bytes.
pub type RawFields = Vec<(Vec<u8>, Vec<u8>)>;

/// A running redis-server owned by one test; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `--tls-*` arguments of a TLS-only server.
    tls: Option<Vec<String>>,
    /// More arguments (a cluster node's).
    extra: Vec<String>,
}

/// Whether a TLS server asks clients for a certificate (`tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Never asks.
    No,
    /// Asks, and refuses a client without one signed by the CA.
    Required,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server that speaks only TLS on its port, presenting
    /// `server` and checking client certificates against `pki`'s CA. The
    /// test's own connections ([`RedisServer::conn`]) go through the Unix
    /// socket, so they never depend on the TLS being tested.
    pub fn start_tls(pki: &Pki, server: &Identity, clients: ClientCerts) -> Self {
        let path = |p: &std::path::Path| p.display().to_string();
        let auth = match clients {
            ClientCerts::No => "no",
            ClientCerts::Required => "yes",
        };
        Self::start_with(Some(vec![
            "--tls-cert-file".into(),
            path(&server.cert),
            "--tls-key-file".into(),
            path(&server.key),
            "--tls-ca-cert-file".into(),
            path(&pki.ca()),
            "--tls-auth-clients".into(),
            auth.into(),
        ]))
    }

    /// Starts a Redis Cluster node (not yet part of a cluster) on a free
    /// port below 55536 whose bus port (port + 10000) is free too.
    pub fn start_cluster_node() -> Self {
        let extra: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..20 {
            let port = free_port();
            if port >= 55536 || TcpListener::bind(("127.0.0.1", port + 10000)).is_err() {
                continue;
            }
            let mut server = Self {
                port,
                dir: tempfile::tempdir().expect("tempdir"),
                child: None,
                tls: None,
                extra: extra.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start a redis-server cluster node");
    }

    fn start_with(tls: Option<Vec<String>>) -> Self {
        for _ in 0..5 {
            let mut server = Self {
                port: free_port(),
                dir: tempfile::tempdir().expect("tempdir"),
                child: None,
                tls: tls.clone(),
                extra: Vec::new(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "could not start redis-server (is it installed, with TLS support? `apt-get install redis-server`)"
        );
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let listen: Vec<&str> = match &self.tls {
            None => vec!["--port", &port],
            Some(tls) => ["--port", "0", "--tls-port", &port]
                .into_iter()
                .chain(tls.iter().map(String::as_str))
                .collect(),
        };
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--unixsocket")
            .arg(self.socket_path())
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning redis-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if let Ok(mut c) =
                redis::Client::open(self.admin_url()).and_then(|c| c.get_connection())
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://…` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port (the TLS port of a TLS server).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the test's own connections go: the port, or for a TLS server
    /// the Unix socket.
    fn admin_url(&self) -> String {
        match self.tls {
            None => self.url(),
            Some(_) => self.unix_url(),
        }
    }

    /// The server's Unix socket.
    pub fn socket_path(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `redis+unix://<socket>`: the same server over its Unix socket.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", self.socket_path().display())
    }

    /// Redis's own memory peak (`used_memory_peak` from `INFO memory`).
    pub fn memory_peak(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut self.conn())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory_peak:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory_peak in INFO memory")
    }

    /// A fresh synchronous connection for assertions.
    pub fn conn(&self) -> Connection {
        eventually(Duration::from_secs(10), "redis connection", || {
            redis::Client::open(self.admin_url())
                .ok()?
                .get_connection()
                .ok()
        })
    }

    /// SIGKILLs the server (no shutdown save; AOF keeps what was acknowledged).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server failed to restart on port {}",
            self.port
        );
    }

    /// XADDs one entry; returns its id.
    pub fn add(&self, stream: &str, fields: &[(&str, &str)]) -> String {
        let mut c = self.conn();
        c.xadd(stream, "*", fields).expect("XADD")
    }

    /// XADDs one entry with raw (binary) field names and values; returns its id.
    pub fn add_raw(&self, stream: &str, fields: &RawFields) -> String {
        let mut c = self.conn();
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(k.as_slice()).arg(v.as_slice());
        }
        cmd.query(&mut c).expect("XADD")
    }

    /// Entries of a stream with their fields as raw bytes.
    pub fn range_raw(&self, stream: &str) -> Vec<(String, RawFields)> {
        let mut c = self.conn();
        let items: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .expect("XRANGE");
        items
            .into_iter()
            .map(|(id, flat)| {
                let mut it = flat.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                (id, pairs)
            })
            .collect()
    }

    /// Entries of a stream as (id, fields as lossy strings).
    pub fn range(&self, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut c = self.conn();
        let v: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query(&mut c)
            .expect("XRANGE");
        let Value::Array(items) = v else {
            return Vec::new();
        };
        items
            .into_iter()
            .map(|item| {
                let (id, flat): (String, Vec<Vec<u8>>) =
                    redis::from_redis_value(item).expect("entry");
                let fields = flat
                    .chunks(2)
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(&kv[0]).into_owned(),
                            String::from_utf8_lossy(&kv[1]).into_owned(),
                        )
                    })
                    .collect();
                (id, fields)
            })
            .collect()
    }

    /// Waits until `stream` holds exactly `n` entries and returns them.
    pub fn wait_for_len(&self, stream: &str, n: usize) -> Vec<(String, Vec<(String, String)>)> {
        eventually(
            Duration::from_secs(60),
            &format!("{n} entries in {stream}"),
            || {
                let r = self.range(stream);
                (r.len() == n).then_some(r)
            },
        )
    }

    /// Acts as a raw consumer: creates `group` at `start` if needed, and
    /// reads up to `count` new entries as `consumer` without acking them.
    pub fn read_as(&self, stream: &str, group: &str, consumer: &str, count: usize) {
        let mut c = self.conn();
        let _: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query(&mut c);
        let _: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query(&mut c)
            .expect("XREADGROUP");
    }

    /// XACKs ids in a group.
    pub fn ack<S: AsRef<str>>(&self, stream: &str, group: &str, ids: &[S]) {
        let mut c = self.conn();
        let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        let _: u64 = redis::cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(ids)
            .query(&mut c)
            .expect("XACK");
    }

    /// Waits (up to `timeout`) until nothing is pending in `group`.
    pub fn wait_until_settled(&self, stream: &str, group: &str, timeout: Duration) {
        eventually(
            timeout,
            &format!("nothing pending in {stream}/{group}"),
            || (self.pending(stream, group) == 0).then_some(()),
        );
    }

    /// Number of entries pending in a group (XPENDING summary). Waits up to
    /// ten seconds for the group to be created; any other error fails the test.
    pub fn pending(&self, stream: &str, group: &str) -> usize {
        let mut c = self.conn();
        let reply: Value = wait_for_group(stream, group, || {
            redis::cmd("XPENDING").arg(stream).arg(group).query(&mut c)
        });
        match reply {
            Value::Array(items) => match items.first() {
                Some(Value::Int(n)) => *n as usize,
                other => panic!("unexpected XPENDING summary {other:?}"),
            },
            other => panic!("unexpected XPENDING reply {other:?}"),
        }
    }

    /// Ids pending in a group, sorted.
    pub fn pending_ids(&self, stream: &str, group: &str) -> Vec<String> {
        let mut c = self.conn();
        let rows: Vec<(String, String, u64, u32)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg("-")
            .arg("+")
            .arg(100_000)
            .query(&mut c)
            .expect("XPENDING range");
        let mut ids: Vec<String> = rows.into_iter().map(|r| r.0).collect();
        ids.sort();
        ids
    }

    /// Names of the consumers of a group. Waits up to ten seconds for the
    /// group to be created; any other error fails the test.
    pub fn consumers(&self, stream: &str, group: &str) -> Vec<String> {
        let mut c = self.conn();
        let consumers: Vec<Vec<Value>> = wait_for_group(stream, group, || {
            redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(stream)
                .arg(group)
                .query(&mut c)
        });
        consumers
            .into_iter()
            .map(|c| {
                let name = c.get(1).cloned().expect("consumer name");
                redis::from_redis_value::<String>(name).expect("a name")
            })
            .collect()
    }

    /// `entries-read` of a group (how many entries it has been delivered).
    pub fn entries_read(&self, stream: &str, group: &str) -> Option<u64> {
        let mut c = self.conn();
        let groups: Vec<Vec<Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query(&mut c)
            .ok()?;
        for g in groups {
            let mut it = g.into_iter();
            let mut name = None;
            let mut read = None;
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                let k: String = redis::from_redis_value(k).ok()?;
                match k.as_str() {
                    "name" => name = redis::from_redis_value::<String>(v).ok(),
                    "entries-read" => read = redis::from_redis_value::<u64>(v).ok(),
                    _ => {}
                }
            }
            if name.as_deref() == Some(group) {
                return read;
            }
        }
        None
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `query` until it stops failing with NOGROUP (for at most ten
/// seconds: the group may not be created yet); any other error fails the test.
fn wait_for_group<T>(
    stream: &str,
    group: &str,
    mut query: impl FnMut() -> redis::RedisResult<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        match query() {
            Ok(v) => return v,
            Err(e)
                if (e.code() == Some("NOGROUP") || e.to_string().contains("no such key"))
                    && start.elapsed() < Duration::from_secs(10) =>
            {
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => panic!("querying group {group} of {stream}: {e}"),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
