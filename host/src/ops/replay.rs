//! `host replay`: a window of a stream, read without any group, and — with
//! a plugin — what the handler would make of each entry (ack with its
//! emits, retry, or dead-letter), computed with the same admission rules and
//! the same call path as `run`, writing nothing unless asked to append the
//! emits ([`append_emits`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::stream::cluster::Nodes;
use serde::Serialize;

use super::OpsError;
use super::dlq::ShownField;
use crate::plugin::{
    EmitTargets, Event, LoadedPlugin, PluginEngine, PluginInstance, PluginSettings,
};
use crate::stream::entries::add_batch;
use crate::stream::inspect::RawEntry;
use crate::vocab::admission::Admission;
use crate::vocab::entry::{Entry, Payload};
use crate::vocab::limits::Limits;
use crate::vocab::outcome::Outcome;

/// What the handler would have made of one entry.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum HandlerVerdict {
    /// Acked, with these emits.
    Ack {
        /// The entries it would append.
        emits: Vec<EmitView>,
    },
    /// Left pending for a retry.
    Retry {
        /// Why.
        reason: String,
    },
    /// Dead-lettered.
    DeadLetter {
        /// `permanent`, `invalid`, …
        kind: String,
        /// Why.
        reason: String,
    },
}

/// An emitted entry.
#[derive(Debug, Clone, Serialize)]
pub struct EmitView {
    /// Target stream.
    pub stream: String,
    /// Its fields.
    pub fields: Vec<ShownField>,
    /// Raw fields, for `--emit`.
    #[serde(skip)]
    pub raw: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One replayed entry.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayRow {
    /// The partition's key the entry is in (a partitioned stream's replay
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Entry id.
    pub id: String,
    /// Its fields.
    pub fields: Vec<ShownField>,
    /// What the handler would do (`None` without a plugin).
    #[serde(flatten)]
    pub verdict: Option<HandlerVerdict>,
}

/// Totals over a replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayTotals {
    /// Entries replayed.
    pub entries: u64,
    /// Would be acked.
    pub ack: u64,
    /// Would be retried.
    pub retry: u64,
    /// Would be dead-lettered.
    pub dead_letter: u64,
    /// Entries the handler would emit.
    pub emits: u64,
    /// Emits actually appended (`--emit`).
    pub emitted: u64,
}

impl ReplayTotals {
    /// Totals of `rows`.
    pub fn of(rows: &[ReplayRow]) -> Self {
        let mut t = ReplayTotals {
            entries: rows.len() as u64,
            ..Self::default()
        };
        for r in rows {
            match &r.verdict {
                Some(HandlerVerdict::Ack { emits }) => {
                    t.ack += 1;
                    t.emits += emits.len() as u64;
                }
                Some(HandlerVerdict::Retry { .. }) => t.retry += 1,
                Some(HandlerVerdict::DeadLetter { .. }) => t.dead_letter += 1,
                None => {}
            }
        }
        t
    }
}

/// The entry as the reader would decode it under `admission`'s limits.
fn entry((id, fields): &RawEntry, admission: &Admission) -> Entry {
    let limits = admission.entry_limits();
    let cost: usize = fields
        .iter()
        .map(|(k, v)| crate::vocab::limits::field_cost(k.len(), v.len()))
        .sum();
    let payload = if fields.len() > limits.max_fields || cost > limits.max_bytes {
        Payload::Withheld {
            fields: fields.len(),
            bytes: cost,
        }
    } else if fields.iter().all(|(k, _)| std::str::from_utf8(k).is_ok()) {
        Payload::Fields(
            fields
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
                .collect(),
        )
    } else {
        Payload::Raw(fields.clone())
    };
    Entry {
        id: id.clone(),
        payload,
        delivery_count: 1,
    }
}

