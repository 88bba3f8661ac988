//! The Redis under test: a private redis-server (or one given by URL), the
//! pre-filled input stream, and the group progress the runs are timed by.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use redis::Value;
use redis::aio::MultiplexedConnection;

/// A running Redis and how to reach it.
pub struct Server {
    /// Connection URL.
    pub url: String,
    /// The redis-server process id (from INFO; `None` if it is not local).
    pub pid: Option<u32>,
    /// Server version, e.g. "7.0.15".
    pub version: String,
    child: Option<(Child, tempfile::TempDir)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("url", &self.url).finish()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some((child, _)) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Server {
    /// Uses `url`, or starts a private redis-server on a free loopback port
    /// (no persistence: the benchmark measures the consumer, not fsync).
    pub async fn start(url: Option<&str>) -> Result<Self> {
        let (url, child) = match url {
            Some(url) => (url.to_owned(), None),
            None => {
                let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
                let dir = tempfile::tempdir()?;
                let child = Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting redis-server (is it installed?)")?;
                (format!("redis://127.0.0.1:{port}"), Some((child, dir)))
            }
        };
        let client = redis::Client::open(url.as_str())?;
        for _ in 0..250 {
            if let Ok(mut con) = client.get_multiplexed_async_connection().await {
                let info: String = redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut con)
                    .await?;
                let field = |name: &str| {
                    info.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                        .map(|v| v.trim().to_owned())
                };
                let version = field("redis_version").unwrap_or_default();
                // Only a server on this machine has its CPU time in our /proc.
                let local = url.contains("127.0.0.1") || url.contains("localhost");
                let pid = field("process_id")
                    .and_then(|p| p.parse().ok())
                    .filter(|_| local);
                return Ok(Self {
                    url,
                    pid,
                    version,
                    child,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("redis at {url} did not answer")
    }

    /// A new multiplexed connection.
    pub async fn connect(&self) -> Result<MultiplexedConnection> {
        Ok(redis::Client::open(self.url.as_str())?
            .get_multiplexed_async_connection()
            .await?)
    }

    /// A connection for blocking reads: the client's default response
    /// timeout (500 ms) would cut off an `XREADGROUP … BLOCK` waiting on an
    /// idle stream.
    pub async fn connect_blocking(&self) -> Result<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        Ok(redis::Client::open(self.url.as_str())?
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }
}

/// Order kinds cycled through by the generated events.
const KINDS: [&str; 4] = [
    "order.placed",
    "order.paid",
    "order.shipped",
    "order.cancelled",
];

/// Appends one generated order event (5 fields, ~100 bytes, like the orders
/// demo) to `pipe`, plus `sent_ns` when given.
pub fn add_order(pipe: &mut redis::Pipeline, stream: &str, i: usize, sent_ns: Option<u64>) {
    let cmd = pipe
        .cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("type")
        .arg(KINDS[i % 4])
        .arg("order_id")
        .arg(format!("o-{i:08}"))
        .arg("customer")
        // 1,000 customers, for the --order-by scenario's keys.
        .arg(format!("customer-{:04}", i % 1000))
        .arg("amount")
        .arg("1234.50")
        .arg("ts_ms")
        .arg("1716998413541");
    if let Some(ns) = sent_ns {
        cmd.arg("sent_ns").arg(ns);
    }
    cmd.ignore();
}

/// Replaces `stream` with `n` generated order events.
pub async fn prefill(con: &mut MultiplexedConnection, stream: &str, n: usize) -> Result<()> {
    let _: () = redis::cmd("DEL").arg(stream).query_async(con).await?;
    let mut i = 0;
    while i < n {
        let mut pipe = redis::pipe();
        for j in i..n.min(i + 1000) {
            add_order(&mut pipe, stream, j, None);
        }
        let _: () = pipe.query_async(con).await?;
        i += 1000;
    }
    Ok(())
}

/// Deletes `group` from `stream` (frees its pending list between runs).
pub async fn destroy_group(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<()> {
    let _: Value = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    Ok(())
}

/// Creates `group` on `stream` at the beginning, replacing an old one.
pub async fn fresh_group(con: &mut MultiplexedConnection, stream: &str, group: &str) -> Result<()> {
    // The stream may not exist yet: nothing to destroy then.
    let _ = destroy_group(con, stream, group).await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(con)
        .await?;
    Ok(())
}

/// (entries read, entries pending) of `group`, from XINFO GROUPS.
pub async fn group_progress(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<(u64, u64)> {
    let groups: Vec<Vec<Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(con)
        .await?;
    for g in groups {
        let mut name = String::new();
        let (mut read, mut pending) = (0u64, 0u64);
        let mut it = g.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match redis::from_redis_value::<String>(k)?.as_str() {
                "name" => name = redis::from_redis_value(v)?,
                "entries-read" => read = redis::from_redis_value::<Option<u64>>(v)?.unwrap_or(0),
                "pending" => pending = redis::from_redis_value(v)?,
                _ => {}
            }
        }
        if name == group {
            return Ok((read, pending));
        }
    }
    Ok((0, 0))
}

/// Whether `group` on `stream` has a consumer yet (the host is up and reading).
pub async fn has_consumer(con: &mut MultiplexedConnection, stream: &str, group: &str) -> bool {
    let r: redis::RedisResult<Vec<Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await;
    matches!(r, Ok(c) if !c.is_empty())
}

/// Deletes `keys` (emit targets and the like between runs).
pub async fn delete(con: &mut MultiplexedConnection, keys: &[&str]) -> Result<()> {
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(con).await?;
    }
    Ok(())
}
