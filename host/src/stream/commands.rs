//! Typed wrappers over the stream commands the host issues; each documents the
//! raw command it sends.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::entry::{Entry, PendingRow, parse_entries, parse_xpending, parse_xreadgroup};

/// Where a stream/group/consumer triple lives; every command names it.
#[derive(Debug, Clone)]
pub struct GroupRef {
    /// Stream key.
    pub stream: String,
    /// Consumer group.
    pub group: String,
    /// This process's consumer name.
    pub consumer: String,
}

/// A reply that broke the documented shape (a bug or a very odd server).
fn shape_error(e: super::entry::ReplyError) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply", e.to_string()))
}

/// `XGROUP CREATE stream group start_id MKSTREAM` — `true` if created,
/// `false` if it already existed (BUSYGROUP).
pub async fn ensure_group(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    start_id: &str,
) -> RedisResult<bool> {
    let res: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&g.stream)
        .arg(&g.group)
        .arg(start_id)
        .arg("MKSTREAM")
        .query_async(con)
        .await;
    match res {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(e),
    }
}

/// `XREADGROUP GROUP group consumer COUNT count BLOCK ms STREAMS stream >`
pub async fn read_new(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    count: usize,
    block: Duration,
) -> RedisResult<Vec<Entry>> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&g.group)
        .arg(&g.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis().max(1) as u64)
        .arg("STREAMS")
        .arg(&g.stream)
        .arg(">")
        .query_async(con)
        .await?;
    parse_xreadgroup(reply, 1).map_err(shape_error)
}

/// `XPENDING stream group (after + count consumer` — this consumer's pending
/// entries with ids above `after` (`-` for the start).
pub async fn own_pending(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    after: &str,
    count: usize,
) -> RedisResult<Vec<PendingRow>> {
    let start = if after == "-" {
        after.to_owned()
    } else {
        format!("({after}")
    };
    let reply: Value = redis::cmd("XPENDING")
        .arg(&g.stream)
        .arg(&g.group)
        .arg(start)
        .arg("+")
        .arg(count)
        .arg(&g.consumer)
        .query_async(con)
        .await?;
    parse_xpending(reply).map_err(shape_error)
}

/// `XCLAIM stream group consumer 0 id…` — takes (or re-takes) the entries,
/// raising their delivery counters durably. Entries whose payload was trimmed
/// are dropped from the PEL by Redis and missing from the reply.
pub async fn claim(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    ids: &[String],
) -> RedisResult<Vec<Entry>> {
    let reply: Value = redis::cmd("XCLAIM")
        .arg(&g.stream)
        .arg(&g.group)
        .arg(&g.consumer)
        .arg(0)
        .arg(ids)
        .query_async(con)
        .await?;
    parse_entries(reply, 0, "XCLAIM").map_err(shape_error)
}
