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

/// `XGROUP CREATECONSUMER stream group consumer` — makes this consumer
/// visible to peers and operators before it has read anything (Redis 7.0
/// only registers a consumer once a read returns entries).
pub async fn register_consumer(con: &mut MultiplexedConnection, g: &GroupRef) -> RedisResult<()> {
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&g.stream)
        .arg(&g.group)
        .arg(&g.consumer)
        .query_async(con)
        .await?;
    Ok(())
}

/// `XREADGROUP GROUP group consumer COUNT count BLOCK ms STREAMS stream >`
pub fn read_new_cmd(g: &GroupRef, count: usize, block: Duration) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&g.group)
        .arg(&g.consumer)
        .arg("COUNT")
        .arg(count)
        .arg("BLOCK")
        .arg(block.as_millis().max(1) as u64)
        .arg("STREAMS")
        .arg(&g.stream)
        .arg(">");
    cmd
}

/// Sends [`read_new_cmd`] through redis-rs (the path for TLS URLs).
pub async fn read_new(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    count: usize,
    block: Duration,
) -> RedisResult<Vec<Entry>> {
    let reply: Value = read_new_cmd(g, count, block).query_async(con).await?;
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

/// What one `XAUTOCLAIM` page returned.
#[derive(Debug, Default)]
pub struct AutoClaimPage {
    /// Cursor for the next page (`0-0` when the sweep is complete).
    pub next: String,
    /// Entries now owned by this consumer (delivery counts not yet known).
    pub claimed: Vec<Entry>,
    /// Pending ids whose payload was trimmed; Redis removed them from the PEL.
    pub deleted: Vec<String>,
}

/// `XAUTOCLAIM stream group consumer min_idle_ms cursor COUNT count` (Redis 7
/// reply: `[next, entries, deleted-ids]`).
pub async fn autoclaim(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    min_idle: Duration,
    cursor: &str,
    count: usize,
) -> RedisResult<AutoClaimPage> {
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(&g.stream)
        .arg(&g.group)
        .arg(&g.consumer)
        .arg(min_idle.as_millis() as u64)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(con)
        .await?;
    let Value::Array(mut parts) = reply else {
        return Err(shape_error(super::entry::ReplyError::new(
            "XAUTOCLAIM",
            "not an array",
        )));
    };
    if parts.len() < 3 {
        return Err(shape_error(super::entry::ReplyError::new(
            "XAUTOCLAIM",
            "expected [cursor, entries, deleted] (Redis 7.0 or later is required)",
        )));
    }
    let deleted: Vec<String> = redis::from_redis_value(parts.pop().unwrap_or_default())?;
    let claimed =
        parse_entries(parts.pop().unwrap_or_default(), 0, "XAUTOCLAIM").map_err(shape_error)?;
    let next: String = redis::from_redis_value(parts.pop().unwrap_or_default())?;
    Ok(AutoClaimPage {
        next,
        claimed,
        deleted,
    })
}

/// `XPENDING stream group first last count consumer` — delivery counts of this
/// consumer's pending entries between two ids.
pub async fn own_pending_between(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    first: &str,
    last: &str,
    count: usize,
) -> RedisResult<Vec<PendingRow>> {
    let reply: Value = redis::cmd("XPENDING")
        .arg(&g.stream)
        .arg(&g.group)
        .arg(first)
        .arg(last)
        .arg(count)
        .arg(&g.consumer)
        .query_async(con)
        .await?;
    parse_xpending(reply).map_err(shape_error)
}

/// Runs [`super::scripts::CLAIM_OWNED`]: re-claims `ids` still pending for
/// this consumer to `target`, with their idle time set to `idle` (or reset to
/// zero), without counting a delivery. Returns how many were still ours.
pub async fn claim_owned(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    target: &str,
    idle: Option<Duration>,
    ids: &[impl AsRef<str>],
) -> RedisResult<u64> {
    let mut call = super::scripts::CLAIM_OWNED.key(&g.stream);
    call.arg(&g.group)
        .arg(&g.consumer)
        .arg(target)
        .arg(idle.map(|d| d.as_millis().to_string()).unwrap_or_default());
    for id in ids {
        call.arg(id.as_ref());
    }
    call.invoke_async(con).await
}
