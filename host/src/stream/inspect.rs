//! Read-only views of a stream for operators (the `status`, `dlq`, `trim`
//! commands, metrics and health): `PING`, `TYPE`, `XINFO STREAM`, `XINFO
//! GROUPS`, `XLEN` and binary-safe `XRANGE` / `XREVRANGE`, each decoded into
//! a typed struct; pending entries are [`super::pending`]'s, consumers
//! [`super::consumers`]'s, and counting entries [`super::count`]'s (nothing
//! here loads a range to count it). Nothing here writes; every wrapper
//! documents its command.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

/// One entry as raw bytes: id and field/value pairs in stream order.
pub type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// `XINFO STREAM key`: the parts an operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Entries in the stream (`XLEN`).
    pub length: u64,
    /// Id of the oldest entry, if any.
    pub first_id: Option<String>,
    /// Id of the newest entry, if any.
    pub last_id: Option<String>,
    /// The last id Redis generated (survives the deletion of that entry).
    pub last_generated_id: String,
    /// Entries ever added (Redis ≥ 7.0).
    pub entries_added: Option<u64>,
}

/// One row of `XINFO GROUPS key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Consumers in the group.
    pub consumers: u64,
    /// Entries delivered and not yet acked.
    pub pending: u64,
    /// The last id delivered to the group.
    pub last_delivered_id: String,
    /// Logical read counter (`entries-read`, Redis 7.0+; `None` when Redis
    /// cannot tell).
    pub entries_read: Option<u64>,
    /// Entries not yet delivered; `None` when Redis cannot tell (Redis < 7
    /// or after deletions in the undelivered range).
    pub lag: Option<u64>,
}

fn shape(what: &str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply", what.to_owned()))
}

/// A RESP2 flat array (or RESP3 map) as name → value.
fn fields(v: Value) -> RedisResult<HashMap<String, Value>> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(m) => m,
        Value::Array(a) => {
            let mut it = a.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        _ => return Err(shape("expected a map")),
    };
    pairs
        .into_iter()
        .map(|(k, v)| Ok((redis::from_redis_value::<String>(k)?, v)))
        .collect()
}

fn text(m: &HashMap<String, Value>, key: &str) -> RedisResult<Option<String>> {
    match m.get(key) {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => Ok(Some(redis::from_redis_value(v.clone())?)),
    }
}

fn number(m: &HashMap<String, Value>, key: &str) -> RedisResult<Option<u64>> {
    match m.get(key) {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => Ok(Some(redis::from_redis_value(v.clone())?)),
    }
}

fn entry_id(v: Option<&Value>) -> RedisResult<Option<String>> {
    match v {
        Some(Value::Array(e)) if !e.is_empty() => Ok(Some(redis::from_redis_value(e[0].clone())?)),
        _ => Ok(None),
    }
}

/// Whether `key` exists, and its type (`TYPE key`: `none` if missing).
pub async fn key_type(con: &mut MultiplexedConnection, key: &str) -> RedisResult<String> {
    let t: String = redis::cmd("TYPE").arg(key).query_async(con).await?;
    Ok(t)
}

/// `XINFO STREAM key`; `None` if the key does not exist.
pub async fn stream_info(
    con: &mut MultiplexedConnection,
    key: &str,
) -> RedisResult<Option<StreamInfo>> {
    let reply: RedisResult<Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query_async(con)
        .await;
    let reply = match reply {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(None),
        Err(e) => return Err(e),
    };
    let m = fields(reply)?;
    Ok(Some(StreamInfo {
        length: number(&m, "length")?.unwrap_or(0),
        first_id: entry_id(m.get("first-entry"))?,
        last_id: entry_id(m.get("last-entry"))?,
        last_generated_id: text(&m, "last-generated-id")?.unwrap_or_default(),
        entries_added: number(&m, "entries-added")?,
    }))
}

/// `PING` — whether Redis answers.
pub async fn ping(con: &mut MultiplexedConnection) -> RedisResult<()> {
    let _: String = redis::cmd("PING").query_async(con).await?;
    Ok(())
}

/// `XINFO GROUPS key` — every group of `key`; none if the stream does not
/// exist.
pub async fn groups(con: &mut MultiplexedConnection, key: &str) -> RedisResult<Vec<GroupInfo>> {
    let reply: RedisResult<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(con)
        .await;
    match reply {
        Ok(v) => parse_groups(v),
        Err(e) if e.to_string().contains("no such key") => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn parse_groups(reply: Value) -> RedisResult<Vec<GroupInfo>> {
    let rows: Vec<Value> = redis::from_redis_value(reply)?;
    rows.into_iter()
        .map(|row| {
            let m = fields(row)?;
            let required = |v: Option<String>, name: &str| {
                v.ok_or_else(|| shape(&format!("XINFO GROUPS: no {name} field")))
            };
            Ok(GroupInfo {
                name: required(text(&m, "name")?, "name")?,
                consumers: number(&m, "consumers")?.unwrap_or(0),
                pending: number(&m, "pending")?.unwrap_or(0),
                last_delivered_id: required(text(&m, "last-delivered-id")?, "last-delivered-id")?,
                entries_read: number(&m, "entries-read")?,
                lag: number(&m, "lag")?,
            })
        })
        .collect()
}

fn raw_entries(rows: Vec<(String, Vec<Vec<u8>>)>) -> Vec<RawEntry> {
    rows.into_iter()
        .map(|(id, flat)| {
            let mut it = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            (id, pairs)
        })
        .collect()
}

/// `XRANGE key start end COUNT count`, byte for byte.
pub async fn range(
    con: &mut MultiplexedConnection,
    key: &str,
    start: &str,
    end: &str,
    count: usize,
) -> RedisResult<Vec<RawEntry>> {
    let rows: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(count)
        .query_async(con)
        .await?;
    Ok(raw_entries(rows))
}

/// `XREVRANGE key end start COUNT count`, byte for byte, newest first.
pub async fn rev_range(
    con: &mut MultiplexedConnection,
    key: &str,
    end: &str,
    start: &str,
    count: usize,
) -> RedisResult<Vec<RawEntry>> {
    let rows: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XREVRANGE")
        .arg(key)
        .arg(end)
        .arg(start)
        .arg("COUNT")
        .arg(count)
        .query_async(con)
        .await?;
    Ok(raw_entries(rows))
}

/// `XLEN key` (0 for a missing key).
pub async fn len(con: &mut MultiplexedConnection, key: &str) -> RedisResult<u64> {
    redis::cmd("XLEN").arg(key).query_async(con).await
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
}
