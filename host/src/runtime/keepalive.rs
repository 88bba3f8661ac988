//! Keep-alive: entries held longer than half of `--claim-idle` (queued in the
//! window, in a long handler call, or waiting out a retry backoff) are
//! re-claimed to this consumer with `XCLAIM … JUSTID`, which resets their idle
//! time without counting a delivery, so a peer's reaper never steals work in
//! progress.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::inflight::InFlight;
use super::stats::Stats;
use crate::stream::commands;
use crate::stream::{GroupRef, RedisLink};

/// The keep-alive task.
#[derive(Debug)]
pub struct KeepAlive {
    /// Its own connection.
    pub link: RedisLink,
    /// Stream, group, consumer.
    pub group: GroupRef,
    /// The reclaim threshold this protects against.
    pub claim_idle: Duration,
    /// Entries this process holds.
    pub inflight: Arc<InFlight>,
    /// Run counters.
    pub stats: Arc<Stats>,
}

impl KeepAlive {
    /// Renews held entries until `stop` fires (after the drain is complete:
    /// handlers still run during the shutdown grace period).
    pub async fn run(mut self, stop: CancellationToken) {
        let age = self.claim_idle / 2;
        let every = (self.claim_idle / 8).max(Duration::from_millis(5));
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let due = self.inflight.due_for_touch(age);
            if due.is_empty() {
                continue;
            }
            let Some(mut con) = self.link.connection(&stop).await else {
                return;
            };
            for chunk in due.chunks(1000) {
                let group = &self.group;
                match commands::claim_owned(&mut con, group, &group.consumer, None, chunk).await {
                    Ok(n) => {
                        self.link.succeeded();
                        self.stats.touched(n);
                        tracing::debug!(
                            renewed = n,
                            held = chunk.len(),
                            "keep-alive renewed entries still in progress"
                        );
                    }
                    Err(e) => {
                        self.link.failed(&e);
                        break;
                    }
                }
            }
        }
    }
}
