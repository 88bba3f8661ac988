//! The committer's writes as one pipelined round trip ([`CommitRound`]):
//! plain acks, batches of acks with their emits ([`ACK_WITH_EMITS`]) and
//! dead-letter moves ([`DEAD_LETTER`]), each with its own reply, and what
//! each entry's result means.

use std::collections::HashMap;

use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Pipeline, RedisResult, Value};

use super::claims::DeadLetters;
use super::commands::GroupRef;
use super::link::{ErrorClass, classify};
use super::scripts::{
    ACK, ACK_WITH_EMITS, CLAIM, DEAD_LETTER, DELETE_CONSUMER_IF_EMPTY, FENCED, fenced_call,
};
use crate::vocab::entry::Payload;
use crate::vocab::ids::id_parts;
use crate::vocab::msgpack::ArrayPacker;
use crate::vocab::outcome::Emit;

/// Most entries acked with their emits by one script call: bounds how long
/// one call keeps Redis busy.
const EMIT_CALL_ENTRIES: usize = 128;
/// Most emitted values in one script call, for the same reason.
const EMIT_CALL_VALUES: usize = 16_384;
/// Most emitted bytes in one script call: a call's emits travel as one Redis
/// argument, which must stay well under `proto-max-bulk-len` (512 MB by
/// default); an entry alone may carry up to `--max-emit-bytes`.
const EMIT_CALL_BYTES: usize = 32 << 20;

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
    /// The partition's lease is no longer this writer's: nothing written,
    /// and the entry is the new owner's to handle.
    Fenced,
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

/// Rows an ack-with-emits call of `entries` entries reads from its id range
/// to learn which are still ours: room for the batch plus as many of our
/// other entries interleaved in the range. Entries past them are checked
/// one by one.
pub const fn range_rows(entries: usize) -> usize {
    entries * 4 + 64
}

/// Fills ack-with-emits calls only up to a size that keeps Redis responsive:
/// at most `EMIT_CALL_ENTRIES` entries, about `EMIT_CALL_VALUES` packed
/// values and `EMIT_CALL_BYTES` bytes per call.
#[derive(Debug, Default)]
pub struct EmitCallSize {
    entries: usize,
    values: usize,
    bytes: usize,
}

impl EmitCallSize {
    /// Counts one more entry, emitting `emits`, into the call being filled;
    /// `false` if it does not fit, and a new call starts with it. An entry
    /// alone in a call always fits.
    pub fn admit(&mut self, emits: &[Emit]) -> bool {
        // Per emit: target index and field count, then the name/value pairs.
        let values: usize = emits.iter().map(|e| 2 + 2 * e.fields.len()).sum();
        let bytes = packed_bytes(emits);
        let fits = self.entries == 0
            || (self.entries < EMIT_CALL_ENTRIES
                && self.values + values <= EMIT_CALL_VALUES
                && self.bytes + bytes <= EMIT_CALL_BYTES);
        if !fits {
            *self = Self::default();
        }
        self.entries += 1;
        self.values += values;
        self.bytes += bytes;
        fits
    }
}

/// About what `emits` take packed: their fields as they are, and at most
/// 5 bytes for each of the target index and the field count.
fn packed_bytes(emits: &[Emit]) -> usize {
    emits.iter().map(|e| 10 + e.fields.packed_len()).sum()
}

/// One commit round trip: every write is a command of one pipeline with a
/// reply of its own, so a write Redis refuses fails only its own entries.
/// Every write is fenced or idempotent: a round is safe to send again after
/// a lost reply.
#[derive(Debug)]
pub struct CommitRound {
    pipe: Pipeline,
    /// What each command of the pipeline is, in order, to read its reply.
    writes: Vec<Write>,
}

/// One command of a round, and how to read its reply.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// Plain acks.
    Ack,
    /// An ack-with-emits call of this many entries.
    Emits(usize),
    /// One dead-letter move.
    DeadLetter,
    /// `WAIT` for the replicas.
    Wait,
}

/// What Redis made of a [`CommitRound`].
#[derive(Debug, Default)]
pub struct RoundReplies {
    /// The plain acks' reply (`None` if the round had none); `NOSCRIPT`
    /// (the fenced acks' script was lost) sets `reload`, and they are
    /// worth sending again.
    pub acked: Option<RedisResult<()>>,
    /// Each script call's per-entry results, in the order the calls were
    /// added; `None` for a call that did not run and is worth sending again.
    pub calls: Vec<Option<Vec<CommitResult>>>,
    /// Redis had lost the scripts (restarted, or `SCRIPT FLUSH`): run
    /// [`load_scripts`] before sending the calls again.
    pub reload: bool,
    /// A write was answered with a redirection or a connection-level
    /// error (a cluster slot moved to another node, a failover): the
    /// connection must be replaced before the writes go again.
    pub redirected: Option<redis::RedisError>,
    /// How many replicas confirmed the round's writes (`None`: no `WAIT`).
    pub replicated: Option<RedisResult<u64>>,
}

