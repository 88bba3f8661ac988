//! `host replay`: a window of a stream, read without any group, and — with
//! a plugin — what the handler would make of each entry (ack with its
//! emits, retry, or dead-letter), computed with the same admission rules and
//! the same call path as `run`, writing nothing.

use std::sync::Arc;

use serde::Serialize;

use super::dlq::ShownField;
use crate::plugin::{Event, LoadedPlugin, PluginInstance};
use crate::stream::inspect::RawEntry;
use crate::vocab::admission::Admission;
use crate::vocab::entry::{Entry, Payload};
use crate::vocab::outcome::Outcome;

/// What the handler would have made of one entry.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Verdict {
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
    /// Entry id.
    pub id: String,
    /// Its fields.
    pub fields: Vec<ShownField>,
    /// What the handler would do (`None` without a plugin).
    #[serde(flatten)]
    pub verdict: Option<Verdict>,
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
                Some(Verdict::Ack { emits }) => {
                    t.ack += 1;
                    t.emits += emits.len() as u64;
                }
                Some(Verdict::Retry { .. }) => t.retry += 1,
                Some(Verdict::DeadLetter { .. }) => t.dead_letter += 1,
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

/// Entries without a plugin.
pub fn rows(entries: &[RawEntry]) -> Vec<ReplayRow> {
    entries
        .iter()
        .map(|(id, f)| ReplayRow {
            id: id.clone(),
            fields: shown(f),
            verdict: None,
        })
        .collect()
}

/// Runs `plugin` over `entries` as first deliveries to `group`/`consumer`
/// of `stream`, one warm instance as a `run` worker keeps it. Blocking: call
/// it off the async runtime (it drives calls on a runtime of its own).
pub fn judge(
    plugin: Arc<LoadedPlugin>,
    admission: Admission,
    stream: &str,
    entries: &[RawEntry],
    progress: &dyn Fn(),
) -> std::io::Result<Vec<ReplayRow>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut instance = PluginInstance::new(plugin);
    let mut out = Vec::with_capacity(entries.len());
    for raw in entries {
        let e = entry(raw, &admission);
        let outcome = match admission.verdict(&e, || None) {
            Some(verdict) => verdict,
            None => {
                let Payload::Fields(fields) = e.payload else {
                    unreachable!("admitted entries have fields")
                };
                let event = Event {
                    stream: stream.to_owned(),
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
            Outcome::Ack { emits } => Verdict::Ack {
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
            Outcome::Retry { reason } => Verdict::Retry { reason },
            Outcome::DeadLetter { kind, reason } => Verdict::DeadLetter {
                kind: kind.to_string(),
                reason,
            },
        };
        out.push(ReplayRow {
            id: raw.0.clone(),
            fields: shown(&raw.1),
            verdict: Some(verdict),
        });
        progress();
    }
    Ok(out)
}
