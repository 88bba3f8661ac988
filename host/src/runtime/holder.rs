//! The holder: every claim this process makes on entries it already holds,
//! in one task so they can never overtake each other (a late renewal would
//! otherwise undo a release).
//!
//! - **Keep-alive.** Entries held longer than half of `--claim-idle` (queued,
//!   in a long call, or waiting out a retry backoff) are re-claimed to this
//!   consumer, which resets their idle time without counting a delivery, so
//!   a peer's reaper never steals work in progress. An entry counts as
//!   renewed only once Redis has taken the renewal.
//! - **Retry release.** A retryable failure waits out a backoff (`--retry-backoff`,
//!   doubling per delivery) still holding its window slot, then is released:
//!   its idle time is set to `--claim-idle`, so the next reaper sweep — ours
//!   or a peer's — claims it, which counts the delivery durably in Redis.
//!
//! - **Retry here.** With `--order-by`, a keyed entry is not released after
//!   its backoff but claimed again by this consumer (counting the delivery
//!   the same way) and handed back to the workers, so its key stays busy
//!   until it succeeds or is dead-lettered.
//!
//! All go through the fenced claim script, which also records an entry
//! whose payload was trimmed meanwhile, exactly once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::dead_letters::DlqTarget;
use super::dispatch::WeakDispatcher;
use super::inflight::InFlight;
use super::stats::Stats;
use crate::config::MAX_RETRY_BACKOFF;
use crate::stream::{ClaimSpec, LinkError, RedisLink};
use crate::vocab::entry::Entry;

/// Most ids per claim call.
const CLAIM_CHUNK: usize = 1_000;

/// How long a release may wait for Redis before the entries are left to age
/// into reclaimability on their own.
const RELEASE_BUDGET: Duration = Duration::from_secs(2);

/// An entry whose handler asked for a retry (or whose commit was refused).
#[derive(Debug)]
pub struct Retry {
    /// Entry id.
    pub id: String,
    /// Deliveries so far.
    pub deliveries: u32,
    /// Its window slot, held until the release.
    pub permit: Option<OwnedSemaphorePermit>,
    /// The entry itself, if it is to be retried here (ordered by key).
    pub entry: Option<Entry>,
}

/// `base · 2^(deliveries-1)`, capped.
pub fn backoff(base: Duration, deliveries: u32) -> Duration {
    let exp = deliveries.saturating_sub(1).min(20);
    base.saturating_mul(1 << exp).min(MAX_RETRY_BACKOFF)
}

/// A retry waiting for its release time (ordered by time, then id).
#[derive(Debug)]
struct Waiting {
    due: Instant,
    id: String,
    deliveries: u32,
    permit: Option<OwnedSemaphorePermit>,
    entry: Option<Entry>,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.due, &self.id) == (other.due, &other.id)
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, &self.id).cmp(&(other.due, &other.id))
    }
}

/// The holder task.
#[derive(Debug)]
pub struct Holder {
    /// Its own connection.
    pub link: RedisLink,
    /// Where `trimmed` records go.
    pub dlq: DlqTarget,
    /// The reclaim threshold keep-alive protects against, and the idle time
    /// released entries get.
    pub claim_idle: Duration,
    /// First retry backoff.
    pub base: Duration,
    /// Entries this process holds.
    pub inflight: Arc<InFlight>,
    /// Run counters.
    pub stats: Arc<Stats>,
    /// Where entries retried here go back to the workers.
    pub dispatch: WeakDispatcher,
}