impl CommitRound {
    /// A round that starts by acking `ids`: successes with nothing to emit
    /// need no script.
    ///
    /// `XACK stream group id…`
    pub fn new(g: &GroupRef, ids: &[&str]) -> Self {
        let mut pipe = redis::pipe();
        // Every reply on its own: one refused write must not fail the round.
        pipe.ignore_errors();
        let mut writes = Vec::new();
        if !ids.is_empty() {
            match &g.fence {
                None => {
                    pipe.cmd("XACK").arg(&g.stream).arg(&g.group).arg(ids);
                }
                Some(fence) => {
                    let cmd = pipe.cmd("EVALSHA");
                    fenced_call(cmd, &ACK, Some(fence), &[&g.stream])
                        .arg(&g.group)
                        .arg(ids);
                }
            }
            writes.push(Write::Ack);
        }
        Self { pipe, writes }
    }

    /// Adds one [`ACK_WITH_EMITS`] call for `batch`.
    ///
    /// `EVALSHA <ack-with-emits> k stream targets… group consumer lowest highest rows packed`,
    /// `packed` = `[id, m, (key, n, fields…)…, …]`
    pub fn ack_with_emits(&mut self, g: &GroupRef, batch: &[EmitCommit<'_>]) {
        let mut keys: Vec<&str> = vec![&g.stream];
        let mut index: HashMap<&str, usize> = HashMap::new();
        for e in batch.iter().flat_map(|c| c.emits) {
            index.entry(e.stream.as_str()).or_insert_with(|| {
                keys.push(&e.stream);
                keys.len()
            });
        }
        let (lowest, highest) = id_range(batch.iter().map(|c| c.id));
        let size: usize = batch.iter().map(|c| 32 + packed_bytes(c.emits)).sum();
        let mut packed = ArrayPacker::with_capacity(size);
        for c in batch {
            packed.str(c.id.as_bytes());
            packed.uint(c.emits.len() as u64);
            for e in c.emits {
                packed.uint(index[e.stream.as_str()] as u64);
                packed.uint(e.fields.len() as u64);
                packed.fields(&e.fields);
            }
        }
        let cmd = self.pipe.cmd("EVALSHA");
        fenced_call(cmd, &ACK_WITH_EMITS, g.fence.as_ref(), &keys)
            .arg(&g.group)
            .arg(&g.consumer)
            .arg(lowest)
            .arg(highest)
            .arg(range_rows(batch.len()))
            .arg(packed.finish());
        self.writes.push(Write::Emits(batch.len()));
    }

    /// Adds one [`DEAD_LETTER`] move of entry `id`: the record's metadata,
    /// then the payload — inline when the host holds it, copied inside
    /// Redis when it was withheld, none when trimmed.
    ///
    /// `EVALSHA <dead-letter> 2 stream dlq group consumer id inline|copy|none maxlen m meta… fields…`
    pub fn dead_letter(
        &mut self,
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
        let cmd = self.pipe.cmd("EVALSHA");
        let cmd = fenced_call(cmd, &DEAD_LETTER, g.fence.as_ref(), &[&g.stream, dead.dlq])
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
        self.writes.push(Write::DeadLetter);
    }

    /// Ends the round with a `WAIT` for `replicas` replicas, at most
    /// `timeout`.
    ///
    /// `WAIT replicas timeout-ms`
    pub fn wait_for(&mut self, replicas: u32, timeout: std::time::Duration) {
        self.pipe
            .cmd("WAIT")
            .arg(replicas)
            .arg(timeout.as_millis() as u64);
        self.writes.push(Write::Wait);
    }

    /// Sends the round. `Err` if the round trip itself failed: nothing is
    /// known about what was written.
    pub async fn send(&self, con: &mut MultiplexedConnection) -> RedisResult<RoundReplies> {
        let replies: Vec<RedisResult<Value>> = self.pipe.query_async(con).await?;
        let mut out = RoundReplies::default();
        for (write, reply) in self.writes.iter().zip(replies) {
            if let Err(e) = &reply
                && classify(e) == ErrorClass::Connection
            {
                out.redirected = Some(e.clone());
            }
            match *write {
                Write::Ack => {
                    if reply.as_ref().is_err_and(|e| e.code() == Some("NOSCRIPT")) {
                        out.reload = true;
                    }
                    out.acked = Some(reply.map(drop));
                }
                Write::Emits(n) => {
                    let results =
                        call_results(reply, n, &mut out.reload, |v| ack_with_emits_results(v, n));
                    out.calls.push(results);
                }
                Write::Wait => {
                    out.replicated =
                        Some(reply.and_then(|v| {
                            u64::from_redis_value(v).map_err(redis::RedisError::from)
                        }));
                }
                Write::DeadLetter => {
                    let results = call_results(reply, 1, &mut out.reload, |v| {
                        vec![CommitResult::from_value(v)]
                    });
                    out.calls.push(results);
                }
            }
        }
        Ok(out)
    }
}

/// One script call's per-entry results (`read` from its reply), or `None`
/// if it did not run and may if sent again; sets `reload` if it did not run
/// for want of the script.
fn call_results(
    reply: RedisResult<Value>,
    entries: usize,
    reload: &mut bool,
    read: impl FnOnce(&Value) -> Vec<CommitResult>,
) -> Option<Vec<CommitResult>> {
    match reply {
        Ok(value) => Some(read(&value)),
        Err(e) if e.code() == Some("NOSCRIPT") => {
            *reload = true;
            None
        }
        Err(e) if e.code() == Some(FENCED) => Some(vec![CommitResult::Fenced; entries]),
        Err(e) if classify(&e) != ErrorClass::Permanent => None,
        // The script itself failed (e.g. out of memory before its first
        // write): each of its entries was refused.
        Err(e) => Some(vec![CommitResult::Refused(e.to_string()); entries]),
    }
}

/// The per-entry results of one ack-with-emits call of `n` entries.
fn ack_with_emits_results(value: &Value, n: usize) -> Vec<CommitResult> {
    match value {
        Value::Array(values) if values.len() == n => {
            values.iter().map(CommitResult::from_value).collect()
        }
        other => vec![CommitResult::from_value(other); n],
    }
}

/// Loads every script (after a `NOSCRIPT`: Redis restarted or flushed them).
pub async fn load_scripts(con: &mut MultiplexedConnection) -> RedisResult<()> {
    let fenceable = [&*ACK, &*ACK_WITH_EMITS, &*DEAD_LETTER, &*CLAIM]
        .into_iter()
        .flat_map(|s| s.forms());
    for script in fenceable.chain([&*DELETE_CONSUMER_IF_EMPTY]) {
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

    #[test]
    fn a_call_fills_up_to_its_entry_and_value_limits() {
        let emit = |fields: usize| Emit {
            stream: "out".into(),
            fields: (0..fields).map(|_| ("k", "")).collect(),
        };
        let mut size = EmitCallSize::default();
        assert!((0..EMIT_CALL_ENTRIES).all(|_| size.admit(&[])));
        assert!(!size.admit(&[]), "one entry too many starts a new call");
        let mut size = EmitCallSize::default();
        let wide = [emit(EMIT_CALL_VALUES / 2)];
        assert!(size.admit(&wide), "alone it always fits");
        assert!(!size.admit(&wide), "two would exceed the values");
        assert!(!size.admit(&[emit(EMIT_CALL_VALUES)]));
        let big = |bytes: usize| Emit {
            stream: "out".into(),
            fields: [("k", vec![0; bytes])].into_iter().collect(),
        };
        let mut size = EmitCallSize::default();
        assert!(size.admit(&[big(EMIT_CALL_BYTES / 2)]));
        assert!(
            !size.admit(&[big(EMIT_CALL_BYTES / 2)]),
            "two would exceed the bytes"
        );
        assert!(
            !size.admit(&[big(EMIT_CALL_BYTES * 2)]),
            "an entry over the budget gets a call of its own"
        );
    }

    #[test]
    fn a_call_that_did_not_run_is_sent_again_and_a_failed_one_refuses_its_entries() {
        let err = |kind| redis::RedisError::from((redis::ErrorKind::Server(kind), "test"));
        let one = |v: &Value| vec![CommitResult::from_value(v)];
        let mut reload = false;
        let noscript = Err(err(redis::ServerErrorKind::NoScript));
        assert_eq!(call_results(noscript, 2, &mut reload, one), None);
        assert!(reload, "the scripts are loaded again first");
        let mut reload = false;
        let loading = Err(err(redis::ServerErrorKind::BusyLoading));
        assert_eq!(call_results(loading, 2, &mut reload, one), None);
        assert!(!reload);
        let failed = Err(err(redis::ServerErrorKind::ResponseError));
        let refused = call_results(failed, 2, &mut reload, one).expect("settled");
        assert_eq!(refused.len(), 2);
        assert!(
            refused
                .iter()
                .all(|r| matches!(r, CommitResult::Refused(_)))
        );
        let done = call_results(Ok(Value::Int(1)), 1, &mut reload, one);
        assert_eq!(done, Some(vec![CommitResult::Done]));
    }
}
