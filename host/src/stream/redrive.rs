//! Redrive: one dead-letter record back onto a stream, its original fields
//! byte for byte, removed from the DLQ in the same atomic step. Records of
//! ordinary width go through [`REDRIVE`]; a record whose fields are packed
//! (too many for one scripted `XADD`) goes through `WATCH` + `MULTI`/`EXEC`,
//! which is just as atomic: the transaction is dropped if anything touched
//! the DLQ meanwhile, and then tried again.

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

use super::dlq::PACKED_FIELDS;
use super::scripts::REDRIVE;

/// Attempts at a packed record's transaction before giving up (the DLQ is
/// being written to the whole time).
const WATCH_ATTEMPTS: u32 = 50;

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redriven {
    /// Appended to the target under this new id, and deleted from the DLQ.
    Moved(String),
    /// Not in the DLQ (any more): moved or purged by someone else.
    Gone,
    /// A record without fields (kind `trimmed`): nothing to put back.
    NoPayload,
    /// The target key holds this type, not a stream.
    WrongTarget(String),
}

/// Moves record `id` of `dlq` onto `target`.
///
/// `EVALSHA <redrive> 2 dlq target id`, or for packed records
/// `WATCH dlq` · `XRANGE dlq id id` · `MULTI` · `XADD target * …` · `XDEL dlq id` · `EXEC`.
pub async fn redrive(
    con: &mut MultiplexedConnection,
    dlq: &str,
    target: &str,
    id: &str,
) -> RedisResult<Redriven> {
    let (code, detail): (u8, String) = REDRIVE
        .key(dlq)
        .key(target)
        .arg(id)
        .invoke_async(con)
        .await?;
    Ok(match code {
        1 => Redriven::Moved(detail),
        0 => Redriven::Gone,
        3 => Redriven::NoPayload,
        4 => Redriven::WrongTarget(detail),
        _ => redrive_packed(con, dlq, target, id).await?,
    })
}

async fn redrive_packed(
    con: &mut MultiplexedConnection,
    dlq: &str,
    target: &str,
    id: &str,
) -> RedisResult<Redriven> {
    for _ in 0..WATCH_ATTEMPTS {
        let () = redis::cmd("WATCH").arg(dlq).query_async(con).await?;
        let found = super::inspect::range(con, dlq, id, id, 1).await?;
        let Some((_, record)) = found.into_iter().next() else {
            let () = redis::cmd("UNWATCH").query_async(con).await?;
            return Ok(Redriven::Gone);
        };
        let Some((_, packed)) = record.iter().find(|(k, _)| k == PACKED_FIELDS.as_bytes()) else {
            let () = redis::cmd("UNWATCH").query_async(con).await?;
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "record changed",
                format!("{id} has no {PACKED_FIELDS}"),
            )));
        };
        let pairs = unpack(packed)?;
        let mut add = redis::cmd("XADD");
        add.arg(target).arg("*");
        for (k, v) in &pairs {
            add.arg(k).arg(v);
        }
        let mut del = redis::cmd("XDEL");
        del.arg(dlq).arg(id);
        let done: Option<(String, u64)> = redis::pipe()
            .atomic()
            .add_command(add)
            .add_command(del)
            .query_async(con)
            .await?;
        if let Some((new_id, _)) = done {
            return Ok(Redriven::Moved(new_id));
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "DLQ too busy",
        format!("{id}: the DLQ changed during each of {WATCH_ATTEMPTS} attempts"),
    )))
}

/// The pairs of a `packed_fields` value: a RESP2 array of bulk strings,
/// name, value, name, value, …
pub fn unpack(packed: &[u8]) -> RedisResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let value: Value = redis::parse_redis_value(packed)?;
    let flat: Vec<Vec<u8>> = redis::from_redis_value(value)?;
    let mut it = flat.into_iter();
    let mut pairs = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        pairs.push((k, v));
    }
    Ok(pairs)
}
