//! A Redis connection that heals itself: reconnects with capped, jittered
//! backoff and logs one line per state change (lost / restored), shared by
//! every link of one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, ServerErrorKind};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// Whether Redis is reachable, as last observed by any link; turns a storm of
/// failures from several tasks into one "lost" and one "restored" line.
#[derive(Debug)]
pub struct LinkHealth {
    up: AtomicBool,
    /// Outages seen so far; a connection opened before the latest outage is
    /// stale, and its failure is not news.
    outages: AtomicU64,
    target: String,
}

impl LinkHealth {
    /// Health for the server at `target` (host:port, never credentials).
    pub fn new(target: String) -> Arc<Self> {
        Arc::new(Self {
            up: AtomicBool::new(true),
            outages: AtomicU64::new(0),
            target,
        })
    }

    /// Whether the last observation was a working connection.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    fn mark_down(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(redis = %self.target, error = why, "redis connection lost; retrying with backoff");
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(redis = %self.target, "redis connection restored");
        }
    }
}

/// How a failed command should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The connection is gone or unusable: reconnect and retry.
    Connection,
    /// The server is up but temporarily refusing (loading, failover): retry later.
    Transient,
    /// A real answer from the server; retrying the same command will not help.
    Permanent,
}

/// Classifies a redis error for retry decisions.
pub fn classify(err: &RedisError) -> ErrorClass {
    if err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
    {
        return ErrorClass::Connection;
    }
    match err.kind() {
        redis::ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::ReadOnly,
        ) => ErrorClass::Transient,
        redis::ErrorKind::Io | redis::ErrorKind::AuthenticationFailed => ErrorClass::Connection,
        _ => ErrorClass::Permanent,
    }
}

/// One logical connection (the reader's or the committer's).
#[derive(Debug)]
pub struct RedisLink {
    client: Client,
    config: AsyncConnectionConfig,
    /// The connection and the outage count when it was opened.
    conn: Option<(MultiplexedConnection, u64)>,
    health: Arc<LinkHealth>,
    backoff: Backoff,
}

impl RedisLink {
    /// A link whose commands time out after `response_timeout`.
    pub fn new(client: Client, health: Arc<LinkHealth>, response_timeout: Duration) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(response_timeout));
        Self {
            client,
            config,
            conn: None,
            health,
            backoff: Backoff::for_redis(),
        }
    }

    /// A working connection, reconnecting (with backoff) as long as needed.
    /// `None` once `cancel` fires.
    pub async fn connection(
        &mut self,
        cancel: &CancellationToken,
    ) -> Option<MultiplexedConnection> {
        loop {
            if let Some((conn, _)) = &self.conn {
                return Some(conn.clone());
            }
            if self.backoff.attempts() > 0 {
                let delay = self.backoff.next_delay();
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            } else {
                self.backoff.next_delay();
            }
            let connect = self
                .client
                .get_multiplexed_async_connection_with_config(&self.config);
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                r = connect => r,
            };
            match result {
                // "Restored" is only said once a command succeeds: a server
                // still loading its AOF accepts connections but not commands.
                Ok(conn) => self.conn = Some((conn, self.health.outages())),
                Err(e) => self.health.mark_down(&e.to_string()),
            }
        }
    }

    /// Where and how this link connects.
    pub fn connection_info(&self) -> &redis::ConnectionInfo {
        self.client.get_connection_info()
    }

    /// Records a failed command: connection-class errors drop the connection
    /// so the next [`RedisLink::connection`] reconnects.
    pub fn failed(&mut self, err: &RedisError) -> ErrorClass {
        let class = classify(err);
        // A connection from before an outage another link already reported
        // (and maybe recovered from) dies quietly: it is old news.
        let stale = self
            .conn
            .as_ref()
            .is_some_and(|(_, opened_at)| *opened_at < self.health.outages());
        if class != ErrorClass::Permanent && !stale {
            self.health.mark_down(&err.to_string());
        }
        if class == ErrorClass::Connection {
            self.conn = None;
        }
        class
    }

    /// Records a successful command.
    pub fn succeeded(&mut self) {
        self.health.mark_up();
        self.backoff.reset();
    }

    /// Waits out one backoff step (after a transient error); `false` if cancelled.
    pub async fn pause(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.backoff.next_delay();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// `host:port` of a client's server, for logs (credentials are never shown).
pub fn describe_target(client: &Client) -> String {
    client.get_connection_info().addr().to_string()
}
