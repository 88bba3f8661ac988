//! Where entry payloads are read: the size-bounded fast connection
//! ([`super::wire`]), over whatever the endpoint speaks (TCP, TLS, Unix),
//! with the entry limits applied as the bytes arrive.

use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;
use tokio::sync::Mutex;

use super::cluster::Route;
use super::commands::GroupRef;
use super::link::{ErrorClass, classify};
use super::wire::EntryConnection;
use crate::config::RedisEndpoint;
use crate::vocab::entry::{Entry, EntryLimits};

/// Reads entries with their payloads, within the entry limits. Shared
/// (`&self`), so an operation [`super::RedisLink::run`] may repeat can use
/// it; one task owns it, and the lock is never contended.
#[derive(Debug)]
pub struct PayloadReader {
    route: Route,
    timeout: Duration,
    limits: EntryLimits,
    /// `None` until connected, and again after a connection-level error.
    conn: Mutex<Option<EntryConnection>>,
}

impl PayloadReader {
    /// A reader for the server of `endpoint`; `timeout` bounds each step of
    /// connecting and each reply (on top of BLOCK for reads).
    pub fn new(endpoint: Arc<RedisEndpoint>, timeout: Duration, limits: EntryLimits) -> Self {
        Self::routed(Route::Direct(endpoint), timeout, limits)
    }

    /// A reader along `route` (on a cluster, the node of the partition's
    /// slot, asked again at every reconnect).
    pub fn routed(route: Route, timeout: Duration, limits: EntryLimits) -> Self {
        Self {
            route,
            timeout,
            limits,
            conn: Mutex::new(None),
        }
    }

    async fn connection<'a>(
        &self,
        slot: &'a mut Option<EntryConnection>,
    ) -> RedisResult<&'a mut EntryConnection> {
        if slot.is_none() {
            let endpoint = self.route.endpoint().await?;
            match EntryConnection::connect(&endpoint, self.timeout).await {
                Ok(conn) => *slot = Some(conn),
                Err(e) => {
                    self.route.failed(&e);
                    return Err(e);
                }
            }
        }
        Ok(slot.as_mut().expect("connected just above"))
    }

    /// Runs `op` on the connection (opened first if need be) and drops the
    /// connection if `op` failed at the connection level.
    async fn on_connection<T>(
        &self,
        op: impl AsyncFnOnce(&mut EntryConnection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let slot = &mut *self.conn.lock().await;
        let result = match self.connection(slot).await {
            Ok(conn) => op(conn).await,
            Err(e) => Err(e),
        };
        self.check(slot, result)
    }

    /// `XREADGROUP … COUNT count BLOCK block STREAMS stream >`.
    pub async fn read_group(
        &self,
        g: &GroupRef,
        count: usize,
        block: Duration,
    ) -> RedisResult<Vec<Entry>> {
        let limits = self.limits;
        self.on_connection(async |conn| conn.read_group(g, count, block, limits).await)
            .await
    }

    /// The fenced `XREADGROUP … >` of a partition under a lease (never
    /// blocks; see [`EntryConnection::read_group_fenced`]).
    pub async fn read_group_fenced(&self, g: &GroupRef, count: usize) -> RedisResult<Vec<Entry>> {
        let limits = self.limits;
        self.on_connection(async |conn| conn.read_group_fenced(g, count, limits).await)
            .await
    }

    /// Waits up to `block` for an entry of `stream` after `after`; its id.
    pub async fn wait_after(
        &self,
        stream: &str,
        after: &str,
        block: Duration,
    ) -> RedisResult<Option<String>> {
        self.on_connection(async |conn| conn.wait_after(stream, after, block).await)
            .await
    }

    /// The payloads of `ids`, in order (`Trimmed` for those gone), delivery
    /// counts 0.
    pub async fn fetch(&self, stream: &str, ids: &[String]) -> RedisResult<Vec<Entry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let limits = self.limits;
        self.on_connection(async |conn| conn.fetch(stream, ids, limits).await)
            .await
    }
}

impl PayloadReader {
    /// Drops a connection whose last command failed at the connection
    /// level (a redirection included: the slot lives elsewhere now).
    fn check<T>(
        &self,
        slot: &mut Option<EntryConnection>,
        result: RedisResult<T>,
    ) -> RedisResult<T> {
        if let Err(e) = &result
            && classify(e) == ErrorClass::Connection
        {
            self.route.failed(e);
            *slot = None;
        }
        result
    }
}
