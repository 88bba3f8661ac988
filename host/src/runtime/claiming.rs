//! Taking entries over for handling — the reaper's claims and start-up
//! recovery alike: claim (fenced, recording entries whose payload is gone),
//! then read the payloads of what was claimed, within the entry limits.

use std::collections::HashMap;
use std::sync::Arc;

use redis::RedisResult;
use redis::aio::MultiplexedConnection;

use super::stats::Stats;
use crate::plugin::{LoadedPlugin, PluginSlot};
use crate::stream::claims::{self, ClaimSpec, DeadLetters, Target};
use crate::stream::dlq::DeadLetterSource;
use crate::stream::pending::PendingRow;
use crate::stream::{GroupRef, PayloadReader};
use crate::vocab::entry::Entry;
use crate::vocab::outcome::DeadLetterKind;

/// The dead-letter stream of a pipeline, and whose name goes on its records.
#[derive(Debug, Clone)]
pub struct DlqTarget {
    /// The dead-letter stream key.
    pub key: String,
    /// Its approximate length cap.
    pub maxlen: Option<u64>,
    /// Stream, group and consumer the records name.
    pub group: GroupRef,
    /// The plugin version in service, for the records.
    pub plugin: Arc<PluginSlot>,
}

impl DlqTarget {
    /// The records' destination, naming `plugin` (the version in service).
    pub fn dead_letters<'a>(&'a self, plugin: &'a LoadedPlugin) -> DeadLetters<'a> {
        let g = &self.group;
        DeadLetters {
            dlq: &self.key,
            maxlen: self.maxlen,
            source: DeadLetterSource {
                stream: &g.stream,
                group: &g.group,
                consumer: &g.consumer,
                plugin: plugin.name(),
                plugin_version: plugin.version(),
            },
        }
    }

    /// [`claims::claim`] with this target for `trimmed` records; counts and
    /// logs those.
    pub async fn claim(
        &self,
        con: &mut MultiplexedConnection,
        spec: ClaimSpec<'_>,
        targets: &[Target<'_>],
        stats: &Stats,
    ) -> RedisResult<claims::Claimed> {
        let plugin = self.plugin.current();
        let dead = self.dead_letters(&plugin);
        let claimed = claims::claim(con, &self.group, spec, dead, targets).await?;
        if let Some(first) = claimed.trimmed.first() {
            for _ in &claimed.trimmed {
                stats.dead_lettered(DeadLetterKind::Trimmed);
            }
            tracing::warn!(entries = claimed.trimmed.len(), first = %first, kind = "trimmed", dlq = %self.key,
                "entries dead-lettered: their payload was trimmed from the stream while they were pending");
        }
        Ok(claimed)
    }
}

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
