//! How `host dlq` prints: the list's table, one record with its original
//! fields, and redrive rows as they are done.

use std::io::Write;
use std::time::Duration;

use super::super::output::{age, table};
use crate::ops::dlq::{self, DeadLetter, Header, show_bytes};
use crate::vocab::ids::{id_ms, now_ms};

fn short(version: &str) -> String {
    version.chars().take(12).collect()
}

pub(super) fn rows(records: &[Header]) -> Vec<Vec<String>> {
    let now = now_ms();
    records
        .iter()
        .map(|d| {
            let reason = show_bytes(d.meta.reason.as_bytes());
            vec![
                d.meta.id.clone(),
                id_ms(&d.meta.id)
                    .map(|ms| age(now.saturating_sub(ms)))
                    .unwrap_or_default(),
                d.meta.kind.clone(),
                d.meta.source_id.clone(),
                d.meta.deliveries.map(|n| n.to_string()).unwrap_or_default(),
                short(&d.meta.plugin_version),
                match &d.undecodable {
                    Some(why) => format!("[undecodable: {why}] {reason}"),
                    None => reason,
                },
            ]
        })
        .collect()
}

pub(super) const LIST_HEADER: [&str; 7] = [
    "ID",
    "AGE",
    "KIND",
    "SOURCE ID",
    "DELIVERIES",
    "PLUGIN",
    "REASON",
];

/// One record: its metadata, then its original fields (or why they
/// cannot be read back).
pub(super) fn print_record(d: &DeadLetter) {
    let m = &d.meta;
    let meta = [
        ("id", m.id.clone()),
        ("kind", m.kind.clone()),
        ("reason", show_bytes(m.reason.as_bytes())),
        ("source", format!("{} {}", m.source_stream, m.source_id)),
        ("group", m.group.clone()),
        ("consumer", m.consumer.clone()),
        (
            "deliveries",
            m.deliveries
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("plugin", format!("{} {}", m.plugin, m.plugin_version)),
        (
            "failed at",
            m.failed_at_ms
                .map(|ms| {
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + Duration::from_millis(ms),
                    )
                    .to_string()
                })
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    let rows = meta
        .iter()
        .map(|(k, v)| vec![k.to_string(), v.clone()])
        .collect();
    println!("{}", table(&["RECORD", ""], rows));
    if let Some(why) = &d.undecodable {
        println!("\noriginal fields: undecodable (packed, but {why}); a redrive keeps this record");
        return;
    }
    let packed = if d.packed {
        " (packed: a wide entry)"
    } else {
        ""
    };
    println!("\noriginal fields: {}{packed}", d.fields.len());
    let rows = d
        .fields
        .iter()
        .map(|(k, v)| vec![show_bytes(k), show_bytes(v)])
        .collect();
    if !d.fields.is_empty() {
        println!("{}", table(&["FIELD", "VALUE"], rows));
    }
}

/// Prints redrive rows as they are done, a page at a time: a JSON array
/// written element by element, or a table whose header comes once.
pub(super) struct RowPrinter {
    json: bool,
    printed: u64,
}

impl RowPrinter {
    pub(super) fn new(json: bool) -> Self {
        Self { json, printed: 0 }
    }

    pub(super) fn print(&mut self, rows: &[dlq::RedriveRow]) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        for r in rows {
            if self.json {
                let sep = if self.printed == 0 { "[\n" } else { ",\n" };
                write!(stdout, "{sep}{}", serde_json::to_string(r)?)?;
                self.printed += 1;
            }
        }
        if !self.json && !rows.is_empty() {
            let cells = rows
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.outcome.to_owned(),
                        r.target.clone(),
                        r.new_id
                            .clone()
                            .or_else(|| r.detail.clone())
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            let text = table(&["ID", "OUTCOME", "TARGET", "NEW ID OR WHY KEPT"], cells);
            let skip = usize::from(self.printed > 0);
            for line in text.lines().skip(skip) {
                writeln!(stdout, "{line}")?;
            }
            self.printed += rows.len() as u64;
        }
        Ok(())
    }

    pub(super) fn finish(self) -> anyhow::Result<()> {
        if self.json {
            println!("{}", if self.printed == 0 { "[]" } else { "\n]" });
        }
        Ok(())
    }
}

/// The line a redrive ends with: how many of the selection moved (or
/// would), and why the others stay.
pub(super) fn summary(dry_run: bool, totals: &dlq::RedriveTotals, dlq: &str) -> String {
    format!(
        "{} {} of {} selected dead letters from {dlq}{}",
        if dry_run { "would move" } else { "moved" },
        totals.of(if dry_run { "would-move" } else { "moved" }),
        totals.records,
        skipped_note(totals)
    )
}

fn skipped_note(totals: &dlq::RedriveTotals) -> String {
    let mut notes = Vec::new();
    for (outcome, what) in [
        ("gone", "already gone"),
        ("no-payload", "without fields (kept)"),
        ("no-target", "without a source stream (use --to)"),
        ("wrong-target", "whose target is not a stream (kept)"),
        (
            "undecodable",
            "whose packed fields cannot be read back (kept)",
        ),
    ] {
        let n = totals.of(outcome);
        if n > 0 {
            notes.push(format!("{n} {what}"));
        }
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join(", "))
    }
}
