//! `host dlq list|show|redrive|purge`: flags, confirmation and printing.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use redis::aio::MultiplexedConnection;

mod print;

use self::print::{LIST_HEADER, RowPrinter, print_record, rows, summary};
use super::output::{print_json, progress, table};
use super::{Connect, StreamArgs, Target, resolve, usage};
use crate::config::RedisConfig;
use crate::ops::dlq::{self, Filter, Selection};
use crate::ops::{self, OpsError, parse_position};
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
) -> anyhow::Result<(MultiplexedConnection, Target, RedisConfig)> {
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
    Ok((con, t, redis))
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

async fn list(a: FilterArgs) -> anyhow::Result<ExitCode> {
    let (mut con, t, _) = open(&a.connect, &a.target).await?;
    let mut f = filter(&a)?;
    let limit = f.limit.unwrap_or(LIST_DEFAULT);
    f.limit = Some(limit.saturating_add(1));
    let mut selection = Selection::start(&mut con, &t.dlq, f).await?;
    let mut records = Vec::new();
    while let Some(page) = selection.next_page(&mut con).await? {
        records.extend(page);
    }
    let more = records.len() > limit;
    records.truncate(limit);
    dlq::check_packed(&mut con, &t.dlq, &mut records).await?;
    if a.json {
        // Only the records listed are read whole (one at a time).
        let mut full = Vec::with_capacity(records.len());
        for h in &records {
            full.extend(dlq::fetch(&mut con, &t.dlq, &h.meta.id).await?);
        }
        print_json(&full)?;
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
    let (mut con, t, _) = open(&a.connect, &a.target).await?;
    if crate::vocab::ids::id_parts(&a.id).is_none() {
        return Err(usage(format!("{:?} is not a stream id (<ms>-<seq>)", a.id)));
    }
    let d = dlq::show(&mut con, &t.dlq, &a.id).await?;
    if a.json {
        print_json(&d)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_record(&d);
    Ok(ExitCode::SUCCESS)
}

async fn redrive(a: RedriveArgs) -> anyhow::Result<ExitCode> {
    let (mut con, t, redis) = open(&a.common.connect, &a.common.target).await?;
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
    let f = filter(&a.common)?;
    // Without conditions the DLQ's length is the work ahead; else unknown.
    let len = match f.selects_all() {
        true => Some(inspect::len(&mut con, &t.dlq).await?),
        false => None,
    };
    let mut selection = Selection::start(&mut con, &t.dlq, f).await?;
    let mut mover = match a.dry_run {
        true => None,
        false => Some(dlq::redriver(&redis).await?),
    };
    let bar = progress(len, if a.dry_run { "checking" } else { "redriving" });
    let mut out = RowPrinter::new(a.common.json);
    let mut totals = dlq::RedriveTotals::default();
    while let Some(mut page) = selection.next_page(&mut con).await? {
        if a.dry_run {
            dlq::check_packed(&mut con, &t.dlq, &mut page).await?;
        }
        let rows = dlq::redrive_page(mover.as_mut(), &t.dlq, &page, a.to_stream.as_deref()).await?;
        bar.inc(rows.len() as u64);
        totals.add(&rows);
        bar.suspend(|| out.print(&rows))?;
    }
    bar.finish();
    out.finish()?;
    if !a.common.json {
        println!("{}", summary(a.dry_run, &totals, &t.dlq));
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(a: PurgeArgs) -> anyhow::Result<ExitCode> {
    let (mut con, t, _) = open(&a.common.connect, &a.common.target).await?;
    let first = Selection::start(&mut con, &t.dlq, filter(&a.common)?).await?;
    if !a.yes {
        // Counted first, then deleted up to the same newest record: what
        // was confirmed is all that can go.
        let mut counting = first.clone();
        let mut n = 0;
        while let Some(page) = counting.next_page(&mut con).await? {
            n += page.len();
        }
        if n == 0 {
            println!("no dead letters in {} match: nothing to purge", t.dlq);
            return Ok(ExitCode::SUCCESS);
        }
        if !confirm(n, &t.dlq)? {
            eprintln!("nothing deleted");
            return Ok(ExitCode::from(1));
        }
    }
    let mut deleting = first.restart();
    let (mut selected, mut deleted) = (0, 0);
    while let Some(page) = deleting.next_page(&mut con).await? {
        selected += page.len();
        deleted += dlq::purge_page(&mut con, &t.dlq, &page).await?;
    }
    if selected == 0 && !a.common.json {
        println!("no dead letters in {} match: nothing to purge", t.dlq);
    } else if a.common.json {
        print_json(&serde_json::json!({ "dlq": t.dlq, "deleted": deleted }))?;
    } else {
        println!("deleted {deleted} dead letters from {}", t.dlq);
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal whether to delete `n` records; refuses to ask
/// when stdin is not a terminal.
fn confirm(n: usize, dlq: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(usage(format!(
            "refusing to purge {n} dead letters without --yes (stdin is not a terminal to ask on)"
        )));
    }
    eprint!("delete {n} dead letters from {dlq} for good? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| OpsError::Usage(e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
