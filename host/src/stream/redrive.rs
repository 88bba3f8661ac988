//! Redrive: one dead-letter record back onto a stream, its original fields
//! byte for byte, removed from the DLQ in the same atomic step, exactly
//! once however many redrives run at once. Records of ordinary width go
//! through [`REDRIVE`]; a record whose fields are packed (too many for one
//! scripted `XADD`) goes through `WATCH` + `MULTI`/`EXEC`, which is just as
//! atomic: the transaction is dropped if anything touched the DLQ
//! meanwhile, and then tried again.
//!
//! `WATCH` belongs to a connection, and a shared (multiplexed) connection
//! interleaves its users' commands: one user's `EXEC` would clear another's
//! `WATCH`, or run inside another's `MULTI`. So a [`Redriver`] opens a
//! connection of its own and lends it to nobody.

use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, RedisResult, Value};

use super::dlq::{PACKED_FIELDS, unpack};
use super::inspect::RawEntry;
use super::scripts::{REDRIVE, REDRIVE_GUARD};
use crate::config::RedisEndpoint;

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
    /// The target key holds this type, not a stream; the record stays.
    WrongTarget(String),
    /// Its packed fields cannot be read back, for this reason; it stays.
    Undecodable(String),
}

/// Moves dead letters, on a connection nobody else uses.
pub struct Redriver {
    con: MultiplexedConnection,
}

impl fmt::Debug for Redriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redriver").finish_non_exhaustive()
    }
}

impl Redriver {
    /// Opens the redriver's own connection to `endpoint`, waiting at most
    /// `response_timeout` for each reply.
    pub async fn open(endpoint: &RedisEndpoint, response_timeout: Duration) -> RedisResult<Self> {
        let con = endpoint
            .connect(Duration::from_secs(5), response_timeout)
            .await?;
        Ok(Self { con })
    }

    /// Moves record `id` of `dlq` onto `target`.
    ///
    /// `EVALSHA <redrive> 2 dlq target id`, or for packed records
    /// `WATCH dlq` · `XRANGE dlq id id` · `MULTI` ·
    /// `EVAL <redrive guard> 2 dlq target id` · `XADD target * …` · `EXEC`.
    pub async fn redrive(&mut self, dlq: &str, target: &str, id: &str) -> RedisResult<Redriven> {
        for _ in 0..WATCH_ATTEMPTS {
            let (code, detail): (u8, String) = REDRIVE
                .key(dlq)
                .key(target)
                .arg(id)
                .invoke_async(&mut self.con)
                .await?;
            let done = match code {
                1 => Some(Redriven::Moved(detail)),
                0 => Some(Redriven::Gone),
                3 => Some(Redriven::NoPayload),
                4 => Some(Redriven::WrongTarget(detail)),
                _ => self.packed(dlq, target, id).await?,
            };
            if let Some(done) = done {
                return Ok(done);
            }
        }
        Err(RedisError::from((
            redis::ErrorKind::Io,
            "DLQ too busy",
            format!("{id}: the DLQ changed during each of {WATCH_ATTEMPTS} attempts"),
        )))
    }

    /// One attempt at a packed record; `None` when the DLQ changed under
    /// the `WATCH` (nothing was written: try again).
    async fn packed(&mut self, dlq: &str, target: &str, id: &str) -> RedisResult<Option<Redriven>> {
        let con = &mut self.con;
        let () = redis::cmd("WATCH").arg(dlq).query_async(con).await?;
        let found = super::inspect::range(con, dlq, id, id, 1).await?;
        let record = found.into_iter().next();
        let packed = record.as_ref().and_then(|(_, raw)| {
            raw.iter()
                .find(|(k, _)| k == PACKED_FIELDS.as_bytes())
                .map(|(_, v)| unpack(v))
        });
        let pairs = match (record.as_ref(), packed) {
            (None, _) => return unwatch(con, Some(Redriven::Gone)).await,
            // Not packed after all: the script path will say what it is.
            (Some(_), None) => return unwatch(con, None).await,
            (Some(_), Some(Err(why))) => {
                return unwatch(con, Some(Redriven::Undecodable(why.to_string()))).await;
            }
            (Some(_), Some(Ok(pairs))) => pairs,
        };
        let mut add = redis::cmd("XADD");
        add.arg(target).arg("*");
        for (k, v) in &pairs {
            add.arg(k).arg(v);
        }
        let mut guard = redis::cmd("EVAL");
        guard.arg(REDRIVE_GUARD).arg(2).arg(dlq).arg(target).arg(id);
        let reply: Value = redis::pipe()
            .atomic()
            .ignore_errors()
            .add_command(guard)
            .add_command(add)
            .query_async(con)
            .await?;
        let (guarded, added) = match reply {
            Value::Nil => return Ok(None),
            Value::Array(mut items) if items.len() == 2 => {
                let added = items.pop().unwrap_or(Value::Nil);
                (items.pop().unwrap_or(Value::Nil), added)
            }
            other => return Err(unexpected(format!("EXEC answered {other:?}"))),
        };
        let record = record.unwrap_or_default();
        settle(con, dlq, target, record, guarded, added)
            .await
            .map(Some)
    }
}

/// `UNWATCH`, then `outcome`.
async fn unwatch(
    con: &mut MultiplexedConnection,
    outcome: Option<Redriven>,
) -> RedisResult<Option<Redriven>> {
    let () = redis::cmd("UNWATCH").query_async(con).await?;
    Ok(outcome)
}

/// What an executed transaction did. The guard deletes the record exactly
/// when the `XADD` can succeed, so anything else means Redis broke that
/// promise; then the step is undone where it can be (the appended entry
/// deleted again, or the record appended back to the DLQ) and reported.
async fn settle(
    con: &mut MultiplexedConnection,
    dlq: &str,
    target: &str,
    (_, record): RawEntry,
    guarded: Value,
    added: Value,
) -> RedisResult<Redriven> {
    let guarded: Option<(u8, Value)> = redis::from_redis_value(guarded).ok();
    let added: Option<String> = redis::from_redis_value(added).ok();
    match (guarded, added) {
        (Some((1, Value::Int(1))), Some(new_id)) => Ok(Redriven::Moved(new_id)),
        (Some((4, kind)), None) => Ok(Redriven::WrongTarget(
            redis::from_redis_value(kind).unwrap_or_default(),
        )),
        (guarded, Some(new_id)) => {
            let _: u64 = redis::cmd("XDEL")
                .arg(target)
                .arg(&new_id)
                .query_async(con)
                .await?;
            Err(unexpected(format!(
                "the record was not deleted ({guarded:?}) although its entry was appended as {new_id}; that entry was deleted again"
            )))
        }
        (guarded, None) => {
            if matches!(guarded, Some((1, Value::Int(1)))) {
                let mut back = redis::cmd("XADD");
                back.arg(dlq).arg("*");
                for (k, v) in &record {
                    back.arg(k).arg(v);
                }
                let _: String = back.query_async(con).await?;
            }
            Err(unexpected(format!(
                "the XADD onto {target:?} failed after the guard ({guarded:?}); the record is in the DLQ"
            )))
        }
    }
}

fn unexpected(detail: String) -> RedisError {
    RedisError::from((redis::ErrorKind::Client, "redrive transaction", detail))
}