impl Holder {
    /// Runs until its inbox closes (the committer is done), then releases
    /// whatever still waits, at once, so the next owner need not wait.
    /// Keep-alive runs all along: handlers still run during the drain.
    pub async fn run(mut self, mut inbox: UnboundedReceiver<Retry>) {
        let mut waiting: BinaryHeap<Reverse<Waiting>> = BinaryHeap::new();
        let age = self.claim_idle / 2;
        let every = (self.claim_idle / 8).max(Duration::from_millis(5));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_due = waiting.peek().map(|Reverse(w)| w.due);
            tokio::select! {
                item = inbox.recv() => match item {
                    Some(r) => waiting.push(Reverse(Waiting {
                        due: Instant::now() + backoff(self.base, r.deliveries),
                        id: r.id,
                        deliveries: r.deliveries,
                        permit: r.permit,
                        entry: r.entry,
                    })),
                    None => break,
                },
                _ = sleep_until_opt(next_due) => {
                    let now = Instant::now();
                    let (mut here, mut release) = (Vec::new(), Vec::new());
                    while waiting.peek().is_some_and(|Reverse(w)| w.due <= now) {
                        if let Some(Reverse(w)) = waiting.pop() {
                            if w.entry.is_some() { here.push(w) } else { release.push(w) }
                        }
                    }
                    let kept = self.release(release).await;
                    for mut w in kept.into_iter().chain(self.retry_here(here).await) {
                        // Redis did not answer, or the group is gone (the
                        // reader puts it back, with the rows of what we
                        // hold): try again a backoff step later.
                        w.due = Instant::now() + self.base;
                        waiting.push(Reverse(w));
                    }
                }
                _ = tick.tick() => self.renew(age).await,
            }
        }
        let rest: Vec<Waiting> = waiting.into_iter().map(|Reverse(w)| w).collect();
        self.release_or_let_go(rest).await;
    }

    /// Re-claims held entries older than `age`.
    async fn renew(&mut self, age: Duration) {
        let due = self.inflight.due_for_touch(age);
        if due.is_empty() {
            return;
        }
        let budget = super::cancel_after(RELEASE_BUDGET);
        let (dlq, stats) = (&self.dlq, &self.stats);
        let spec = ClaimSpec::renew(&dlq.group.consumer);
        for chunk in due.chunks(CLAIM_CHUNK) {
            let targets: Vec<_> = chunk.iter().map(|id| (id.as_str(), None)).collect();
            let targets = &targets;
            let claimed = self
                .link
                .run(&budget, |mut con| async move {
                    dlq.claim(&mut con, spec, targets, stats).await
                })
                .await;
            match claimed {
                Ok(c) => {
                    self.stats.touched(c.claimed.len() as u64);
                    // Not ours any more, or recorded as trimmed: nothing left
                    // to renew either way.
                    self.inflight.renewed(chunk.iter().map(String::as_str));
                    tracing::debug!(
                        renewed = c.claimed.len(),
                        held = chunk.len(),
                        "keep-alive renewed entries still in progress"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, entries = chunk.len(), "keep-alive could not renew entries; trying again at the next tick");
                    return;
                }
            }
        }
    }

    /// Claims `entries` again for another delivery here and hands them back
    /// to the workers (or, past `--max-deliveries`, to the dead-letter
    /// stream). One no longer ours, or recorded as trimmed by the claim,
    /// lets the next entry of its key start. Returns those Redis did not
    /// answer for, still held.
    async fn retry_here(&mut self, entries: Vec<Waiting>) -> Vec<Waiting> {
        if entries.is_empty() {
            return entries;
        }
        if self.dispatch.upgrade().is_none() {
            // The pipeline stopped reading: leave them to the next owner.
            self.release(entries).await;
            return Vec::new();
        }
        let budget = super::cancel_after(RELEASE_BUDGET);
        let (dlq, stats) = (&self.dlq, &self.stats);
        let spec = ClaimSpec::recover(&dlq.group.consumer);
        let targets: Vec<_> = entries
            .iter()
            .map(|w| (w.id.as_str(), Some(w.deliveries)))
            .collect();
        let attempts = &AtomicU32::new(0);
        let targets = &targets;
        let claimed = self
            .link
            .run(&budget, |mut con| async move {
                let spec = spec.repeated(attempts.fetch_add(1, Ordering::Relaxed));
                dlq.claim(&mut con, spec, targets, stats).await
            })
            .await;
        let counts: HashMap<String, u32> = match claimed {
            Ok(c) => c.claimed.into_iter().collect(),
            Err(e) => {
                tracing::debug!(error = %e, entries = entries.len(), "could not claim entries for their retry; trying again");
                return entries;
            }
        };
        // Not held across the claim: a live dispatcher keeps the workers' queue open.
        let dispatch = self.dispatch.upgrade();
        let mut stopped = Vec::new();
        for mut w in entries {
            let (Some(mut entry), Some(permit)) = (w.entry.take(), w.permit.take()) else {
                continue;
            };
            match (counts.get(&w.id), &dispatch) {
                (Some(&deliveries), Some(dispatch)) => {
                    self.inflight.redelivered(&w.id, deliveries);
                    entry.delivery_count = deliveries;
                    dispatch.route(entry, permit);
                }
                (Some(&deliveries), None) => stopped.push(Waiting { deliveries, ..w }),
                (None, _) => {
                    self.inflight.drop_all([w.id.as_str()]);
                    if let Some(key) = self.dispatch.key_of(&entry) {
                        self.dispatch.finished(&entry.id, &key);
                    }
                }
            }
        }
        // Claimed just as the pipeline stopped reading: released with the
        // delivery counted, for the next owner.
        self.release_or_let_go(stopped).await;
        Vec::new()
    }

    /// [`Holder::release`] when nothing will try again (the pipeline is
    /// stopping): what could not be released is let go all the same.
    async fn release_or_let_go(&mut self, entries: Vec<Waiting>) {
        let kept = self.release(entries).await;
        self.inflight.drop_all(kept.iter().map(|w| w.id.as_str()));
    }

    /// Sets the idle time of entries still ours to `claim_idle` and lets go
    /// of them (and of their window slots). Returns, still held, those
    /// whose group had vanished: the reader puts it back with a pending row
    /// for each entry held here, and they are released then.
    async fn release(&mut self, entries: Vec<Waiting>) -> Vec<Waiting> {
        if entries.is_empty() {
            return entries;
        }
        // Let go only after the release: a group put back meanwhile gets
        // the rows of what is still held. Our reaper may skip a released
        // entry once in between; the next sweep (or a peer's) takes it.
        let mut vanished: HashSet<&str> = HashSet::new();
        // A short try: if Redis stays unreachable the entries simply age
        // into reclaimability on their own, no longer renewed.
        let budget = super::cancel_after(RELEASE_BUDGET);
        let (dlq, stats) = (&self.dlq, &self.stats);
        let me = &dlq.group.consumer;
        let spec = ClaimSpec::release(me, me, self.claim_idle);
        // Only the delivery that failed is released: if our own recovery
        // has claimed the entry again since, it is being handled anew.
        let targets: Vec<_> = entries
            .iter()
            .map(|w| (w.id.as_str(), Some(w.deliveries)))
            .collect();
        for chunk in targets.chunks(CLAIM_CHUNK) {
            let released = self
                .link
                .run(&budget, |mut con| async move {
                    dlq.claim(&mut con, spec, chunk, stats).await
                })
                .await;
            match released {
                Ok(c) => self.stats.released(c.claimed.len() as u64),
                Err(LinkError::Refused(e)) if e.code() == Some("NOGROUP") => {
                    vanished.extend(chunk.iter().map(|(id, _)| *id));
                }
                Err(e) => {
                    tracing::debug!(error = %e, entries = chunk.len(), "could not release entries for retry; they will be reclaimed once idle");
                }
            }
        }
        let vanished: HashSet<String> = vanished.into_iter().map(str::to_owned).collect();
        let (kept, gone): (Vec<Waiting>, Vec<Waiting>) =
            entries.into_iter().partition(|w| vanished.contains(&w.id));
        self.inflight.drop_all(gone.iter().map(|w| w.id.as_str()));
        kept
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_delivery_and_is_capped() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 1), Duration::from_millis(500));
        assert_eq!(backoff(base, 2), Duration::from_secs(1));
        assert_eq!(backoff(base, 4), Duration::from_secs(4));
        assert_eq!(backoff(base, 40), MAX_RETRY_BACKOFF);
    }
}
