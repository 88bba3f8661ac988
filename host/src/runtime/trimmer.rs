//! Retention: every `--trim-interval`, trim the stream to `--maxlen` and/or
//! `--max-age`, but never past the oldest entry any group of the stream has
//! not yet delivered or still has pending (the script computes that floor
//! and trims atomically, reading a bounded number of entries per call).
//! When a lagging group holds retention back, say so once per change, and
//! keep it visible in the run's counters.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use crate::stream::retention::{self, TrimMemo};
use crate::stream::{LinkError, RedisLink};
use crate::vocab::retention::Retention;

/// The trim task.
#[derive(Debug)]
pub struct Trimmer {
    /// Its own connection.
    pub link: RedisLink,
    /// Stream to trim.
    pub stream: String,
    /// What to keep.
    pub policy: Retention,
    /// Time between trims.
    pub interval: Duration,
    /// Run counters.
    pub stats: Arc<Stats>,
}

impl Trimmer {
    /// Trims every interval until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut held_by: Option<String> = None;
        let memo = TrimMemo::default();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let (stream, policy, memo) = (&self.stream, self.policy, &memo);
            let trimmed = self
                .link
                .run(&cancel, |mut con| async move {
                    retention::trim(&mut con, stream, policy, memo, false).await
                })
                .await;
            let report = match trimmed {
                Ok(Some(report)) => report,
                // No stream yet: nothing to trim.
                Ok(None) => continue,
                Err(LinkError::Cancelled(_)) => return,
                Err(LinkError::Refused(e)) => {
                    tracing::warn!(error = %e, stream = %self.stream, "retention trim failed");
                    continue;
                }
            };
            self.stats.trimmed(report.trimmed, report.held_by.is_some());
            if report.held_by != held_by {
                match &report.held_by {
                    Some(group) => tracing::warn!(
                        stream = %self.stream, group = %group, oldest_needed = report.floor.as_deref().unwrap_or(""),
                        "retention held back: this group has not yet delivered or acked older entries"
                    ),
                    None => tracing::info!(stream = %self.stream, "retention no longer held back"),
                }
                held_by = report.held_by.clone();
            }
            if report.trimmed > 0 || report.steps > 1 {
                tracing::debug!(stream = %self.stream, trimmed = report.trimmed, steps = report.steps, "retention applied");
            }
        }
    }
}
