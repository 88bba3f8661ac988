//! Typed wrappers over the stream commands the host issues; each documents the
//! raw command it sends.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::entry::{
    Entry, EntryLimits, PendingRow, parse_entries, parse_xpending, parse_xreadgroup,
};

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

/// Sends [`read_new_cmd`] through redis-rs (the path for TLS URLs); payloads
/// over `limits` are withheld once decoded.
pub async fn read_new(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    count: usize,
    block: Duration,
    limits: EntryLimits,
) -> RedisResult<Vec<Entry>> {
    let reply: Value = read_new_cmd(g, count, block).query_async(con).await?;
    let mut entries = parse_xreadgroup(reply, 1).map_err(shape_error)?;
    for e in &mut entries {
        limits.apply(e);
    }
    Ok(entries)
}

/// `XPENDING stream group (after + count [consumer]` — a page of the
/// group's pending entries (only `consumer`'s, if given) with ids above
/// `after` (`-` for the start), with owner, idle time and delivery count.
pub async fn pending_page(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    after: &str,
    count: usize,
    consumer: Option<&str>,
) -> RedisResult<Vec<PendingRow>> {
    let start = if after == "-" {
        after.to_owned()
    } else {
        format!("({after}")
    };
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(&g.stream)
        .arg(&g.group)
        .arg(start)
        .arg("+")
        .arg(count);
    if let Some(consumer) = consumer {
        cmd.arg(consumer);
    }
    let reply: Value = cmd.query_async(con).await?;
    parse_xpending(reply).map_err(shape_error)
}

/// `XRANGE stream id id` for each id, pipelined, through redis-rs (the path
/// for TLS URLs): entries in the order of `ids`, [`super::entry::Payload::Trimmed`] for
/// those gone, payloads over `limits` withheld. Delivery counts are 0.
pub async fn fetch(
    con: &mut MultiplexedConnection,
    stream: &str,
    ids: &[String],
    limits: EntryLimits,
) -> RedisResult<Vec<Entry>> {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("XRANGE").arg(stream).arg(id).arg(id);
    }
    let replies: Vec<Value> = pipe.query_async(con).await?;
    let mut out = Vec::with_capacity(ids.len());
    for (id, reply) in ids.iter().zip(replies) {
        let found = parse_entries(reply, 0, "XRANGE").map_err(shape_error)?;
        let mut entry = Entry::ranged(id, found);
        limits.apply(&mut entry);
        out.push(entry);
    }
    Ok(out)
}
