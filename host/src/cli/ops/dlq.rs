//! `host dlq list|show|redrive|purge`: flags, confirmation and printing.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use redis::aio::MultiplexedConnection;

use super::output::{age, print_json, progress, table};
use super::{Connect, StreamArgs, Target, resolve, usage};
use crate::ops::dlq::{self, DeadLetter, Filter, show_bytes};
use crate::ops::{self, OpsError, id_ms, now_ms, parse_position};
use crate::stream::inspect;

/// Records `dlq list` shows unless told otherwise.
const LIST_DEFAULT: usize = 100;

/// `host dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (oldest first) with kind, reason, deliveries and plugin version.
    List(Box<ListArgs>),
    /// Print one dead letter: its metadata and its original fields (binary-safe).
    Show(Box<ShowArgs>),
    /// Put dead letters back on their source stream (or --to STREAM), original fields byte
    /// for byte, each removed from the DLQ in the same atomic step.
    ///
    /// A redrive stopped at any point (even killed) has moved each record exactly once or
    /// not at all. Records without fields (kind `trimmed`) cannot be redriven and stay.
    Redrive(Box<RedriveArgs>),
    /// Delete dead letters for good (asks first on a terminal; --yes to skip; refused without
    /// --yes when stdin is not a terminal).
    Purge(Box<PurgeArgs>),
}

impl DlqCommand {
    pub(super) fn connect_mut(&mut self) -> &mut Connect {
        match self {
            DlqCommand::List(a) => &mut a.common.connect,
            DlqCommand::Show(a) => &mut a.connect,
            DlqCommand::Redrive(a) => &mut a.common.connect,
            DlqCommand::Purge(a) => &mut a.common.connect,
        }
    }
}

/// Which dead letters: every condition must hold.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Connection.
    #[command(flatten)]
    pub connect: Connect,
    /// The source stream and its dead-letter stream.
    #[command(flatten)]
    pub target: StreamArgs,
    /// First record: a DLQ id, a time (RFC 3339) or a duration ago (e.g. 1h).
    #[arg(long, value_name = "ID|TIME", help_heading = "Selection")]
    pub since: Option<String>,
    /// Last record: a DLQ id, a time (RFC 3339) or a duration ago.
    #[arg(long, value_name = "ID|TIME", help_heading = "Selection")]
    pub until: Option<String>,
    /// Only this kind (permanent, max-deliveries, trimmed, invalid); repeatable.
    #[arg(long, value_name = "KIND", help_heading = "Selection")]
    pub kind: Vec<String>,
    /// Only records dead-lettered at least this long ago.
    #[arg(long, value_name = "DUR", value_parser = super::super::duration, help_heading = "Selection")]
    pub older_than: Option<Duration>,
    /// Only records dead-lettered at most this long ago.
    #[arg(long, value_name = "DUR", value_parser = super::super::duration, help_heading = "Selection")]
    pub newer_than: Option<Duration>,
    /// Only records of this plugin version (content hash, or a prefix of it).
    #[arg(long, value_name = "HASH", help_heading = "Selection")]
    pub plugin_version: Option<String>,
    /// Only records whose reason contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT", help_heading = "Selection")]
    pub reason: Option<String>,
    /// At most N records (`list`: 100 unless given).
    #[arg(long, value_name = "N", help_heading = "Selection")]
    pub limit: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `dlq list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Selection.
    #[command(flatten)]
    pub common: FilterArgs,
}

/// Flags of `dlq show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Connection.
    #[command(flatten)]
    pub connect: Connect,
    /// The source stream and its dead-letter stream.
    #[command(flatten)]
    pub target: StreamArgs,
    /// The record's id in the DLQ.
    pub id: String,
    /// Print JSON (non-UTF-8 values also in hex).
    #[arg(long)]
    pub json: bool,
}

