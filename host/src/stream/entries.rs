//! Entries written and deleted outside the fenced scripts, for operators
//! and producers: appends in one pipelined round trip per batch of `XADD`s
//! (with an optional approximate length cap), deletes by id, and the exact
//! cut of `trim --force`.

use redis::RedisResult;
use redis::aio::MultiplexedConnection;

/// Appends `entries` to `stream` in one pipeline and returns their new ids
/// in order.
///
/// `XADD stream [MAXLEN ~ maxlen] * field value …` per entry.
pub async fn add_batch(
    con: &mut MultiplexedConnection,
    stream: &str,
    maxlen: Option<u64>,
    entries: &[Vec<(Vec<u8>, Vec<u8>)>],
) -> RedisResult<Vec<String>> {
    let mut pipe = redis::pipe();
    for fields in entries {
        let cmd = pipe.cmd("XADD").arg(stream);
        if let Some(n) = maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*");
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
    }
    pipe.query_async(con).await
}

/// Deletes `ids` from `stream`; returns how many were there.
///
/// `XDEL stream id …`.
pub async fn delete(
    con: &mut MultiplexedConnection,
    stream: &str,
    ids: &[&str],
) -> RedisResult<u64> {
    redis::cmd("XDEL")
        .arg(stream)
        .arg(ids)
        .query_async(con)
        .await
}

/// Removes every entry of `stream` older than `id`, whatever the groups
/// still need (what `host trim --force` does); returns how many.
///
/// `XTRIM stream MINID id`.
pub async fn cut_below(
    con: &mut MultiplexedConnection,
    stream: &str,
    id: &str,
) -> RedisResult<u64> {
    redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(id)
        .query_async(con)
        .await
}
