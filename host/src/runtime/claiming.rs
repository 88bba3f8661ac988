//! Taking entries over for handling — the reaper's claims and start-up
//! recovery alike: claim (fenced, recording entries whose payload is gone),
//! then read the payloads of what was claimed, within the entry limits.

use std::collections::HashMap;

use redis::RedisResult;
use redis::aio::MultiplexedConnection;

use super::dead_letters::DlqTarget;
use super::stats::Stats;
use crate::stream::PayloadReader;
use crate::stream::claims::{ClaimSpec, Target};
use crate::stream::pending::PendingRow;
use crate::vocab::entry::Entry;

/// Claims `rows` (pending entries with the delivery count they were seen
/// with) with `spec` and returns the claimed ones with their payloads
/// and delivery counts. The payloads are read first: entries never change,
/// and a read that fails then costs nothing, where a claim whose follow-up
/// read failed would have counted a delivery nobody made. An entry whose
/// payload is gone by the claim is recorded as `trimmed` by the claim; one
/// read before the claim stays good.
pub async fn claim_entries(
    con: &mut MultiplexedConnection,
    payloads: &PayloadReader,
    dlq: &DlqTarget,
    spec: ClaimSpec<'_>,
    rows: &[PendingRow],
    stats: &Stats,
) -> RedisResult<Vec<Entry>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let fetched = payloads.fetch(&dlq.group.stream, &ids).await?;
    let targets: Vec<Target<'_>> = rows
        .iter()
        .map(|r| (r.id.as_str(), Some(r.deliveries)))
        .collect();
    let claimed = dlq.claim(con, spec, &targets, stats).await?;
    let mut counts: HashMap<String, u32> = claimed.claimed.into_iter().collect();
    Ok(fetched
        .into_iter()
        .filter_map(|mut e| {
            e.delivery_count = counts.remove(&e.id)?;
            Some(e)
        })
        .collect())
}