/// Flags of `dlq redrive`.
#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// Selection.
    #[command(flatten)]
    pub common: FilterArgs,
    /// Append to this stream instead of each record's source stream.
    #[arg(long = "to", value_name = "STREAM")]
    pub to_stream: Option<String>,
    /// Only show what would move where.
    #[arg(long)]
    pub dry_run: bool,
}

/// Flags of `dlq purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Selection.
    #[command(flatten)]
    pub common: FilterArgs,
    /// Do not ask.
    #[arg(long)]
    pub yes: bool,
}

pub(super) async fn run(cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DlqCommand::List(a) => list(a.common).await,
        DlqCommand::Show(a) => show(*a).await,
        DlqCommand::Redrive(a) => redrive(*a).await,
        DlqCommand::Purge(a) => purge(*a).await,
    }
}

/// Connects and checks that the DLQ, or at least its source stream, exists
/// (so a mistyped stream is an error, not an empty list).
async fn open(
    connect: &Connect,
    target: &StreamArgs,
) -> anyhow::Result<(MultiplexedConnection, Target)> {
    let (redis, targets) = resolve(connect, target, false)?;
    let t = targets.into_iter().next().expect("one target");
    let mut con = ops::connect(&redis).await?;
    match inspect::key_type(&mut con, &t.dlq).await?.as_str() {
        "stream" => {}
        "none" => {
            if inspect::key_type(&mut con, &t.stream).await? == "none" {
                return Err(usage(format!(
                    "neither stream {:?} nor its dead-letter stream {:?} exists",
                    t.stream, t.dlq
                )));
            }
        }
        other => return Err(usage(format!("{:?} holds a {other}, not a stream", t.dlq))),
    }
    Ok((con, t))
}

fn filter(a: &FilterArgs) -> anyhow::Result<Filter> {
    Ok(Filter {
        from: a.since.as_deref().map(parse_position).transpose()?,
        to: a.until.as_deref().map(parse_position).transpose()?,
        kinds: a.kind.clone(),
        older_than: a.older_than,
        newer_than: a.newer_than,
        plugin_version: a.plugin_version.clone(),
        reason: a.reason.clone(),
        limit: a.limit,
    })
}

fn short(version: &str) -> String {
    version.chars().take(12).collect()
}

fn rows(records: &[DeadLetter]) -> Vec<Vec<String>> {
    let now = now_ms();
    records
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                id_ms(&d.id)
                    .map(|ms| age(now.saturating_sub(ms)))
                    .unwrap_or_default(),
                d.kind.clone(),
                d.source_id.clone(),
                d.deliveries.map(|n| n.to_string()).unwrap_or_default(),
                short(&d.plugin_version),
                show_bytes(d.reason.as_bytes()),
            ]
        })
        .collect()
}

const LIST_HEADER: [&str; 7] = [
    "ID",
    "AGE",
    "KIND",
    "SOURCE ID",
    "DELIVERIES",
    "PLUGIN",
    "REASON",
];

