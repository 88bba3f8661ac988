//! The reaper: every `--claim-interval`, page through the group's pending
//! list (`XPENDING`, one bounded page at a time) and claim to self every
//! entry idle for `--claim-idle` that this process does not hold — a crashed
//! or stopped peer's, or one released after a retry backoff. The claim is
//! fenced (an entry a peer took meanwhile is skipped) and counts the
//! delivery durably; claimed entries are dispatched like new ones (the
//! delivery limit is checked first); entries found without payload get
//! their `trimmed` record inside the claim.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::claiming::{DlqTarget, claim_entries};
use super::dispatch::Dispatcher;
use super::stats::Stats;
use crate::stream::commands;
use crate::stream::{ClaimSpec, ErrorClass, PayloadReader, RedisLink};

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
}

impl Reaper {
    /// Sweeps every interval until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if self.sweep(&cancel).await.is_err() {
                return;
            }
        }
    }

    /// One full pass over the pending list; `Err` once cancelled.
    async fn sweep(&mut self, cancel: &CancellationToken) -> Result<(), ()> {
        let mut after = "-".to_owned();
        let mut total = 0u64;
        let g = self.dlq.group.clone();
        loop {
            let mut permits = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(()),
                p = self.window.clone().acquire_many_owned(self.batch as u32) => p.map_err(|_| ())?,
            };
            let mut con = self.link.connection(cancel).await.ok_or(())?;
            let rows = match commands::pending_page(&mut con, &g, &after, self.batch, None).await {
                Ok(rows) => rows,
                Err(e) => {
                    self.failed(&e, "reading the pending list");
                    return Ok(());
                }
            };
            let Some(last) = rows.last() else { break };
            after = last.id.clone();
            let full_page = rows.len() == self.batch;
            let idle_ms = self.claim_idle.as_millis() as u64;
            let candidates: Vec<_> = rows
                .into_iter()
                .filter(|r| r.idle_ms >= idle_ms && !self.dispatch.inflight.contains(&r.id))
                .collect();
            if !candidates.is_empty() {
                let spec = ClaimSpec::reap(&g.consumer, self.claim_idle);
                let claimed = claim_entries(
                    &mut con,
                    &mut self.payloads,
                    &self.dlq,
                    spec,
                    &candidates,
                    &self.stats,
                )
                .await;
                let entries = match claimed {
                    Ok(entries) => entries,
                    // Claimed entries stay ours and are reclaimed next sweep.
                    Err(e) => {
                        self.failed(&e, "claiming idle entries");
                        return Ok(());
                    }
                };
                self.link.succeeded();
                if !entries.is_empty() {
                    total += entries.len() as u64;
                    self.stats.read(entries.len() as u64);
                    if !self.dispatch.dispatch(entries, &mut permits) {
                        return Err(());
                    }
                }
            }
            if !full_page {
                break;
            }
        }
        if total > 0 {
            self.stats.reclaimed(total);
            tracing::info!(entries = total, "reclaimed idle pending entries");
        }
        Ok(())
    }

    /// Handles a failed step: the sweep ends, the next one tries again.
    fn failed(&mut self, e: &redis::RedisError, what: &str) {
        // NOGROUP: the reader recreates the group.
        if e.code() != Some("NOGROUP") && self.link.failed(e) == ErrorClass::Permanent {
            tracing::error!(error = %e, "{what} failed");
        }
    }
}
