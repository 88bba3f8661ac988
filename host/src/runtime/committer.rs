//! The committer: the only task that acks or dead-letters. It batches settled
//! entries into one pipelined round trip — plain XACKs for simple successes,
//! fenced scripts for ack-with-emits and dead-letter moves — and retries
//! through connection loss. Every step is idempotent, so a retry after a lost
//! reply never appends twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::{Pipeline, RedisResult, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

use super::dispatch::Settled;
use super::inflight::{InFlight, LastFailures};
use super::retry::Retry;
use super::stats::Stats;
use crate::outcome::{DeadLetterKind, Outcome};
use crate::stream::dlq::{self, DeadLetterSource};
use crate::stream::scripts::{ACK_WITH_EMITS, DEAD_LETTER};
use crate::stream::{ErrorClass, GroupRef, RedisLink};

/// Most settled entries folded into one round trip.
const MAX_COMMIT_BATCH: usize = 4096;

/// How long the last flush after an abandoned shutdown may keep retrying.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// Turns outcomes into Redis writes.
#[derive(Debug)]
pub struct Committer {
    /// The committer's own connection.
    pub link: RedisLink,
    /// Stream, group and consumer acked against.
    pub group: GroupRef,
    /// Dead-letter stream key.
    pub dlq: String,
    /// Run counters.
    pub stats: Arc<Stats>,
    /// Entries this process holds; committed ones are let go.
    pub inflight: Arc<InFlight>,
    /// Last failure reasons of entries being retried.
    pub failures: Arc<LastFailures>,
    /// Retryable failures, to be released after a backoff.
    pub retries: UnboundedSender<Retry>,
}

impl Committer {
    /// Commits until the inbox closes (every sender gone), or until `abandon`
    /// fires; then flushes whatever is already settled, for at most a few seconds.
    pub async fn run(mut self, mut inbox: UnboundedReceiver<Settled>, abandon: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                item = inbox.recv() => item,
                _ = abandon.cancelled() => None,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < MAX_COMMIT_BATCH {
                match inbox.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
            self.commit(batch, &abandon).await;
        }
        let mut rest = Vec::new();
        while let Ok(s) = inbox.try_recv() {
            rest.push(s);
        }
        if !rest.is_empty() {
            let deadline = super::cancel_after(FINAL_FLUSH);
            self.commit(rest, &deadline).await;
        }
    }

    /// Commits one batch, then lets go of its entries (they are acked,
    /// dead-lettered, or left pending for a reaper after a refused write).
    async fn commit(&mut self, batch: Vec<Settled>, stop: &CancellationToken) {
        let mut acks = Vec::new();
        let mut scripted = Vec::new();
        for s in batch {
            match &s.outcome {
                Outcome::Retry { reason } => {
                    self.stats.retried(1);
                    tracing::warn!(entry = %s.entry.id, deliveries = s.entry.delivery_count, plugin = %s.plugin.identity(), reason, "handler failed; entry stays pending for retry");
                    self.failures.record(&s.entry.id, reason);
                    // Still held: the retry queue releases it after a backoff.
                    let _ = self.retries.send(Retry {
                        id: s.entry.id.clone(),
                        deliveries: s.entry.delivery_count,
                    });
                }
                Outcome::Ack { emits } if emits.is_empty() => acks.push(s),
                _ => scripted.push(s),
            }
        }
        let ids: Vec<String> = acks
            .iter()
            .chain(&scripted)
            .map(|s| s.entry.id.clone())
            .collect();
        // Only entries delivered before can have a remembered failure.
        let redelivered: Vec<String> = acks
            .iter()
            .chain(&scripted)
            .filter(|s| s.entry.delivery_count > 1)
            .map(|s| s.entry.id.clone())
            .collect();
        self.write(acks, scripted, stop).await;
        self.inflight.drop_all(ids.iter().map(String::as_str));
        self.failures.forget(redelivered.iter().map(String::as_str));
    }