async fn list(a: FilterArgs) -> anyhow::Result<ExitCode> {
    let (mut con, t) = open(&a.connect, &a.target).await?;
    let mut f = filter(&a)?;
    let limit = f.limit.unwrap_or(LIST_DEFAULT);
    f.limit = Some(limit.saturating_add(1));
    let mut records = dlq::select(&mut con, &t.dlq, &f).await?;
    let more = records.len() > limit;
    records.truncate(limit);
    if a.json {
        print_json(&records)?;
    } else if records.is_empty() {
        println!("no dead letters in {} match", t.dlq);
    } else {
        println!("{}", table(&LIST_HEADER, rows(&records)));
        if more {
            println!("(more match: raise --limit or narrow with --since/--kind/…)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let (mut con, t) = open(&a.connect, &a.target).await?;
    if crate::stream::entry::id_parts(&a.id).is_none() {
        return Err(usage(format!("{:?} is not a stream id (<ms>-<seq>)", a.id)));
    }
    let d = dlq::show(&mut con, &t.dlq, &a.id).await?;
    if a.json {
        print_json(&d)?;
        return Ok(ExitCode::SUCCESS);
    }
    let meta = [
        ("id", d.id.clone()),
        ("kind", d.kind.clone()),
        ("reason", show_bytes(d.reason.as_bytes())),
        ("source", format!("{} {}", d.source_stream, d.source_id)),
        ("group", d.group.clone()),
        ("consumer", d.consumer.clone()),
        (
            "deliveries",
            d.deliveries
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("plugin", format!("{} {}", d.plugin, d.plugin_version)),
        (
            "failed at",
            d.failed_at_ms
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
    Ok(ExitCode::SUCCESS)
}

async fn redrive(a: RedriveArgs) -> anyhow::Result<ExitCode> {
    let (mut con, t) = open(&a.common.connect, &a.common.target).await?;
    if let Some(to) = &a.to_stream
        && !matches!(
            inspect::key_type(&mut con, to).await?.as_str(),
            "stream" | "none"
        )
    {
        return Err(usage(format!(
            "--to {to:?} holds something other than a stream"
        )));
    }
    let records = dlq::select(&mut con, &t.dlq, &filter(&a.common)?).await?;
    let bar = progress(
        Some(records.len() as u64),
        if a.dry_run { "checking" } else { "redriving" },
    );
    let mut tick = |_: &dlq::RedriveRow| bar.inc(1);
    let rows = dlq::redrive(
        &mut con,
        &t.dlq,
        &records,
        a.to_stream.as_deref(),
        a.dry_run,
        &mut tick,
    )
    .await?;
    bar.finish();
    let count = |o: &str| rows.iter().filter(|r| r.outcome == o).count();
    if a.common.json {
        print_json(&rows)?;
    } else {
        let table_rows = rows
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.outcome.to_owned(),
                    r.target.clone(),
                    r.new_id.clone().unwrap_or_default(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            println!(
                "{}",
                table(&["ID", "OUTCOME", "TARGET", "NEW ID"], table_rows)
            );
        }
        println!(
            "{} {} of {} selected dead letters from {}{}",
            if a.dry_run { "would move" } else { "moved" },
            count(if a.dry_run { "would-move" } else { "moved" }),
            rows.len(),
            t.dlq,
            skipped_note(&rows)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn skipped_note(rows: &[dlq::RedriveRow]) -> String {
    let mut notes = Vec::new();
    for (outcome, what) in [
        ("gone", "already gone"),
        ("no-payload", "without fields (kept)"),
        ("no-target", "without a source stream (use --to)"),
        ("wrong-target", "whose target is not a stream (kept)"),
    ] {
        let n = rows.iter().filter(|r| r.outcome == outcome).count();
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

async fn purge(a: PurgeArgs) -> anyhow::Result<ExitCode> {
    let (mut con, t) = open(&a.common.connect, &a.common.target).await?;
    let records = dlq::select(&mut con, &t.dlq, &filter(&a.common)?).await?;
    if records.is_empty() {
        println!("no dead letters in {} match: nothing to purge", t.dlq);
        return Ok(ExitCode::SUCCESS);
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            return Err(usage(format!(
                "refusing to purge {} dead letters without --yes (stdin is not a terminal to ask on)",
                records.len()
            )));
        }
        eprint!(
            "delete {} dead letters from {} for good? [y/N] ",
            records.len(),
            t.dlq
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| OpsError::Usage(e.to_string()))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing deleted");
            return Ok(ExitCode::from(1));
        }
    }
    let ids: Vec<String> = records.into_iter().map(|d| d.id).collect();
    let deleted = dlq::purge(&mut con, &t.dlq, &ids).await?;
    if a.common.json {
        print_json(&serde_json::json!({ "dlq": t.dlq, "deleted": deleted }))?;
    } else {
        println!("deleted {deleted} dead letters from {}", t.dlq);
    }
    Ok(ExitCode::SUCCESS)
}
