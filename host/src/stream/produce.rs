//! Appending entries for operators (`host produce`): one pipelined round
//! trip per batch of `XADD`s, with an optional approximate length cap.

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
