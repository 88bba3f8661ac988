//! The reaper: every `--claim-interval`, page through the group's pending
//! list (`XPENDING`, one bounded page at a time) and claim to self every
//! entry idle for `--claim-idle` that no pipeline of this process holds — a
//! crashed or stopped peer's, or one released after a retry backoff. The claim is
//! fenced (an entry a peer took meanwhile is skipped) and counts the
//! delivery durably; claimed entries are dispatched like new ones (the
//! delivery limit is checked first); entries found without payload get
//! their `trimmed` record inside the claim.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::claiming::claim_entries;
use super::controls::ReclaimNow;
use super::dead_letters::DlqTarget;
use super::dispatch::{Dispatcher, window_slots};
use super::holdings::GroupHoldings;
use super::stats::Stats;
use crate::stream::pending::{self, PendingQuery};
use crate::stream::{Cancelled, ClaimSpec, LinkError, PayloadReader, RedisLink};

/// The reaper task.
#[derive(Debug)]
pub struct Reaper {
    /// Its own connection.
    pub link: RedisLink,
    /// Where payloads are read.
    pub payloads: PayloadReader,
    /// Stream, group, consumer (the claim target), and where `trimmed`
    /// records go.
    pub dlq: DlqTarget,
    /// Minimum idle time of entries to claim.
    pub claim_idle: Duration,
    /// Time between sweeps.
    pub interval: Duration,
    /// Entries per pending-list page (and window slots taken per page).
    pub batch: usize,
    /// Slots for entries read but not yet settled.
    pub window: Arc<Semaphore>,
    /// Where claimed entries go.
    pub dispatch: Dispatcher,
    /// Run counters.
    pub stats: Arc<Stats>,
    /// The dashboard's "reclaim now" (`None`: taken by an earlier reaper).
    pub requests: Option<mpsc::UnboundedReceiver<ReclaimNow>>,
    /// What every pipeline of this process holds of the group: never
    /// claimed, whatever idle time a sweep asks for.
    pub holdings: Arc<GroupHoldings>,
}

impl Reaper {
    /// Sweeps every interval until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut requests = self.requests.take();
        let mut next = tokio::time::Instant::now() + self.interval;
        loop {
            let asked = async {
                match requests.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            // A request first: a sweep can take longer than the interval
            // (it waits for window slots), and the timer, always due by
            // then, would otherwise keep an operator's request waiting.
            let (min_idle, reply) = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                asked = asked => match asked {
                    Some(ReclaimNow { min_idle, reply }) => (min_idle, Some(reply)),
                    None => {
                        requests = None;
                        continue;
                    }
                },
                _ = tokio::time::sleep_until(next) => {
                    next = tokio::time::Instant::now() + self.interval;
                    (self.claim_idle, None)
                }
            };
            match self.sweep(min_idle, &cancel).await {
                Ok(claimed) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(claimed);
                    }
                }
                Err(Cancelled) => return,
            }
        }
    }

    /// One full pass over the pending list, claiming entries idle for
    /// `min_idle`; a step Redis refuses ends it early (the next sweep tries
    /// again). Returns how many entries were claimed.
    async fn sweep(
        &mut self,
        min_idle: Duration,
        cancel: &CancellationToken,
    ) -> Result<u64, Cancelled> {
        let mut after = "-".to_owned();
        let mut total = 0u64;
        let (g, batch) = (&self.dlq.group, self.batch);
        loop {
            let mut permits = window_slots(&self.window, batch, cancel).await?;
            let from = after.as_str();
            let page = self
                .link
                .run(cancel, |mut con| async move {
                    let from = pending::after(from);
                    let query = PendingQuery::oldest(batch).between(&from, "+");
                    pending::rows(&mut con, &g.stream, &g.group, query).await
                })
                .await;
            let rows = match page {
                Ok(rows) => rows,
                Err(e) => return ended_early(e, "reading the pending list").map(|()| total),
            };
            let Some(last) = rows.last() else { break };
            after = last.id.clone();
            let full_page = rows.len() == batch;
            let idle_ms = min_idle.as_millis() as u64;
            let idle: Vec<_> = rows.into_iter().filter(|r| r.idle_ms >= idle_ms).collect();
            let candidates = self.holdings.not_held(idle, |r| r.id.as_str());
            if !candidates.is_empty() {
                let (payloads, dlq, stats) = (&self.payloads, &self.dlq, &self.stats);
                let (spec, candidates) = (ClaimSpec::reap(&g.consumer, min_idle), &candidates);
                let attempts = &AtomicU32::new(0);
                let claimed = self
                    .link
                    .run(cancel, |mut con| async move {
                        let spec = spec.repeated(attempts.fetch_add(1, Ordering::Relaxed));
                        claim_entries(&mut con, payloads, dlq, spec, candidates, stats).await
                    })
                    .await;
                let entries = match claimed {
                    Ok(entries) => entries,
                    // Payloads are read before the claim, so a failed read
                    // claims nothing; entries a refused claim did take stay
                    // ours and are reclaimed once idle for --claim-idle again.
                    Err(e) => return ended_early(e, "claiming idle entries").map(|()| total),
                };
                if !entries.is_empty() {
                    // Counted per page: a sweep ended early by a refusal
                    // still counts what it claimed before.
                    total += entries.len() as u64;
                    self.stats.read(entries.len() as u64);
                    self.stats.reclaimed(entries.len() as u64);
                    if !self.dispatch.dispatch(entries, &mut permits) {
                        return Err(Cancelled);
                    }
                }
            }
            if !full_page {
                break;
            }
        }
        if total > 0 {
            tracing::info!(
                entries = total,
                min_idle_ms = min_idle.as_millis() as u64,
                "reclaimed idle pending entries"
            );
        }
        Ok(total)
    }
}

/// Ends a sweep at a step that failed: logs a refusal (but NOGROUP: the
/// reader recreates the group); `Err` once cancelled.
fn ended_early(e: LinkError, what: &str) -> Result<(), Cancelled> {
    match e {
        LinkError::Cancelled(c) => Err(c),
        LinkError::Refused(e) => {
            if e.code() != Some("NOGROUP") {
                tracing::error!(error = %e, "{what} failed");
            }
            Ok(())
        }
    }
}
