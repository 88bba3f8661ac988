//! Where entry payloads are read: the size-bounded fast connection
//! ([`super::wire`]) when the URL allows it, the generic client otherwise
//! (TLS), with the entry limits applied either way.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ConnectionInfo, RedisResult};
use tokio::sync::Mutex;

use super::commands::{self, GroupRef};
use super::entry::{Entry, EntryLimits};
use super::link::{ErrorClass, classify};
use super::wire::EntryConnection;

#[derive(Debug, Default)]
enum Path {
    /// Not connected yet (or dropped after an error).
    #[default]
    Disconnected,
    /// The fast, size-bounded connection.
    Fast(EntryConnection),
    /// The URL needs what the fast connection lacks (TLS): the generic client.
    Generic,
}

/// Reads entries with their payloads, within the entry limits. Shared
/// (`&self`), so an operation [`super::RedisLink::run`] may repeat can use
/// it; one task owns it, and the lock is never contended.
#[derive(Debug)]
pub struct PayloadReader {
    info: ConnectionInfo,
    timeout: Duration,
    limits: EntryLimits,
    path: Mutex<Path>,
}

impl PayloadReader {
    /// A reader for the server `info` names; `timeout` bounds each step of
    /// connecting and each reply (on top of BLOCK for reads).
    pub fn new(info: ConnectionInfo, timeout: Duration, limits: EntryLimits) -> Self {
        Self {
            info,
            timeout,
            limits,
            path: Mutex::new(Path::Disconnected),
        }
    }

    async fn connect(&self, path: &mut Path) -> RedisResult<()> {
        if matches!(path, Path::Disconnected) {
            *path = match EntryConnection::connect(&self.info, self.timeout).await? {
                Some(fast) => Path::Fast(fast),
                None => Path::Generic,
            };
        }
        Ok(())
    }

    /// `XREADGROUP … COUNT count BLOCK block STREAMS stream >`; `con` serves
    /// the generic path.
    pub async fn read_group(
        &self,
        con: &mut MultiplexedConnection,
        g: &GroupRef,
        count: usize,
        block: Duration,
    ) -> RedisResult<Vec<Entry>> {
        let path = &mut *self.path.lock().await;
        self.connect(path).await?;
        let limits = self.limits;
        let read = match path {
            Path::Fast(fast) => fast.read_group(g, count, block, limits).await,
            _ => commands::read_new(con, g, count, block, limits).await,
        };
        check(path, read)
    }

    /// The payloads of `ids`, in order (`Trimmed` for those gone), delivery
    /// counts 0; `con` serves the generic path.
    pub async fn fetch(
        &self,
        con: &mut MultiplexedConnection,
        stream: &str,
        ids: &[String],
    ) -> RedisResult<Vec<Entry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let path = &mut *self.path.lock().await;
        self.connect(path).await?;
        let limits = self.limits;
        let fetched = match path {
            Path::Fast(fast) => fast.fetch(stream, ids, limits).await,
            _ => commands::fetch(con, stream, ids, limits).await,
        };
        check(path, fetched)
    }
}

/// Drops a fast connection whose last command failed at the connection level.
fn check<T>(path: &mut Path, result: RedisResult<T>) -> RedisResult<T> {
    if let Err(e) = &result
        && matches!(path, Path::Fast(_))
        && classify(e) == ErrorClass::Connection
    {
        *path = Path::Disconnected;
    }
    result
}
