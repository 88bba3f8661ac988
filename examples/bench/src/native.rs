//! The baselines, in-process on their own connection: the fastest plain
//! consumer loop we know how to write, and the loop the reference guides
//! teach (COUNT 10, one awaited XACK per entry).

use std::time::{Duration, Instant};

use anyhow::Result;
use redis::Value;
use redis::aio::MultiplexedConnection;

/// An entry id with its raw field/value pairs.
pub type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// How a baseline acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStyle {
    /// One XACK per batch, pipelined with the next XREADGROUP.
    Pipelined,
    /// One awaited XACK per entry, as the guides' workers do.
    PerEntry,
}

/// Reads `group` from the start with a no-op handler until the stream is
/// drained or about `limit` entries were handled (the slow guide loop does
/// not need the whole stream to show its rate); returns entries handled and
/// the time taken.
pub async fn drain_limit(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    count: usize,
    style: AckStyle,
    limit: usize,
) -> Result<(usize, Duration)> {
    let start = Instant::now();
    let mut total = 0;
    let mut to_ack: Vec<String> = Vec::new();
    loop {
        let entries = ack_and_read(con, stream, group, &mut to_ack, count, None).await?;
        if entries.is_empty() || total >= limit {
            break;
        }
        total += entries.len();
        for (id, fields) in entries {
            std::hint::black_box(&fields);
            match style {
                AckStyle::Pipelined => to_ack.push(id),
                AckStyle::PerEntry => {
                    let _: () = redis::cmd("XACK")
                        .arg(stream)
                        .arg(group)
                        .arg(&id)
                        .query_async(con)
                        .await?;
                }
            }
        }
    }
    Ok((total, start.elapsed()))
}

/// Consumes live entries (BLOCK) until `expected` have been seen, recording
/// for each entry carrying `sent_ns` its (sent_ns, latency_ns) at the moment
/// it was decoded — the native loop's equivalent of a handler call.
pub async fn consume_live(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    expected: usize,
) -> Result<Vec<(u64, u64)>> {
    let mut samples = Vec::with_capacity(expected);
    let mut to_ack: Vec<String> = Vec::new();
    let mut seen = 0;
    while seen < expected {
        for (id, fields) in ack_and_read(con, stream, group, &mut to_ack, 500, Some(1000)).await? {
            let now = crate::now_ns();
            seen += 1;
            if let Some(sent) = fields
                .iter()
                .find(|(k, _)| k == b"sent_ns")
                .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
            {
                samples.push((sent, now.saturating_sub(sent)));
            }
            to_ack.push(id);
        }
    }
    if !to_ack.is_empty() {
        let _: () = redis::cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(&to_ack)
            .query_async(con)
            .await?;
    }
    Ok(samples)
}

/// One round trip: XACK of the previous batch (if any) pipelined with the
/// next XREADGROUP; `to_ack` is emptied.
async fn ack_and_read(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    to_ack: &mut Vec<String>,
    count: usize,
    block_ms: Option<u64>,
) -> Result<Vec<RawEntry>> {
    let mut pipe = redis::pipe();
    if !to_ack.is_empty() {
        pipe.cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(&*to_ack)
            .ignore();
    }
    read_cmd(&mut pipe, stream, group, count, block_ms);
    let (reply,): (Value,) = pipe.query_async(con).await?;
    to_ack.clear();
    Ok(decode(reply))
}

fn read_cmd(
    pipe: &mut redis::Pipeline,
    stream: &str,
    group: &str,
    count: usize,
    block_ms: Option<u64>,
) {
    let cmd = pipe
        .cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("native")
        .arg("COUNT")
        .arg(count);
    if let Some(ms) = block_ms {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS").arg(stream).arg(">");
}

/// Decodes an XREADGROUP reply into owned entries (what any real consumer
/// must do before handing entries to its handler).
pub fn decode(reply: Value) -> Vec<RawEntry> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(mut pair) = s else { continue };
        let Some(Value::Array(entries)) = pair.pop() else {
            continue;
        };
        for e in entries {
            let Value::Array(mut parts) = e else { continue };
            let fields = match parts.pop() {
                Some(Value::Array(flat)) => {
                    let mut it = flat.into_iter();
                    let mut f = Vec::new();
                    while let (Some(Value::BulkString(k)), Some(Value::BulkString(v))) =
                        (it.next(), it.next())
                    {
                        f.push((k, v));
                    }
                    f
                }
                _ => Vec::new(),
            };
            if let Some(Value::BulkString(id)) = parts.pop() {
                out.push((String::from_utf8_lossy(&id).into_owned(), fields));
            }
        }
    }
    out
}
