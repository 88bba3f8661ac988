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
use crate::stream::RedisLink;
use crate::stream::retention::{self, Retention, TrimMemo};

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
        let mut memo = TrimMemo::default();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let Some(mut con) = self.link.connection(&cancel).await else {
                return;
            };
            let report = match retention::trim(&mut con, &self.stream, self.policy, &mut memo).await
            {
                Ok(r) => {
                    self.link.succeeded();
                    r
                }
                Err(e) => {
                    if e.code() != Some("ERR") || !e.to_string().contains("no such key") {
                        self.link.failed(&e);
                        tracing::warn!(error = %e, stream = %self.stream, "retention trim failed");
                    }
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
