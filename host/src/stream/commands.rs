//! Typed wrappers over the stream commands the host issues; each documents the
//! raw command it sends.

use std::time::Duration;

use redis::RedisResult;
use redis::aio::MultiplexedConnection;

use crate::vocab::partition::Fence;

/// Where a stream/group/consumer triple lives; every command names it.
#[derive(Debug, Clone)]
pub struct GroupRef {
    /// Stream key.
    pub stream: String,
    /// Consumer group.
    pub group: String,
    /// This process's consumer name.
    pub consumer: String,
    /// The lease every write for this group is fenced on (a partition read
    /// under `--assign lease`); `None` writes unfenced.
    pub fence: Option<Fence>,
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
