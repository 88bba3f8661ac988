//! Consumer-group administration for operators: create, destroy, move.

use redis::RedisResult;
use redis::aio::MultiplexedConnection;

/// `XGROUP CREATE stream group start [MKSTREAM]` — `false` if the group
/// already exists (BUSYGROUP).
pub async fn create(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    start: &str,
    mkstream: bool,
) -> RedisResult<bool> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE").arg(stream).arg(group).arg(start);
    if mkstream {
        cmd.arg("MKSTREAM");
    }
    match cmd.query_async::<()>(con).await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(e),
    }
}

/// `XGROUP DESTROY stream group` — `true` if it existed.
pub async fn destroy(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> RedisResult<bool> {
    let n: u64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    Ok(n > 0)
}

/// `XGROUP SETID stream group id`.
pub async fn set_id(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    id: &str,
) -> RedisResult<()> {
    redis::cmd("XGROUP")
        .arg("SETID")
        .arg(stream)
        .arg(group)
        .arg(id)
        .query_async(con)
        .await
}