fn shown(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<ShownField> {
    fields.iter().map(|(k, v)| ShownField::new(k, v)).collect()
}

/// An entry and the key it was read from (`None`: the stream replayed,
/// unpartitioned).
pub type Sourced = (Option<String>, RawEntry);

/// Entries without a plugin.
pub fn rows(entries: &[Sourced]) -> Vec<ReplayRow> {
    entries
        .iter()
        .map(|(stream, (id, f))| ReplayRow {
            stream: stream.clone(),
            id: id.clone(),
            fields: shown(f),
            verdict: None,
        })
        .collect()
}

/// The handler a replay judges a window with, and how `run` would run it.
#[derive(Debug, Clone)]
pub struct Handler {
    /// The component file.
    pub path: PathBuf,
    /// What it reads with `config(KEY)`.
    pub config: BTreeMap<String, String>,
    /// Streams it may emit to (`--emit-allow`).
    pub emit_allow: Vec<String>,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Where compiled plugins are kept (`None`: not kept).
    pub cache_dir: Option<PathBuf>,
}

impl Handler {
    /// Loads the handler as a `run` of `stream` (with DLQ `dlq`) would,
    /// and the admission rules `run`'s defaults set; a plugin that cannot
    /// be loaded is bad data.
    pub fn load(
        &self,
        stream: &str,
        dlq: &str,
    ) -> Result<(Arc<LoadedPlugin>, Admission), OpsError> {
        let limits = Limits {
            handler_timeout: self.timeout,
            ..Limits::default()
        };
        let admission = Admission {
            max_deliveries: limits.max_deliveries,
            max_entry_size: limits.max_entry_size,
            max_fields: limits.max_fields,
        };
        let targets = EmitTargets {
            source: stream.to_owned(),
            dlq: dlq.to_owned(),
            allow: self.emit_allow.clone(),
            slot: None,
            forwarded: false,
        };
        let settings = PluginSettings::new(self.config.clone(), &limits, targets);
        let bad = |e: String| OpsError::Data(cannot_load(&self.path, &e));
        let engine = PluginEngine::new()
            .map_err(|e| bad(e.to_string()))?
            .with_cache(self.cache_dir.as_deref());
        let plugin = engine
            .load(&self.path, &settings)
            .map_err(|e| bad(e.to_string()))?;
        Ok((plugin, admission))
    }
}

fn cannot_load(path: &Path, why: &str) -> String {
    format!("cannot load plugin {}: {why}", path.display())
}

/// Appends the emits of every acked row to their streams, counting them in
/// `totals.emitted` (`host replay --emit`).
pub async fn append_emits(
    nodes: &mut Nodes,
    rows: &[ReplayRow],
    totals: &mut ReplayTotals,
) -> Result<(), OpsError> {
    for r in rows {
        if let Some(HandlerVerdict::Ack { emits }) = &r.verdict {
            for e in emits {
                let mut con = nodes.of(&e.stream).await?;
                add_batch(&mut con, &e.stream, None, std::slice::from_ref(&e.raw)).await?;
                totals.emitted += 1;
            }
        }
    }
    Ok(())
}

/// Runs `plugin` over `entries` as first deliveries to `group`/`consumer`
/// of `stream` (or of the partition each was read from), one warm instance
/// as a `run` worker keeps it. Blocking: call
/// it off the async runtime (it drives calls on a runtime of its own).
pub fn judge(
    plugin: Arc<LoadedPlugin>,
    admission: Admission,
    stream: &str,
    entries: &[Sourced],
    progress: &dyn Fn(),
) -> std::io::Result<Vec<ReplayRow>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut instance = PluginInstance::new(plugin);
    let mut out = Vec::with_capacity(entries.len());
    for (from, raw) in entries {
        let e = entry(raw, &admission);
        let outcome = match admission.verdict(&e, || None) {
            Some(verdict) => verdict,
            None => {
                let Payload::Fields(fields) = e.payload else {
                    unreachable!("admitted entries have fields")
                };
                let event = Event {
                    stream: from.as_deref().unwrap_or(stream).to_owned(),
                    id: e.id.clone(),
                    group: "replay".into(),
                    consumer: "replay".into(),
                    fields,
                    delivery_count: 1,
                };
                instance.call_on(&rt, &event)
            }
        };
        let verdict = match outcome {
            Outcome::Ack { emits } => HandlerVerdict::Ack {
                emits: emits
                    .into_iter()
                    .map(|e| {
                        let raw: Vec<(Vec<u8>, Vec<u8>)> = e
                            .fields
                            .iter()
                            .map(|(k, v)| (k.to_vec(), v.to_vec()))
                            .collect();
                        EmitView {
                            stream: e.stream,
                            fields: shown(&raw),
                            raw,
                        }
                    })
                    .collect(),
            },
            Outcome::Retry { reason } => HandlerVerdict::Retry { reason },
            Outcome::DeadLetter { kind, reason } => HandlerVerdict::DeadLetter {
                kind: kind.to_string(),
                reason,
            },
        };
        out.push(ReplayRow {
            stream: from.clone(),
            id: raw.0.clone(),
            fields: shown(&raw.1),
            verdict: Some(verdict),
        });
        progress();
    }
    Ok(out)
}