    /// Writes acks and scripted commits, retrying through connection loss
    /// until `stop` fires.
    async fn write(
        &mut self,
        mut acks: Vec<Settled>,
        scripted: Vec<Settled>,
        stop: &CancellationToken,
    ) {
        let mut calls = Call::plan(scripted);
        while !acks.is_empty() || !calls.is_empty() {
            let entries = acks.len() + calls.iter().map(Call::len).sum::<usize>();
            let Some(mut con) = self.link.connection(stop).await else {
                tracing::warn!(
                    entries,
                    "stopped before these commits reached Redis; the entries stay pending and will be redelivered"
                );
                return;
            };
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            if !acks.is_empty() {
                let ids: Vec<&str> = acks.iter().map(|s| s.entry.id.as_str()).collect();
                pipe.cmd("XACK")
                    .arg(&self.group.stream)
                    .arg(&self.group.group)
                    .arg(ids);
            }
            for call in &calls {
                self.add_call(&mut pipe, call);
            }
            let results: Vec<RedisResult<Value>> = match pipe.query_async(&mut con).await {
                Ok(r) => r,
                Err(e) => {
                    match self.link.failed(&e) {
                        ErrorClass::Connection => {}
                        ErrorClass::Transient => {
                            if !self.link.pause(stop).await {
                                return;
                            }
                        }
                        ErrorClass::Permanent => {
                            tracing::error!(error = %e, entries, "Redis refused a commit batch; the entries stay pending");
                            self.stats.commit_failed(entries as u64);
                            return;
                        }
                    }
                    continue;
                }
            };
            self.link.succeeded();
            self.stats.committed();
            let mut results = results.into_iter();
            if !acks.is_empty() {
                match results.next() {
                    Some(Ok(_)) => self.stats.acked(acks.len() as u64, 0),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, entries = acks.len(), "XACK failed; the entries stay pending and will be redelivered");
                        self.stats.commit_failed(acks.len() as u64);
                    }
                    None => {}
                }
                acks.clear();
            }
            calls = self.settle_calls(calls, results, &mut con).await;
            if !calls.is_empty() && !self.link.pause(stop).await {
                return;
            }
        }
    }

    /// Accounts for each script result; returns the calls worth retrying.
    async fn settle_calls(
        &mut self,
        calls: Vec<Call>,
        results: impl Iterator<Item = RedisResult<Value>>,
        con: &mut redis::aio::MultiplexedConnection,
    ) -> Vec<Call> {
        let mut retry = Vec::new();
        let mut reload = false;
        for (call, r) in calls.into_iter().zip(results) {
            match r {
                Ok(value) => match call {
                    Call::DeadLetter(s) => self.settle_one(&s, &value),
                    Call::Emits(batch) => {
                        let values = match value {
                            Value::Array(values) => values,
                            other => vec![other; batch.len()],
                        };
                        for (s, v) in batch.iter().zip(&values) {
                            self.settle_one(s, v);
                        }
                    }
                },
                Err(e) if e.code() == Some("NOSCRIPT") => {
                    reload = true;
                    retry.push(call);
                }
                Err(e) if crate::stream::link::classify(&e) != ErrorClass::Permanent => {
                    retry.push(call)
                }
                Err(e) => {
                    self.stats.commit_failed(call.len() as u64);
                    if call.len() == 1 {
                        tracing::error!(entry = %call.first_id(), error = %e, "Redis refused the commit; the entry stays pending");
                    } else {
                        tracing::error!(first_entry = %call.first_id(), entries = call.len(), error = %e, "Redis refused the commit; the entries stay pending");
                    }
                }
            }
        }
        if reload {
            for script in [&*ACK_WITH_EMITS, &*DEAD_LETTER] {
                if let Err(e) = script.prepare_invoke().load_async(con).await {
                    self.link.failed(&e);
                }
            }
        }
        retry
    }

    /// Accounts for one entry's script result: 1 done, 0 no longer ours,
    /// anything else the error that left it pending.
    fn settle_one(&self, s: &Settled, value: &Value) {
        match value {
            Value::Int(1) => self.record_success(s),
            Value::Int(0) => {
                self.stats.not_pending(1);
                tracing::debug!(entry = %s.entry.id, "entry no longer pending for this consumer; commit skipped");
            }
            other => {
                self.stats.commit_failed(1);
                let error = match other {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    Value::SimpleString(t) => t.clone(),
                    Value::ServerError(e) => format!("{e:?}"),
                    v => format!("unexpected reply {v:?}"),
                };
                tracing::error!(entry = %s.entry.id, error, "Redis refused the commit; the entry stays pending and will be redelivered");
            }
        }
    }

    fn record_success(&self, s: &Settled) {
        match &s.outcome {
            Outcome::Ack { emits } => self.stats.acked(1, emits.len() as u64),
            Outcome::DeadLetter { kind, reason } => {
                self.stats.dead_lettered(*kind);
                tracing::warn!(entry = %s.entry.id, kind = %kind, deliveries = s.entry.delivery_count, dlq = %self.dlq, reason, "entry dead-lettered");
            }
            Outcome::Retry { .. } => {}
        }
    }

    fn add_call(&self, pipe: &mut Pipeline, call: &Call) {
        let g = &self.group;
        match call {
            Call::Emits(batch) => {
                let mut keys: Vec<&str> = vec![&g.stream];
                let mut index: HashMap<&str, usize> = HashMap::new();
                for e in batch.iter().flat_map(emits_of) {
                    index.entry(e.stream.as_str()).or_insert_with(|| {
                        keys.push(&e.stream);
                        keys.len()
                    });
                }
                let (lowest, highest) = id_range(batch.iter().map(|s| s.entry.id.as_str()));
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(ACK_WITH_EMITS.get_hash())
                    .arg(keys.len())
                    .arg(&keys)
                    .arg(&g.group)
                    .arg(&g.consumer)
                    .arg(lowest)
                    .arg(highest)
                    // Room for the batch plus as many of our other entries
                    // interleaved in the range; misses are checked one by one.
                    .arg(batch.len() * 4 + 64);
                for s in batch {
                    let emits = emits_of(s);
                    cmd.arg(&s.entry.id).arg(emits.len());
                    for e in emits {
                        cmd.arg(index[e.stream.as_str()]).arg(e.fields.len());
                        for (k, v) in &e.fields {
                            cmd.arg(k).arg(v);
                        }
                    }
                }
            }
            Call::DeadLetter(s) => {
                let Outcome::DeadLetter { kind, reason } = &s.outcome else {
                    return;
                };
                let source = DeadLetterSource {
                    stream: &g.stream,
                    group: &g.group,
                    consumer: &g.consumer,
                    plugin: s.plugin.name(),
                    plugin_version: s.plugin.version(),
                };
                let record = dlq::record(&s.entry, *kind, reason, source);
                // Trimmed entries were already dropped from the PEL by the
                // XCLAIM that found them, so they cannot be fenced on it.
                let fenced = if *kind == DeadLetterKind::Trimmed {
                    "0"
                } else {
                    "1"
                };
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(DEAD_LETTER.get_hash())
                    .arg(2)
                    .arg(&g.stream)
                    .arg(&self.dlq)
                    .arg(&g.group)
                    .arg(&g.consumer)
                    .arg(&s.entry.id)
                    .arg(fenced);
                for (k, v) in &record {
                    cmd.arg(k).arg(v);
                }
            }
        }
    }
}

