//! Retryable failures wait out a short, growing backoff while this process
//! still holds them (keep-alive renews them), then are released: their idle
//! time is set to `--claim-idle` so the next reaper sweep — ours or a peer's —
//! claims them, which counts the delivery durably in Redis.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::inflight::InFlight;
use super::stats::Stats;
use crate::config::MAX_RETRY_BACKOFF;
use crate::stream::commands;
use crate::stream::{GroupRef, RedisLink};

/// An entry whose handler asked for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Entry id.
    pub id: String,
    /// Deliveries so far.
    pub deliveries: u32,
}

/// `base · 2^(deliveries-1)`, capped.
pub fn backoff(base: Duration, deliveries: u32) -> Duration {
    let exp = deliveries.saturating_sub(1).min(20);
    base.saturating_mul(1 << exp).min(MAX_RETRY_BACKOFF)
}

/// Holds retryable failures until their backoff is over.
#[derive(Debug)]
pub struct RetryQueue {
    /// Connection used for releases.
    pub link: RedisLink,
    /// Stream, group, consumer.
    pub group: GroupRef,
    /// Idle time given to released entries, so a reaper takes them at once.
    pub claim_idle: Duration,
    /// First backoff.
    pub base: Duration,
    /// Entries this process holds.
    pub inflight: Arc<InFlight>,
    /// Run counters.
    pub stats: Arc<Stats>,
}

impl RetryQueue {
    /// Runs until the inbox closes (the committer is done), then releases
    /// whatever is still waiting, at once, so the next owner need not wait.
    pub async fn run(mut self, mut inbox: UnboundedReceiver<Retry>) {
        let mut waiting: BinaryHeap<Reverse<(Instant, String)>> = BinaryHeap::new();
        loop {
            let next_due = waiting.peek().map(|Reverse((at, _))| *at);
            let item = tokio::select! {
                item = inbox.recv() => item,
                _ = sleep_until_opt(next_due) => {
                    let now = Instant::now();
                    let mut due = Vec::new();
                    while waiting.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                        if let Some(Reverse((_, id))) = waiting.pop() {
                            due.push(id);
                        }
                    }
                    self.release(due).await;
                    continue;
                }
            };
            match item {
                Some(r) => waiting.push(Reverse((
                    Instant::now() + backoff(self.base, r.deliveries),
                    r.id,
                ))),
                None => break,
            }
        }
        let rest: Vec<String> = waiting.into_iter().map(|Reverse((_, id))| id).collect();
        self.release(rest).await;
    }

    /// Sets the idle time of entries still ours to `claim_idle` and lets go of them.
    async fn release(&mut self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        // Let go first: once the idle time is set a reaper may claim the
        // entry at any moment, and ours must not skip it as still held.
        self.inflight.drop_all(ids.iter().map(String::as_str));
        // A short, single attempt: if Redis is unreachable the entries simply
        // age into reclaimability on their own once keep-alive lets go.
        let cancel = super::cancel_after(Duration::from_secs(2));
        if let Some(mut con) = self.link.connection(&cancel).await {
            for chunk in ids.chunks(1000) {
                let (group, idle) = (&self.group, Some(self.claim_idle));
                match commands::claim_owned(&mut con, group, &group.consumer, idle, chunk).await {
                    Ok(n) => {
                        self.link.succeeded();
                        self.stats.released(n);
                    }
                    Err(e) => {
                        self.link.failed(&e);
                        tracing::debug!(error = %e, entries = chunk.len(), "could not release entries for retry; they will be reclaimed once idle");
                    }
                }
            }
        }
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
