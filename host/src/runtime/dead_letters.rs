//! Where a pipeline's dead letters go: its dead-letter stream, the stream,
//! group and consumer its records name, and the plugin version in service
//! that they cite; and the claims that record entries found trimmed.

use std::sync::Arc;

use redis::RedisResult;
use redis::aio::MultiplexedConnection;

use super::stats::Stats;
use crate::plugin::{LoadedPlugin, PluginSlot};
use crate::stream::GroupRef;
use crate::stream::claims::{self, ClaimSpec, DeadLetters, Target};
use crate::stream::dlq::DeadLetterSource;
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
