//! The reaper: every `--claim-interval`, XAUTOCLAIM to self every entry of the
//! group idle for `--claim-idle` (a crashed or stopped peer's, or one released
//! after a retry backoff), following the cursor until it returns to `0-0`.
//! Claimed entries are dispatched like new ones (the delivery limit is checked
//! first); ids whose payload was trimmed become `trimmed` dead letters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::dispatch::Dispatcher;
use super::stats::Stats;
use crate::stream::commands::{self, GroupRef};
use crate::stream::{Entry, ErrorClass, Payload, RedisLink};

/// The reaper task.
#[derive(Debug)]
pub struct Reaper {
    /// Its own connection.
    pub link: RedisLink,
    /// Stream, group, consumer (the claim target).
    pub group: GroupRef,
    /// Minimum idle time of entries to claim.
    pub claim_idle: Duration,
    /// Time between sweeps.
    pub interval: Duration,
    /// Entries per XAUTOCLAIM page (and window slots taken per page).
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

    /// One full pass over the PEL; `Err` once cancelled.
    async fn sweep(&mut self, cancel: &CancellationToken) -> Result<(), ()> {
        let mut cursor = "0-0".to_owned();
        let mut total = 0u64;
        loop {
            let mut permits = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(()),
                p = self.window.clone().acquire_many_owned(self.batch as u32) => p.map_err(|_| ())?,
            };
            let mut con = self.link.connection(cancel).await.ok_or(())?;
            let page = match commands::autoclaim(
                &mut con,
                &self.group,
                self.claim_idle,
                &cursor,
                self.batch,
            )
            .await
            {
                Ok(page) => page,
                Err(e) => {
                    if e.code() != Some("NOGROUP") && self.link.failed(&e) == ErrorClass::Permanent
                    {
                        tracing::error!(error = %e, "XAUTOCLAIM failed");
                    }
                    // NOGROUP: the reader recreates the group; try next sweep.
                    return Ok(());
                }
            };
            let mut entries = page.claimed;
            if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                // XAUTOCLAIM does not say how often an entry was delivered;
                // XPENDING over the claimed range does (this claim included).
                let limit = entries.len() + self.dispatch.inflight.len() + 16;
                let rows = match commands::own_pending_between(
                    &mut con,
                    &self.group,
                    &first.id,
                    &last.id,
                    limit,
                )
                .await
                {
                    Ok(rows) => rows,
                    Err(e) => {
                        self.link.failed(&e);
                        // Claimed entries stay ours and are reclaimed next sweep.
                        return Ok(());
                    }
                };
                let counts: HashMap<String, u32> =
                    rows.into_iter().map(|r| (r.id, r.deliveries)).collect();
                for e in &mut entries {
                    e.delivery_count = counts.get(&e.id).copied().unwrap_or(1);
                }
            }
            self.link.succeeded();
            entries.extend(page.deleted.into_iter().map(|id| Entry {
                id,
                payload: Payload::Trimmed,
                delivery_count: 0,
            }));
            if !entries.is_empty() {
                total += entries.len() as u64;
                self.stats.read(entries.len() as u64);
                if !self.dispatch.dispatch(entries, &mut permits) {
                    return Err(());
                }
            }
            if page.next == "0-0" {
                break;
            }
            cursor = page.next;
        }
        if total > 0 {
            self.stats.reclaimed(total);
            tracing::info!(entries = total, "reclaimed idle pending entries");
        }
        Ok(())
    }
}
