//! The committer: the only task that acks or dead-letters. It batches settled
//! entries into one pipelined round trip — plain XACKs for simple successes,
//! fenced scripts for ack-with-emits and dead-letter moves — and retries
//! through connection loss. Every step is idempotent, so a retry after a lost
//! reply never appends twice. A write Redis refuses for one entry (an emit
//! to a key of the wrong type, a dead letter refused for lack of memory) is
//! that entry's failure alone: it is retried like a retryable handler
//! failure, and its reason is what a `max-deliveries` record will say.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

use super::dead_letters::DlqTarget;
use super::dispatch::WeakDispatcher;
use super::holder::Retry;
use super::inflight::{InFlight, LastFailures};
use super::job::Settled;
use super::stats::Stats;
use crate::config::CommitWait;
use crate::stream::commits::{self, CommitResult, CommitRound, EmitCallSize, EmitCommit};
use crate::stream::dlq;
use crate::stream::outbox;
use crate::stream::scripts::FENCED;
use crate::stream::{ErrorClass, LinkError, RedisLink, link::classify};
use crate::vocab::msgpack::PackedFields;
use crate::vocab::outcome::Outcome;
use crate::vocab::partition::key_slot;

/// Most settled entries folded into one round trip.
const MAX_COMMIT_BATCH: usize = 4096;

/// How long the last flush after an abandoned shutdown may keep retrying.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// Turns outcomes into Redis writes.
#[derive(Debug)]
pub struct Committer {
    /// The committer's own connection.
    pub link: RedisLink,
    /// Stream, group and consumer acked against, and the dead-letter stream.
    pub dlq: DlqTarget,
    /// Run counters.
    pub stats: Arc<Stats>,
    /// Entries this process holds; committed ones are let go.
    pub inflight: Arc<InFlight>,
    /// Last failure reasons of entries being retried.
    pub failures: Arc<LastFailures>,
    /// Retryable failures, to be released after a backoff.
    pub retries: UnboundedSender<Retry>,
    /// Where a committed entry's key lets the next entry of the key start.
    pub dispatch: WeakDispatcher,
    /// On a cluster forwarding cross-slot emits: the source's outbox.
    pub outbox: Option<Outbox>,
    /// `--commit-wait`: a `WAIT` ends every round.
    pub commit_wait: Option<CommitWait>,
}

/// Where a source's emits to other cluster slots go with their acks.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// The outbox stream (the source's slot).
    pub key: String,
    /// The source's slot.
    pub slot: u16,
}

impl Outbox {
    /// Puts every emit of `s` whose target lives in another slot into the
    /// outbox instead, headed by its target and an idempotence key unique
    /// to the entry and the emit (`<source>/<id>/<n>`), which a redone
    /// commit repeats and the forwarder's check then drops.
    fn redirect(&self, source: &str, s: &mut Settled) {
        let Outcome::Ack { emits } = &mut s.outcome else {
            return;
        };
        for (n, emit) in emits.iter_mut().enumerate() {
            if key_slot(emit.stream.as_bytes()) == self.slot {
                continue;
            }
            let idem = format!("{source}/{}/{n}", s.entry.id);
            let headers: [(&[u8], &[u8]); 2] = [
                (outbox::TARGET.as_bytes(), emit.stream.as_bytes()),
                (outbox::IDEM.as_bytes(), idem.as_bytes()),
            ];
            emit.fields = PackedFields::after(&headers, &emit.fields);
            emit.stream = self.key.clone();
        }
    }
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
    /// dead-lettered, waiting for a retry, or left pending for a reaper
    /// after a refused batch).
    async fn commit(&mut self, batch: Vec<Settled>, stop: &CancellationToken) {
        let mut acks = Vec::new();
        let mut scripted = Vec::new();
        for mut s in batch {
            if let Some(outbox) = &self.outbox {
                outbox.redirect(&self.dlq.group.stream, &mut s);
            }
            match &s.outcome {
                Outcome::Retry { reason } => {
                    let reason = reason.clone();
                    self.retry(s, &reason);
                }
                Outcome::Ack { emits } if emits.is_empty() => acks.push(s),
                _ => scripted.push(s),
            }
        }
        let settled: Vec<(String, bool, Option<Vec<u8>>)> = acks
            .iter()
            .chain(&scripted)
            .map(|s| {
                let key = self.dispatch.key_of(&s.entry);
                (s.entry.id.clone(), s.entry.delivery_count > 1, key)
            })
            .collect();
        let retried: HashSet<String> = self.write(acks, scripted, stop).await.into_iter().collect();
        let done = settled.iter().filter(|(id, ..)| !retried.contains(id));
        self.inflight
            .drop_all(done.clone().map(|(id, ..)| id.as_str()));
        // Only entries delivered before can have a remembered failure.
        self.failures.forget(
            done.clone()
                .filter(|(_, again, _)| *again)
                .map(|(id, ..)| id.as_str()),
        );
        // After the commit, not before: the next entry of a key must not
        // commit ahead of this one.
        for (id, _, key) in done {
            if let Some(key) = key {
                self.dispatch.finished(id, key);
            }
        }
    }

