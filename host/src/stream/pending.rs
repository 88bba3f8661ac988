//! The pending entries of a group, one typed wrapper for the extended form
//! of `XPENDING` ([`rows`], whatever the query: a page after an id, a range,
//! one consumer's, those idle long enough).

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::reply::ReplyError;

/// Which pending entries [`rows`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingQuery<'a> {
    /// First id (`XRANGE` syntax: an id, `(id` exclusive, `-`).
    pub from: &'a str,
    /// Last id (`+` for the end).
    pub to: &'a str,
    /// Most rows.
    pub count: usize,
    /// Only this consumer's.
    pub consumer: Option<&'a str>,
    /// Only entries idle at least this many milliseconds.
    pub min_idle_ms: Option<u64>,
}

impl<'a> PendingQuery<'a> {
    /// The oldest `count` pending entries.
    pub fn oldest(count: usize) -> Self {
        Self {
            from: "-",
            to: "+",
            count,
            consumer: None,
            min_idle_ms: None,
        }
    }

    /// Those in `from ..= to` (`XRANGE` bounds).
    pub fn between(mut self, from: &'a str, to: &'a str) -> Self {
        (self.from, self.to) = (from, to);
        self
    }

    /// Only `consumer`'s, if given.
    pub fn of(mut self, consumer: Option<&'a str>) -> Self {
        self.consumer = consumer;
        self
    }

    /// Only entries idle at least `ms`.
    pub fn idle_at_least(mut self, ms: u64) -> Self {
        self.min_idle_ms = Some(ms);
        self
    }
}

/// The exclusive start of a page after `id` (`-`: from the start).
pub fn after(id: &str) -> String {
    if id == "-" {
        id.to_owned()
    } else {
        format!("({id}")
    }
}

/// One row of `XPENDING key group start end count [consumer]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    /// Entry id.
    pub id: String,
    /// Consumer that owns it.
    pub consumer: String,
    /// Milliseconds since it was last delivered.
    pub idle_ms: u64,
    /// Deliveries so far.
    pub deliveries: u32,
}

/// Decodes the extended form of XPENDING.
fn parse_xpending(reply: Value) -> Result<Vec<PendingRow>, ReplyError> {
    const CMD: &str = "XPENDING";
    let Value::Array(rows) = reply else {
        return Err(ReplyError::new(CMD, format!("{reply:?}")));
    };
    rows.into_iter()
        .map(|row| {
            let v: (String, String, u64, u32) =
                redis::from_redis_value(row).map_err(|e| ReplyError::new(CMD, e.to_string()))?;
            Ok(PendingRow {
                id: v.0,
                consumer: v.1,
                idle_ms: v.2,
                deliveries: v.3,
            })
        })
        .collect()
}

/// `XPENDING stream group [IDLE ms] from to count [consumer]`: the pending
/// entries `q` asks for, by id, with owner, idle time and delivery count.
pub async fn rows(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    q: PendingQuery<'_>,
) -> RedisResult<Vec<PendingRow>> {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(stream).arg(group);
    if let Some(ms) = q.min_idle_ms {
        cmd.arg("IDLE").arg(ms);
    }
    cmd.arg(q.from).arg(q.to).arg(q.count);
    if let Some(consumer) = q.consumer {
        cmd.arg(consumer);
    }
    let reply: Value = cmd.query_async(con).await?;
    parse_xpending(reply).map_err(|e| {
        redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply", e.to_string()))
    })
}
