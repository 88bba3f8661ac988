//! The consumers of a group, one typed wrapper per way of asking `XINFO
//! CONSUMERS`: every one ([`all`]), or the first few, however many there
//! are ([`first`]).

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::reply::ReplyError;
use super::scripts::FIRST_CONSUMERS;

/// One consumer of a group, as `XINFO CONSUMERS` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Consumer name.
    pub name: String,
    /// Entries delivered to it and not yet acked.
    pub pending: u64,
    /// Milliseconds since it last tried to read or claim.
    pub idle_ms: u64,
    /// Milliseconds since it last read or claimed something; `None` if it
    /// never has, or the server predates Redis 7.2 (which added the field).
    pub inactive_ms: Option<u64>,
}

/// `XINFO CONSUMERS stream group` — every consumer of the group (a group
/// can have any number: operators' views read [`first`] instead).
pub async fn all(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> RedisResult<Vec<ConsumerInfo>> {
    let reply: Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    parse_consumers(reply).map_err(shape_error)
}

/// The first `max` rows of `XINFO CONSUMERS stream group` (in name order),
/// however many consumers the group has:
/// `EVALSHA <first-consumers> 1 stream group max`.
pub async fn first(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    max: usize,
) -> RedisResult<Vec<ConsumerInfo>> {
    let rows: Vec<Value> = FIRST_CONSUMERS
        .key(stream)
        .arg(group)
        .arg(max)
        .invoke_async(con)
        .await?;
    parse_consumers(Value::Array(rows)).map_err(shape_error)
}

/// A reply that broke the documented shape (a bug or a very odd server).
fn shape_error(e: ReplyError) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, "unexpected reply", e.to_string()))
}

/// Decodes an `XINFO CONSUMERS` reply: one map (a flat name/value array in
/// RESP2) per consumer.
fn parse_consumers(reply: Value) -> Result<Vec<ConsumerInfo>, ReplyError> {
    const CMD: &str = "XINFO CONSUMERS";
    let bad = |e: redis::ParsingError| ReplyError::new(CMD, e.to_string());
    let rows: Vec<HashMap<String, Value>> = redis::from_redis_value(reply).map_err(bad)?;
    rows.into_iter()
        .map(|mut row| {
            let mut field = |name: &str| {
                row.remove(name)
                    .ok_or_else(|| ReplyError::new(CMD, format!("no {name} field")))
            };
            let name = redis::from_redis_value(field("name")?).map_err(bad)?;
            let pending = redis::from_redis_value(field("pending")?).map_err(bad)?;
            let idle_ms = redis::from_redis_value(field("idle")?).map_err(bad)?;
            // -1 when the consumer never read or claimed anything.
            let inactive_ms = match row.remove("inactive") {
                Some(v) => u64::try_from(redis::from_redis_value::<i64>(v).map_err(bad)?).ok(),
                None => None,
            };
            Ok(ConsumerInfo {
                name,
                pending,
                idle_ms,
                inactive_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(name: &str, pending: i64, idle: i64, inactive: Option<i64>) -> Value {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let mut pairs = vec![
            bulk("name"),
            bulk(name),
            bulk("pending"),
            Value::Int(pending),
            bulk("idle"),
            Value::Int(idle),
        ];
        if let Some(ms) = inactive {
            pairs.extend([bulk("inactive"), Value::Int(ms)]);
        }
        Value::Array(pairs)
    }

    #[test]
    fn consumers_decode_with_and_without_an_inactive_time() {
        let reply = Value::Array(vec![
            consumer("a", 3, 10, Some(20)),
            consumer("b", 0, 5, Some(-1)),
            consumer("c", 1, 7, None),
        ]);
        let info = |name: &str, pending, idle_ms, inactive_ms| ConsumerInfo {
            name: name.into(),
            pending,
            idle_ms,
            inactive_ms,
        };
        assert_eq!(
            parse_consumers(reply).expect("a valid reply"),
            [
                info("a", 3, 10, Some(20)),
                info("b", 0, 5, None),
                info("c", 1, 7, None)
            ]
        );
        let nameless = Value::Array(vec![Value::Array(vec![])]);
        assert!(parse_consumers(nameless).is_err());
    }
}