    /// Leaves `s` pending for a retry: remembered why, released after a
    /// backoff, still holding its window slot meanwhile.
    fn retry(&self, mut s: Settled, reason: &str) {
        self.stats.retried(1);
        if matches!(s.outcome, Outcome::Retry { .. }) {
            tracing::warn!(entry = %s.entry.id, deliveries = s.entry.delivery_count, plugin = %s.plugin.identity(), reason, "handler failed; entry stays pending for retry");
        } else {
            tracing::error!(entry = %s.entry.id, deliveries = s.entry.delivery_count, reason, "Redis refused the commit; the entry stays pending for retry");
        }
        self.failures.record(&s.entry.id, reason);
        let id = s.entry.id.clone();
        let deliveries = s.entry.delivery_count;
        // Ordered entries are retried here, so their key waits for them.
        let here = self.dispatch.key_of(&s.entry).map(|_| s.entry);
        let _ = self.retries.send(Retry {
            id,
            deliveries,
            permit: s.permit.take(),
            entry: here,
        });
    }

    /// Writes acks and scripted commits, retrying through connection loss
    /// until `stop` fires. Returns the ids sent for a retry instead (their
    /// write was refused).
    async fn write(
        &mut self,
        mut acks: Vec<Settled>,
        scripted: Vec<Settled>,
        stop: &CancellationToken,
    ) -> Vec<String> {
        let mut retried = Vec::new();
        let mut calls = Call::plan(scripted);
        while !acks.is_empty() || !calls.is_empty() {
            let entries = acks.len() + calls.iter().map(Call::len).sum::<usize>();
            let round = &self.round(&acks, &calls);
            let sent = self
                .link
                .run(stop, |mut con| async move { round.send(&mut con).await })
                .await;
            let replies = match sent {
                Ok(replies) => replies,
                Err(LinkError::Cancelled(_)) => {
                    tracing::warn!(
                        entries,
                        "stopped before these commits reached Redis; the entries stay pending and will be redelivered"
                    );
                    return retried;
                }
                Err(LinkError::Refused(e)) => {
                    tracing::error!(error = %e, entries, "Redis refused a commit batch; the entries stay pending");
                    self.stats.commit_failed(entries as u64);
                    return retried;
                }
            };
            self.stats.committed();
            match replies.acked {
                Some(Ok(())) => {
                    self.stats.acked(acks.len() as u64, 0);
                    acks.clear();
                }
                // Sent again once the scripts are loaded, or on the node
                // the slot moved to.
                Some(Err(e))
                    if e.code() == Some("NOSCRIPT") || classify(&e) == ErrorClass::Connection => {}
                Some(Err(e)) if e.code() == Some(FENCED) => {
                    self.fenced(acks.len());
                    acks.clear();
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, entries = acks.len(), "XACK failed; the entries stay pending and will be redelivered");
                    self.stats.commit_failed(acks.len() as u64);
                    acks.clear();
                }
                None => {}
            }
            if let Some(replicated) = &replies.replicated {
                self.replicated(replicated);
            }
            calls = self.settle_calls(calls, replies.calls, &mut retried);
            if let Some(e) = &replies.redirected {
                self.link.redirected(e);
            }
            // Redis restarted or flushed its scripts: load them before the
            // calls go again (if that fails, they say NOSCRIPT once more).
            if replies.reload
                && let Err(LinkError::Cancelled(_)) = self
                    .link
                    .run(stop, |mut con| async move {
                        commits::load_scripts(&mut con).await
                    })
                    .await
            {
                return retried;
            }
            if (!calls.is_empty() || !acks.is_empty()) && self.link.pause(stop).await.is_err() {
                return retried;
            }
        }
        retried
    }

    /// The round trip that writes `acks` and `calls`.
    fn round(&self, acks: &[Settled], calls: &[Call]) -> CommitRound {
        let g = &self.dlq.group;
        let ids: Vec<&str> = acks.iter().map(|s| s.entry.id.as_str()).collect();
        let mut round = CommitRound::new(g, &ids);
        let wait = self.commit_wait;
        for call in calls {
            match call {
                Call::Emits(batch) => {
                    let commits: Vec<EmitCommit<'_>> = batch
                        .iter()
                        .map(|s| EmitCommit {
                            id: &s.entry.id,
                            emits: emits_of(s),
                        })
                        .collect();
                    round.ack_with_emits(g, &commits);
                }
                Call::DeadLetter(s) => {
                    let Outcome::DeadLetter { kind, reason } = &s.outcome else {
                        continue;
                    };
                    let dead = self.dlq.dead_letters(&s.plugin);
                    let meta = dlq::metadata(
                        *kind,
                        reason,
                        &s.entry.id,
                        dlq::deliveries(*kind, s.entry.delivery_count),
                        dead.source,
                    );
                    round.dead_letter(g, dead, &s.entry.id, &meta, &s.entry.payload);
                }
            }
        }
        if let Some(w) = wait {
            round.wait_for(w.replicas, w.timeout);
        }
        round
    }

    /// Accounts for each script call's results; returns the calls that did
    /// not run, to send again.
    fn settle_calls(
        &mut self,
        calls: Vec<Call>,
        replies: Vec<Option<Vec<CommitResult>>>,
        retried: &mut Vec<String>,
    ) -> Vec<Call> {
        let mut again = Vec::new();
        for (call, reply) in calls.into_iter().zip(replies) {
            let Some(results) = reply else {
                again.push(call);
                continue;
            };
            for (s, result) in call.into_entries().zip(results) {
                if let Some(id) = self.settle_one(s, result) {
                    retried.push(id);
                }
            }
        }
        again
    }

    /// Accounts for one entry's result; `Some(id)` if it went for a retry.
    fn settle_one(&self, s: Settled, result: CommitResult) -> Option<String> {
        match result {
            CommitResult::Done => {
                self.record_success(&s);
                None
            }
            CommitResult::NotPending => {
                self.stats.not_pending(1);
                tracing::debug!(entry = %s.entry.id, "entry no longer pending for this consumer; commit skipped");
                None
            }
            CommitResult::Fenced => {
                self.fenced(1);
                None
            }
            CommitResult::Refused(why) => {
                self.stats.commit_failed(1);
                let what = match &s.outcome {
                    Outcome::DeadLetter { .. } => "Redis refused the dead-letter write",
                    _ => "Redis refused the commit",
                };
                let id = s.entry.id.clone();
                self.retry(s, &format!("{what}: {why}"));
                Some(id)
            }
        }
    }

    /// Accounts for a round's `WAIT`: fewer replicas than asked means a
    /// failover now could still lose this round's commits.
    fn replicated(&self, replicated: &redis::RedisResult<u64>) {
        let Some(wanted) = self.commit_wait.map(|w| w.replicas) else {
            return;
        };
        match replicated {
            Ok(n) if *n >= u64::from(wanted) => {}
            Ok(n) => {
                self.stats.commit_wait_short(1);
                tracing::warn!(replicas = n, wanted, stream = %self.dlq.group.stream,
                    "a commit round reached fewer replicas than --commit-wait asks: a failover now could undo it (its entries would be handled again)");
            }
            Err(e) => {
                self.stats.commit_wait_short(1);
                tracing::warn!(error = %e, stream = %self.dlq.group.stream, "the commit round's WAIT failed");
            }
        }
    }

    /// Writes refused because this host no longer holds the partition's
    /// lease: the entries stay pending, for the new owner to take over.
    fn fenced(&self, entries: usize) {
        self.stats.fenced(entries as u64);
        tracing::warn!(
            entries,
            stream = %self.dlq.group.stream,
            "the partition's lease is no longer this host's: these commits were refused, and the entries are left to its new owner"
        );
    }

    fn record_success(&self, s: &Settled) {
        match &s.outcome {
            Outcome::Ack { emits } => self.stats.acked(1, emits.len() as u64),
            Outcome::DeadLetter { kind, reason } => {
                self.stats.dead_lettered(*kind);
                tracing::warn!(entry = %s.entry.id, kind = %kind, deliveries = s.entry.delivery_count, dlq = %self.dlq.key, reason, "entry dead-lettered");
            }
            Outcome::Retry { .. } => {}
        }
    }
}

/// What a settled success emitted (nothing for other outcomes).
fn emits_of(s: &Settled) -> &[crate::vocab::outcome::Emit] {
    match &s.outcome {
        Outcome::Ack { emits } => emits,
        _ => &[],
    }
}

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
        let mut size = EmitCallSize::default();
        for s in scripted {
            match &s.outcome {
                Outcome::Ack { emits } => {
                    if !size.admit(emits) {
                        calls.push(Call::Emits(std::mem::take(&mut batch)));
                    }
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

    fn into_entries(self) -> impl Iterator<Item = Settled> {
        match self {
            Call::Emits(b) => b.into_iter(),
            Call::DeadLetter(s) => vec![s].into_iter(),
        }
    }
}
