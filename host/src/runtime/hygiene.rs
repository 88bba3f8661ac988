//! Consumer hygiene at the end of a clean shutdown: optionally hand this
//! consumer's unfinished entries over (claimable at once by a live peer), then
//! delete the consumer — but only if it owns nothing, so no entry is dropped.

use std::time::Duration;

use redis::Value;

use crate::stream::RedisLink;
use crate::stream::commands::{self, GroupRef};
use crate::stream::scripts::DELETE_CONSUMER_IF_EMPTY;

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
    group: &GroupRef,
    claim_idle: Duration,
    handover: bool,
) -> HygieneReport {
    let budget = super::cancel_after(Duration::from_secs(3));
    let mut report = HygieneReport::default();
    if let Some(mut con) = link.connection(&budget).await {
        if handover {
            match hand_over(&mut con, group, claim_idle).await {
                Ok((n, peer)) => {
                    report.handed_over = n;
                    report.peer = peer;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "handover failed; unfinished entries will be reclaimed once idle")
                }
            }
        }
        let deleted: redis::RedisResult<u64> = DELETE_CONSUMER_IF_EMPTY
            .key(&group.stream)
            .arg(&group.group)
            .arg(&group.consumer)
            .invoke_async(&mut con)
            .await;
        match deleted {
            Ok(1) => report.deleted = true,
            Ok(_) => {
                tracing::info!(consumer = %group.consumer, "consumer kept: it still owns pending entries (they will be reclaimed once idle)")
            }
            Err(e) => tracing::warn!(error = %e, "could not delete the consumer"),
        }
    }
    if report.handed_over > 0 || report.deleted {
        let peer = report.peer.as_deref().unwrap_or("any reaper");
        tracing::info!(handed_over = report.handed_over, peer = %peer, deleted = report.deleted, consumer = %group.consumer, "consumer clean-up done");
    }
    report
}

/// Moves this consumer's pending entries to the most recently active peer
/// (or leaves them with us), with their idle time set to `claim_idle` so the
/// next reaper sweep takes them.
async fn hand_over(
    con: &mut redis::aio::MultiplexedConnection,
    group: &GroupRef,
    claim_idle: Duration,
) -> redis::RedisResult<(u64, Option<String>)> {
    let peer = live_peer(con, group, claim_idle).await?;
    let target = peer.clone().unwrap_or_else(|| group.consumer.clone());
    let mut moved = 0;
    let mut after = "-".to_owned();
    loop {
        let rows = commands::own_pending(con, group, &after, 1000).await?;
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        moved += commands::claim_owned(con, group, &target, Some(claim_idle), &ids).await?;
    }
    Ok((moved, peer))
}

/// The peer with the shortest idle time below `claim_idle`, if any.
async fn live_peer(
    con: &mut redis::aio::MultiplexedConnection,
    group: &GroupRef,
    claim_idle: Duration,
) -> redis::RedisResult<Option<String>> {
    let consumers: Vec<Vec<Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&group.stream)
        .arg(&group.group)
        .query_async(con)
        .await?;
    let mut best: Option<(u64, String)> = None;
    for c in consumers {
        let (mut name, mut idle) = (String::new(), u64::MAX);
        let mut it = c.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match redis::from_redis_value::<String>(k)?.as_str() {
                "name" => name = redis::from_redis_value(v)?,
                "idle" => idle = redis::from_redis_value(v)?,
                _ => {}
            }
        }
        let live = name != group.consumer && idle < claim_idle.as_millis() as u64;
        tracing::debug!(consumer = %name, idle_ms = idle, live, "handover candidate");
        if live && best.as_ref().is_none_or(|(i, _)| idle < *i) {
            best = Some((idle, name));
        }
    }
    Ok(best.map(|(_, name)| name))
}
