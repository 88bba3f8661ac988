//! The baselines, in-process on their own connection: the fastest plain
//! consumer loop we know how to write, the same loop with a handler that
//! appends to other streams (what a hand-written enrich-and-forward consumer
//! pays Redis for its emits), and the loop the reference guides teach
//! (COUNT 10, one awaited XACK per entry).

use std::collections::HashMap;
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
    /// Like `Pipelined`, with a handler that appends: the batch's appends
    /// and its XACK in one MULTI/EXEC (emits atomic with the ack, as the
    /// host's are), pipelined with the next XREADGROUP.
    Emitting(Emits),
}

/// What an emitting baseline appends per entry, shaped like the host
/// scenario it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emits {
    /// Running totals by the entry's `type`, five fields, to one stream (the
    /// `analytics` plugin).
    Totals(&'static str),
    /// The entry's fields plus `source_id` to each stream (the `fanout`
    /// plugin).
    Forward(&'static [&'static str]),
}

impl Emits {
    /// The streams it appends to.
    pub fn targets(self) -> Vec<&'static str> {
        match self {
            Emits::Totals(target) => vec![target],
            Emits::Forward(targets) => targets.to_vec(),
        }
    }
}

/// One append: target stream and field/value pairs.
type Append = (&'static str, Vec<(Vec<u8>, Vec<u8>)>);

/// What a batch leaves to write with the next read.
#[derive(Default)]
struct Commit {
    acks: Vec<String>,
    appends: Vec<Append>,
}

/// The `analytics` plugin's state, natively.
#[derive(Default)]
struct Totals {
    instance: Vec<u8>,
    events: u64,
    by_type: HashMap<Vec<u8>, u64>,
}

impl Totals {
    fn count(&mut self, id: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        if self.instance.is_empty() {
            self.instance = id.as_bytes().to_vec();
        }
        self.events += 1;
        let kind = fields
            .iter()
            .find(|(k, _)| k == b"type")
            .map_or(&b""[..], |(_, v)| v);
        let count = match self.by_type.get_mut(kind) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => *self.by_type.entry(kind.to_vec()).or_insert(1),
        };
        vec![
            (b"instance".to_vec(), self.instance.clone()),
            (b"type".to_vec(), kind.to_vec()),
            (b"count".to_vec(), count.to_string().into_bytes()),
            (b"events".to_vec(), self.events.to_string().into_bytes()),
            (b"source_id".to_vec(), id.as_bytes().to_vec()),
        ]
    }
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
    let mut commit = Commit::default();
    let mut totals = Totals::default();
    loop {
        let entries = ack_and_read(con, stream, group, &mut commit, count, None).await?;
        if entries.is_empty() || total >= limit {
            break;
        }
        total += entries.len();
        for (id, fields) in entries {
            std::hint::black_box(&fields);
            match style {
                AckStyle::Pipelined => commit.acks.push(id),
                AckStyle::PerEntry => {
                    let _: () = redis::cmd("XACK")
                        .arg(stream)
                        .arg(group)
                        .arg(&id)
                        .query_async(con)
                        .await?;
                }
                AckStyle::Emitting(Emits::Totals(target)) => {
                    commit.appends.push((target, totals.count(&id, &fields)));
                    commit.acks.push(id);
                }
                AckStyle::Emitting(Emits::Forward(targets)) => {
                    let mut forwarded = fields;
                    forwarded.push((b"source_id".to_vec(), id.as_bytes().to_vec()));
                    for target in targets {
                        commit.appends.push((target, forwarded.clone()));
                    }
                    commit.acks.push(id);
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
    read_live(con, stream, group, expected, |sent| {
        if let Some(sent) = sent {
            samples.push((sent, crate::now_ns().saturating_sub(sent)));
        }
    })
    .await?;
    Ok(samples)
}

/// Like [`consume_live`], but the loop hands each entry to a pool of
/// `workers` threads through one queue, as any consumer does that keeps its
/// handlers off the reading thread (the host must: a handler may run until
/// its deadline); the sample is taken when a worker has the entry.
pub async fn consume_live_pooled(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    expected: usize,
    workers: usize,
) -> Result<Vec<(u64, u64)>> {
    let (jobs, queue) = flume::unbounded::<Option<u64>>();
    let pool: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                while let Ok(sent) = queue.recv() {
                    if let Some(sent) = sent {
                        samples.push((sent, crate::now_ns().saturating_sub(sent)));
                    }
                }
                samples
            })
        })
        .collect();
    drop(queue);
    let read = read_live(con, stream, group, expected, |sent| {
        // The workers outlive the sender; a send cannot fail here.
        let _ = jobs.send(sent);
    })
    .await;
    drop(jobs);
    let mut samples = Vec::with_capacity(expected);
    for worker in pool {
        samples.extend(
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a pool worker panicked"))?,
        );
    }
    read?;
    Ok(samples)
}

/// Reads live entries until `expected` were seen, handing each entry's
/// `sent_ns` (if it has one) to `handle` as soon as it is decoded.
async fn read_live(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    expected: usize,
    mut handle: impl FnMut(Option<u64>),
) -> Result<()> {
    let mut commit = Commit::default();
    let mut seen = 0;
    while seen < expected {
        for (id, fields) in ack_and_read(con, stream, group, &mut commit, 500, Some(1000)).await? {
            seen += 1;
            handle(
                fields
                    .iter()
                    .find(|(k, _)| k == b"sent_ns")
                    .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u64>().ok()),
            );
            commit.acks.push(id);
        }
    }
    if !commit.acks.is_empty() {
        let _: () = redis::cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(&commit.acks)
            .query_async(con)
            .await?;
    }
    Ok(())
}

/// One round trip: the previous batch's XACK (with its appends, in one
/// MULTI/EXEC) pipelined with the next XREADGROUP; `commit` is emptied.
async fn ack_and_read(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    commit: &mut Commit,
    count: usize,
    block_ms: Option<u64>,
) -> Result<Vec<RawEntry>> {
    let mut pipe = redis::pipe();
    let atomic = !commit.appends.is_empty();
    if atomic {
        pipe.cmd("MULTI").ignore();
    }
    for (target, fields) in commit.appends.drain(..) {
        let xadd = pipe.cmd("XADD").arg(target).arg("*");
        for (k, v) in fields {
            xadd.arg(k).arg(v);
        }
        xadd.ignore();
    }
    if !commit.acks.is_empty() {
        pipe.cmd("XACK")
            .arg(stream)
            .arg(group)
            .arg(&commit.acks)
            .ignore();
    }
    if atomic {
        pipe.cmd("EXEC").ignore();
    }
    read_cmd(&mut pipe, stream, group, count, block_ms);
    let (reply,): (Value,) = pipe.query_async(con).await?;
    commit.acks.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![(b"type".to_vec(), kind.as_bytes().to_vec())]
    }

    #[test]
    fn totals_count_by_type_like_the_analytics_plugin() {
        let mut t = Totals::default();
        t.count("1-0", &entry("order"));
        t.count("2-0", &entry("refund"));
        let last = t.count("3-0", &entry("order"));
        let get = |name: &str| {
            let (_, v) = last.iter().find(|(k, _)| k == name.as_bytes()).unwrap();
            String::from_utf8(v.clone()).unwrap()
        };
        assert_eq!(get("instance"), "1-0");
        assert_eq!(get("type"), "order");
        assert_eq!(get("count"), "2");
        assert_eq!(get("events"), "3");
        assert_eq!(get("source_id"), "3-0");
    }
}
