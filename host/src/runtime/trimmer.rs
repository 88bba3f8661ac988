//! Retention: every `--trim-interval`, trim the stream to `--maxlen` and/or
//! `--max-age`, but never past the oldest entry any group of the stream has
//! not yet delivered or still has pending (one atomic script computes that
//! floor and trims). When a lagging group holds retention back, say so once
//! per change, and keep it visible in the run's counters.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use crate::stream::RedisLink;
use crate::stream::scripts::TRIM_SAFELY;

/// The trim task.
#[derive(Debug)]
pub struct Trimmer {
    /// Its own connection.
    pub link: RedisLink,
    /// Stream to trim.
    pub stream: String,
    /// Approximate length cap.
    pub maxlen: Option<u64>,
    /// Age cap.
    pub max_age: Option<Duration>,
    /// Time between trims.
    pub interval: Duration,
    /// Run counters.
    pub stats: Arc<Stats>,
}

/// What one trim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimReport {
    /// Entries removed.
    pub trimmed: u64,
    /// The group that kept the policy from being met, if any.
    pub held_by: Option<String>,
    /// The oldest entry some group still needs.
    pub floor: Option<String>,
}

impl Trimmer {
    /// Trims every interval until `cancel` fires; returns at once if no
    /// retention policy is configured.
    pub async fn run(mut self, cancel: CancellationToken) {
        if self.maxlen.is_none() && self.max_age.is_none() {
            return;
        }
        let mut held_by: Option<String> = None;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let Some(mut con) = self.link.connection(&cancel).await else {
                return;
            };
            let report = match self.trim_once(&mut con).await {
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
            if report.trimmed > 0 {
                tracing::debug!(stream = %self.stream, trimmed = report.trimmed, "retention applied");
            }
        }
    }

    /// One atomic trim.
    pub async fn trim_once(
        &self,
        con: &mut redis::aio::MultiplexedConnection,
    ) -> redis::RedisResult<TrimReport> {
        let age_cutoff = self
            .max_age
            .map(|age| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                format!("{}-0", now.saturating_sub(age).as_millis())
            })
            .unwrap_or_default();
        let maxlen = self.maxlen.map(|n| n.to_string()).unwrap_or_default();
        let (trimmed, holder, floor): (u64, String, String) = TRIM_SAFELY
            .key(&self.stream)
            .arg(maxlen)
            .arg(age_cutoff)
            .invoke_async(con)
            .await?;
        Ok(TrimReport {
            trimmed,
            held_by: (!holder.is_empty()).then_some(holder),
            floor: (!floor.is_empty()).then_some(floor),
        })
    }
}