/// The lowest and highest stream ids among `ids`, in stream order
/// (`("-", "+")`, everything, when there are none).
fn id_range<'a>(ids: impl Iterator<Item = &'a str> + Clone) -> (&'a str, &'a str) {
    let order = |id: &&str| crate::stream::entry::id_parts(id);
    let lowest = ids.clone().min_by_key(order).unwrap_or("-");
    let highest = ids.max_by_key(order).unwrap_or("+");
    (lowest, highest)
}

/// What a settled success emitted (nothing for other outcomes).
fn emits_of(s: &Settled) -> &[crate::outcome::Emit] {
    match &s.outcome {
        Outcome::Ack { emits } => emits,
        _ => &[],
    }
}

/// Most entries acked with their emits by one script call: bounds how long
/// one call keeps Redis busy.
const EMIT_CALL_ENTRIES: usize = 128;
/// Most emitted values in one script call, for the same reason.
const EMIT_CALL_VALUES: usize = 16_384;

/// One scripted write in a commit round trip.
#[derive(Debug)]
enum Call {
    /// Successes with emits, acked by one batched script call.
    Emits(Vec<Settled>),
    /// One dead-letter move.
    DeadLetter(Settled),
}

impl Call {
    /// Groups scripted commits into calls: successes with emits in batches,
    /// dead-letter moves one by one (rare, and each carries a whole record).
    fn plan(scripted: Vec<Settled>) -> Vec<Call> {
        let mut calls = Vec::new();
        let mut batch: Vec<Settled> = Vec::new();
        let mut values = 0;
        for s in scripted {
            match &s.outcome {
                Outcome::Ack { .. } => {
                    let n: usize = emits_of(&s).iter().map(|e| 2 + 2 * e.fields.len()).sum();
                    if !batch.is_empty()
                        && (batch.len() >= EMIT_CALL_ENTRIES || values + n > EMIT_CALL_VALUES)
                    {
                        calls.push(Call::Emits(std::mem::take(&mut batch)));
                        values = 0;
                    }
                    values += n;
                    batch.push(s);
                }
                _ => calls.push(Call::DeadLetter(s)),
            }
        }
        if !batch.is_empty() {
            calls.push(Call::Emits(batch));
        }
        calls
    }

    fn len(&self) -> usize {
        match self {
            Call::Emits(b) => b.len(),
            Call::DeadLetter(_) => 1,
        }
    }

    fn first_id(&self) -> &str {
        match self {
            Call::Emits(b) => b.first().map_or("", |s| s.entry.id.as_str()),
            Call::DeadLetter(s) => &s.entry.id,
        }
    }
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
}
