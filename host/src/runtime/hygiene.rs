//! Consumer hygiene at the end of a clean shutdown: optionally hand this
//! consumer's unfinished entries over (claimable at once by a live peer), then
//! delete the consumer — but only if it owns nothing, so no entry is dropped.

use std::time::Duration;

use redis::RedisResult;
use redis::aio::MultiplexedConnection;

use super::dead_letters::DlqTarget;
use super::stats::Stats;
use crate::stream::RedisLink;
use crate::stream::claims::{self, ClaimSpec};
use crate::stream::commands::GroupRef;
use crate::stream::consumers;
use crate::stream::pending::{self, PendingQuery};

/// Consumers of the group looked at for a live peer to hand over to.
const PEERS_READ: usize = 1_000;

/// What the clean-up did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HygieneReport {
    /// Entries handed over.
    pub handed_over: u64,
    /// The peer that got them (None: left to any reaper).
    pub peer: Option<String>,
    /// Whether the consumer was deleted.
    pub deleted: bool,
}

/// Runs the clean-up with a few seconds' budget; errors are logged, never fatal.
pub async fn clean_up(
    mut link: RedisLink,
    dlq: &DlqTarget,
    claim_idle: Duration,
    handover: bool,
    stats: &Stats,
) -> HygieneReport {
    let group = &dlq.group;
    let budget = super::cancel_after(Duration::from_secs(3));
    let mut report = HygieneReport::default();
    if handover {
        match link
            .run(&budget, |mut con| async move {
                hand_over(&mut con, dlq, claim_idle, stats).await
            })
            .await
        {
            Ok((n, peer)) => {
                report.handed_over = n;
                report.peer = peer;
            }
            Err(e) => {
                tracing::warn!(error = %e, "handover failed; unfinished entries will be reclaimed once idle")
            }
        }
    }
    match link
        .run(&budget, |mut con| async move {
            claims::delete_consumer_if_empty(&mut con, group).await
        })
        .await
    {
        Ok(true) => report.deleted = true,
        Ok(false) => {
            tracing::info!(consumer = %group.consumer, "consumer kept: it still owns pending entries (they will be reclaimed once idle)")
        }
        Err(e) => tracing::warn!(error = %e, "could not delete the consumer"),
    }
    if report.handed_over > 0 || report.deleted {
        let peer = report.peer.as_deref().unwrap_or("any reaper");
        tracing::info!(handed_over = report.handed_over, peer = %peer, deleted = report.deleted, consumer = %group.consumer, "consumer clean-up done");
    }
    report
}

/// Moves this consumer's pending entries to the most recently active peer
/// (or leaves them with us), with their idle time set to `claim_idle` so the
/// next reaper sweep takes them. The claim is fenced like every other, and
/// an entry whose payload is gone is recorded as `trimmed` on the way.
async fn hand_over(
    con: &mut MultiplexedConnection,
    dlq: &DlqTarget,
    claim_idle: Duration,
    stats: &Stats,
) -> RedisResult<(u64, Option<String>)> {
    let group = &dlq.group;
    let peer = live_peer(con, group, claim_idle).await?;
    let target = peer.clone().unwrap_or_else(|| group.consumer.clone());
    let spec = ClaimSpec::release(&group.consumer, &target, claim_idle);
    let mut moved = 0;
    let mut after = "-".to_owned();
    loop {
        let from = pending::after(&after);
        let query = PendingQuery::oldest(1000)
            .between(&from, "+")
            .of(Some(&group.consumer));
        let rows = pending::rows(con, &group.stream, &group.group, query).await?;
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        let targets: Vec<_> = rows.iter().map(|r| (r.id.as_str(), None)).collect();
        moved += dlq.claim(con, spec, &targets, stats).await?.claimed.len() as u64;
    }
    Ok((moved, peer))
}

/// The peer with the shortest idle time below `claim_idle`, if any.
async fn live_peer(
    con: &mut MultiplexedConnection,
    group: &GroupRef,
    claim_idle: Duration,
) -> RedisResult<Option<String>> {
    let mut best: Option<(u64, String)> = None;
    for c in consumers::first(con, &group.stream, &group.group, PEERS_READ).await? {
        let live = c.name != group.consumer && c.idle_ms < claim_idle.as_millis() as u64;
        tracing::debug!(consumer = %c.name, idle_ms = c.idle_ms, live, "handover candidate");
        if live && best.as_ref().is_none_or(|(i, _)| c.idle_ms < *i) {
            best = Some((c.idle_ms, c.name));
        }
    }
    Ok(best.map(|(_, name)| name))
}
