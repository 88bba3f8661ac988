//! Read-only looks at a stream's groups, for operators (metrics, health,
//! status): `PING`, `XINFO GROUPS` and the summary form of `XPENDING`, each
//! decoded into a typed struct. Nothing here changes Redis.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::entry::ReplyError;

/// One consumer group of a stream, as `XINFO GROUPS` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Consumers in the group.
    pub consumers: u64,
    /// Entries delivered and not yet acknowledged (the PEL's length).
    pub pending: u64,
    /// The last id delivered to the group.
    pub last_delivered_id: String,
    /// Logical read counter (`entries-read`, Redis 7.0+; `None` when Redis
    /// cannot tell).
    pub entries_read: Option<u64>,
    /// Entries not yet delivered to the group (`lag`, Redis 7.0+; `None` when
    /// Redis cannot tell, e.g. after entries were deleted in its range).
    pub lag: Option<u64>,
}

/// The summary form of `XPENDING` for one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingSummary {
    /// Pending entries in the group.
    pub count: u64,
    /// The smallest and largest pending id (`None` when nothing is pending).
    pub range: Option<(String, String)>,
    /// Pending entries per consumer that has any.
    pub consumers: Vec<(String, u64)>,
}

impl PendingSummary {
    /// The id time (ms since the epoch) of the oldest pending entry.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.range.as_ref().and_then(|(low, _)| id_millis(low))
    }
}

/// The millisecond part of an entry id `<ms>-<seq>`.
pub fn id_millis(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}

/// A reply that broke the documented shape.
fn shape_error(e: ReplyError) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply", e.to_string()))
}

/// `PING` — whether Redis answers.
pub async fn ping(con: &mut MultiplexedConnection) -> RedisResult<()> {
    let _: String = redis::cmd("PING").query_async(con).await?;
    Ok(())
}

/// `XINFO GROUPS stream` — every group of `stream`; none if the stream does
/// not exist.
pub async fn groups(con: &mut MultiplexedConnection, stream: &str) -> RedisResult<Vec<GroupInfo>> {
    let reply: RedisResult<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(con)
        .await;
    match reply {
        Ok(v) => parse_groups(v).map_err(shape_error),
        Err(e) if e.to_string().contains("no such key") => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// `XPENDING stream group` — how many entries the group has pending, the id
/// range and the count per consumer.
pub async fn pending_summary(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> RedisResult<PendingSummary> {
    let reply: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    parse_pending_summary(reply).map_err(shape_error)
}

fn parse_groups(reply: Value) -> Result<Vec<GroupInfo>, ReplyError> {
    const CMD: &str = "XINFO GROUPS";
    let bad = |e: redis::ParsingError| ReplyError::new(CMD, e.to_string());
    let rows: Vec<HashMap<String, Value>> = redis::from_redis_value(reply).map_err(bad)?;
    rows.into_iter()
        .map(|mut row| {
            let mut field = |name: &str| {
                row.remove(name)
                    .ok_or_else(|| ReplyError::new(CMD, format!("no {name} field")))
            };
            let name = redis::from_redis_value(field("name")?).map_err(bad)?;
            let consumers = redis::from_redis_value(field("consumers")?).map_err(bad)?;
            let pending = redis::from_redis_value(field("pending")?).map_err(bad)?;
            let last_delivered_id =
                redis::from_redis_value(field("last-delivered-id")?).map_err(bad)?;
            // Nil (or absent before Redis 7.0) when Redis cannot tell.
            let mut optional = |name: &str| match row.remove(name) {
                None | Some(Value::Nil) => Ok(None),
                Some(v) => redis::from_redis_value::<u64>(v).map(Some).map_err(bad),
            };
            Ok(GroupInfo {
                name,
                consumers,
                pending,
                last_delivered_id,
                entries_read: optional("entries-read")?,
                lag: optional("lag")?,
            })
        })
        .collect()
}

fn parse_pending_summary(reply: Value) -> Result<PendingSummary, ReplyError> {
    const CMD: &str = "XPENDING (summary)";
    let bad = |e: redis::ParsingError| ReplyError::new(CMD, e.to_string());
    type Raw = (
        u64,
        Option<String>,
        Option<String>,
        Option<Vec<(String, u64)>>,
    );
    let (count, low, high, consumers): Raw = redis::from_redis_value(reply).map_err(bad)?;
    Ok(PendingSummary {
        count,
        range: low.zip(high),
        consumers: consumers.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn group(name: &str, lag: Value) -> Value {
        Value::Array(vec![
            bulk("name"),
            bulk(name),
            bulk("consumers"),
            Value::Int(2),
            bulk("pending"),
            Value::Int(3),
            bulk("last-delivered-id"),
            bulk("1700000000000-1"),
            bulk("entries-read"),
            Value::Int(7),
            bulk("lag"),
            lag,
        ])
    }

    #[test]
    fn groups_decode_with_a_known_and_an_unknown_lag() {
        let reply = Value::Array(vec![group("a", Value::Int(4)), group("b", Value::Nil)]);
        let groups = parse_groups(reply).expect("a valid reply");
        assert_eq!(
            groups[0],
            GroupInfo {
                name: "a".into(),
                consumers: 2,
                pending: 3,
                last_delivered_id: "1700000000000-1".into(),
                entries_read: Some(7),
                lag: Some(4),
            }
        );
        assert_eq!(groups[1].lag, None);
        assert!(parse_groups(Value::Array(vec![Value::Array(vec![])])).is_err());
    }

    #[test]
    fn the_pending_summary_gives_the_oldest_entry_time() {
        let reply = Value::Array(vec![
            Value::Int(3),
            bulk("1700000000123-0"),
            bulk("1700000000999-4"),
            Value::Array(vec![Value::Array(vec![bulk("c1"), bulk("3")])]),
        ]);
        let s = parse_pending_summary(reply).expect("a valid reply");
        assert_eq!(s.count, 3);
        assert_eq!(s.consumers, [("c1".to_owned(), 3)]);
        assert_eq!(s.oldest_ms(), Some(1_700_000_000_123));
        let empty = Value::Array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
        let s = parse_pending_summary(empty).expect("a valid empty reply");
        assert_eq!((s.count, s.oldest_ms()), (0, None));
        assert_eq!(id_millis("42"), Some(42));
        assert_eq!(id_millis("x-1"), None);
    }
}
