//! The committer's writes, as typed additions to one pipelined round trip:
//! a batch of acks with their emits ([`ACK_WITH_EMITS`]) and dead-letter
//! moves ([`DEAD_LETTER`]), and what each entry's result means.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::{Pipeline, RedisResult, Value};

use super::claims::DeadLetters;
use super::commands::GroupRef;
use super::entry::{Payload, id_parts};
use super::scripts::{ACK_WITH_EMITS, CLAIM, DEAD_LETTER, DELETE_CONSUMER_IF_EMPTY};
use crate::outcome::Emit;

/// What a fenced write did for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitResult {
    /// Written (acked with its emits, or moved to the DLQ).
    Done,
    /// The entry was no longer pending for this consumer: nothing written.
    NotPending,
    /// Redis refused this entry's write (nothing of it written; it stays
    /// pending): why.
    Refused(String),
}

impl CommitResult {
    /// Reads one entry's script result: 1 done, 0 not pending, else an error.
    pub fn from_value(value: &Value) -> Self {
        match value {
            Value::Int(1) => CommitResult::Done,
            Value::Int(0) => CommitResult::NotPending,
            Value::BulkString(b) => CommitResult::Refused(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(t) => CommitResult::Refused(t.clone()),
            Value::ServerError(e) => CommitResult::Refused(format!("{e:?}")),
            v => CommitResult::Refused(format!("unexpected reply {v:?}")),
        }
    }
}

/// One success to ack with what its handler emitted.
#[derive(Debug, Clone, Copy)]
pub struct EmitCommit<'a> {
    /// Entry id.
    pub id: &'a str,
    /// Entries to append with the ack.
    pub emits: &'a [Emit],
}

/// Adds one [`ACK_WITH_EMITS`] call for `batch` to `pipe`.
///
/// `EVALSHA <ack-with-emits> k stream targets… group consumer lowest highest rows (id m (key n fields…)…)…`
pub fn ack_with_emits(pipe: &mut Pipeline, g: &GroupRef, batch: &[EmitCommit<'_>]) {
    let mut keys: Vec<&str> = vec![&g.stream];
    let mut index: HashMap<&str, usize> = HashMap::new();
    for e in batch.iter().flat_map(|c| c.emits) {
        index.entry(e.stream.as_str()).or_insert_with(|| {
            keys.push(&e.stream);
            keys.len()
        });
    }
    let (lowest, highest) = id_range(batch.iter().map(|c| c.id));
    let cmd = pipe
        .cmd("EVALSHA")
        .arg(ACK_WITH_EMITS.get_hash())
        .arg(keys.len())
        .arg(&keys)
        .arg(&g.group)
        .arg(&g.consumer)
        .arg(lowest)
        .arg(highest)
        // Room for the batch plus as many of our other entries interleaved
        // in the range; misses are checked one by one.
        .arg(batch.len() * 4 + 64);
    for c in batch {
        cmd.arg(c.id).arg(c.emits.len());
        for e in c.emits {
            cmd.arg(index[e.stream.as_str()]).arg(e.fields.len());
            for (k, v) in &e.fields {
                cmd.arg(k).arg(v);
            }
        }
    }
}

/// The per-entry results of one [`ack_with_emits`] call of `n` entries.
pub fn ack_with_emits_results(value: &Value, n: usize) -> Vec<CommitResult> {
    match value {
        Value::Array(values) if values.len() == n => {
            values.iter().map(CommitResult::from_value).collect()
        }
        other => vec![CommitResult::from_value(other); n],
    }
}

/// Adds one [`DEAD_LETTER`] move of entry `id` to `pipe`: the record's
/// metadata, then the payload — inline when the host holds it, copied
/// inside Redis when it was withheld, none when trimmed.
///
/// `EVALSHA <dead-letter> 2 stream dlq group consumer id inline|copy|none maxlen m meta… fields…`
pub fn dead_letter(
    pipe: &mut Pipeline,
    g: &GroupRef,
    dead: DeadLetters<'_>,
    id: &str,
    meta: &[(&str, String)],
    payload: &Payload,
) {
    let mode = match payload {
        Payload::Fields(_) | Payload::Raw(_) => "inline",
        Payload::Withheld { .. } => "copy",
        Payload::Trimmed => "none",
    };
    let cmd = pipe
        .cmd("EVALSHA")
        .arg(DEAD_LETTER.get_hash())
        .arg(2)
        .arg(&g.stream)
        .arg(dead.dlq)
        .arg(&g.group)
        .arg(&g.consumer)
        .arg(id)
        .arg(mode)
        .arg(dead.maxlen.map(|n| n.to_string()).unwrap_or_default())
        .arg(meta.len());
    for (k, v) in meta {
        cmd.arg(*k).arg(v);
    }
    for (k, v) in payload.raw_pairs() {
        cmd.arg(k).arg(v);
    }
}

/// Loads every script (after a `NOSCRIPT`: Redis restarted or flushed them).
pub async fn load_scripts(con: &mut MultiplexedConnection) -> RedisResult<()> {
    for script in [
        &*ACK_WITH_EMITS,
        &*DEAD_LETTER,
        &*CLAIM,
        &*DELETE_CONSUMER_IF_EMPTY,
    ] {
        script.prepare_invoke().load_async(con).await?;
    }
    Ok(())
}

/// The lowest and highest stream ids among `ids`, in stream order
/// (`("-", "+")`, everything, when there are none).
fn id_range<'a>(ids: impl Iterator<Item = &'a str> + Clone) -> (&'a str, &'a str) {
    let order = |id: &&str| id_parts(id);
    let lowest = ids.clone().min_by_key(order).unwrap_or("-");
    let highest = ids.max_by_key(order).unwrap_or("+");
    (lowest, highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_range_compares_ids_numerically() {
        let ids = ["9-1", "10-0", "9-10", "100-0", "9-2"];
        assert_eq!(id_range(ids.into_iter()), ("9-1", "100-0"));
        assert_eq!(id_range(std::iter::empty()), ("-", "+"));
    }

    #[test]
    fn results_read_done_not_pending_and_refusals() {
        let v = Value::Array(vec![
            Value::Int(1),
            Value::Int(0),
            Value::BulkString(b"WRONGTYPE emit target x".to_vec()),
        ]);
        assert_eq!(
            ack_with_emits_results(&v, 3),
            [
                CommitResult::Done,
                CommitResult::NotPending,
                CommitResult::Refused("WRONGTYPE emit target x".into())
            ]
        );
        assert_eq!(
            ack_with_emits_results(&Value::Int(0), 2),
            [CommitResult::NotPending, CommitResult::NotPending]
        );
    }
}
