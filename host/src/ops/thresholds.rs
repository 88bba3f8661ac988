//! `host status --check`: the thresholds a stream's status can cross, each
//! read exactly from Redis (`XPENDING … IDLE` for pending age, the DLQ ids'
//! timestamps for its growth), so a check keeps no state between runs.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::OpsError;
use super::status::StreamStatus;
use crate::stream::count;
use crate::stream::pending::{self, PendingQuery};
use crate::vocab::ids::now_ms;

/// The thresholds of `status --check`.
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    /// Most entries a group may have undelivered.
    pub max_lag: Option<u64>,
    /// Longest a pending entry may wait since its last delivery.
    pub max_pending_age: Option<Duration>,
    /// Most dead letters that may have been added within `window`.
    pub max_dlq_growth: Option<u64>,
    /// The window of `max_dlq_growth`.
    pub window: Duration,
}

/// A threshold crossed.
#[derive(Debug, Clone, Serialize)]
pub struct Breach {
    /// The stream.
    pub stream: String,
    /// The flag: `max-lag`, `max-pending-age` or `max-dlq-growth`.
    pub threshold: &'static str,
    /// What crossed it, readably.
    pub message: String,
}

/// The thresholds `status` crosses. Pending age is read with
/// `XPENDING … IDLE`, so every pending entry counts, not only the listed
/// ones; DLQ growth counts the records whose ids (times) fall in the window.
pub async fn check(
    con: &mut MultiplexedConnection,
    status: &StreamStatus,
    t: &Thresholds,
) -> Result<Vec<Breach>, OpsError> {
    let mut out = Vec::new();
    let mut breach = |threshold, message| {
        out.push(Breach {
            stream: status.stream.clone(),
            threshold,
            message,
        })
    };
    for g in &status.groups {
        if let Some(max) = t.max_lag
            && g.lag > max
        {
            breach(
                "max-lag",
                format!(
                    "group {} lags {}{} entries (> {max})",
                    g.name,
                    if g.lag_exact { "" } else { "at least " },
                    g.lag
                ),
            );
        }
        if let Some(max) = t.max_pending_age {
            let ms = max.as_millis() as u64 + 1;
            let query = PendingQuery::oldest(1).idle_at_least(ms);
            let old = pending::rows(con, &status.stream, &g.name, query).await?;
            if let Some(p) = old.first() {
                breach(
                    "max-pending-age",
                    format!(
                        "group {} has entry {} pending for {} idle at {} (> {})",
                        g.name,
                        p.id,
                        p.consumer,
                        humantime::format_duration(Duration::from_millis(p.idle_ms)),
                        humantime::format_duration(max)
                    ),
                );
            }
        }
    }
    if let Some(max) = t.max_dlq_growth {
        let since = now_ms().saturating_sub(t.window.as_millis() as u64);
        // One more than the threshold is all it takes to cross it.
        let added = count::count(
            con,
            &status.dlq.key,
            &format!("{since}-0"),
            "+",
            max.saturating_add(1),
        )
        .await?;
        let (added, exact) = (added.count, added.exact);
        if added > max {
            breach(
                "max-dlq-growth",
                format!(
                    "{} got {}{added} dead letters in the last {} (> {max})",
                    status.dlq.key,
                    if !exact { "at least " } else { "" },
                    humantime::format_duration(t.window)
                ),
            );
        }
    }
    Ok(out)
}
