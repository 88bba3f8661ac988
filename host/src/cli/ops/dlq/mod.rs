//! `host dlq list|show|redrive|purge`: flags, confirmation and printing.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

mod print;

use self::print::{LIST_HEADER, RowPrinter, print_record, rows, summary};
use super::output::{print_json, progress, table};
use super::{Connect, StreamArgs, Target, resolve, usage};
use crate::ops::dlq::{self, Filter, Selection};
use crate::ops::{self, OpsError, Part, parse_position};
use crate::stream::cluster::Nodes;
use crate::stream::inspect;
use crate::vocab::partition::{self, key_slot};

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

/// The connections and the parts (the stream, or its partitions) a DLQ
/// command works on, once it is known that some DLQ or at least some
/// source stream exists (so a mistyped stream is an error, not an empty
/// list).
async fn open(
    connect: &Connect,
    target: &StreamArgs,
) -> anyhow::Result<(Nodes, Target, Vec<Part>)> {
    let (redis, targets) = resolve(connect, target, false)?;
    let t = targets.into_iter().next().expect("one target");
    let mut nodes = ops::nodes(&redis)?;
    let parts = t.parts();
    let mut found = false;
    for part in &parts {
        let mut con = nodes.of(&part.dlq).await?;
        match inspect::key_type(&mut con, &part.dlq).await?.as_str() {
            "stream" => found = true,
            "none" => found |= inspect::key_type(&mut con, &part.stream).await? != "none",
            other => {
                return Err(usage(format!(
                    "{:?} holds a {other}, not a stream",
                    part.dlq
                )));
            }
        }
    }
    if !found {
        return Err(usage(match t.partitions {
            None => format!(
                "neither stream {:?} nor its dead-letter stream {:?} exists",
                t.stream, t.dlq
            ),
            Some(_) => format!(
                "no partition of {} nor any of their dead-letter streams exists",
                t.label()
            ),
        }));
    }
    Ok((nodes, t, parts))
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
    let (mut nodes, t, parts) = open(&a.connect, &a.target).await?;
    let f = filter(&a)?;
    let limit = f.limit.unwrap_or(LIST_DEFAULT);
    let mut left = limit;
    let mut more = false;
    let mut listed: Vec<(&Part, Vec<dlq::Header>)> = Vec::new();
    // Partitions in order, each oldest first, up to the limit over all.
    for part in &parts {
        if left == 0 {
            more = true;
            break;
        }
        let mut con = nodes.of(&part.dlq).await?;
        let mut f = f.clone();
        f.limit = Some(left.saturating_add(1));
        let mut selection = Selection::start(&mut con, &part.dlq, f).await?;
        let mut records = Vec::new();
        while let Some(page) = selection.next_page(&mut con).await? {
            records.extend(page);
        }
        more |= records.len() > left;
        records.truncate(left);
        left -= records.len();
        dlq::check_packed(&mut con, &part.dlq, &mut records).await?;
        listed.push((part, records));
    }
    if a.json {
        // Only the records listed are read whole (one at a time).
        let mut full = Vec::new();
        for (part, records) in &listed {
            let mut con = nodes.of(&part.dlq).await?;
            for h in records {
                full.extend(dlq::fetch(&mut con, &part.dlq, &h.meta.id).await?);
            }
        }
        print_json(&full)?;
        return Ok(ExitCode::SUCCESS);
    }
    let shown: usize = listed.iter().map(|(_, r)| r.len()).sum();
    if shown == 0 {
        println!("no dead letters in {} match", dlq_label(&t));
    }
    for (part, records) in listed.iter().filter(|(_, r)| !r.is_empty()) {
        if part.index.is_some() {
            println!("{}:", part.dlq);
        }
        println!("{}", table(&LIST_HEADER, rows(records)));
    }
    if more {
        println!("(more match: raise --limit or narrow with --since/--kind/…)");
    }
    Ok(ExitCode::SUCCESS)
}

/// How output names the dead-letter stream(s) of `t`.
fn dlq_label(t: &Target) -> String {
    match (t.partitions, t.only) {
        (Some(_), Some(i)) => partition::dlq_key(&t.stream, i),
        (Some(_), None) => format!("{{{}:i}}:dlq", t.stream),
        _ => t.dlq.clone(),
    }
}

async fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let (mut nodes, t, parts) = open(&a.connect, &a.target).await?;
    if crate::vocab::ids::id_parts(&a.id).is_none() {
        return Err(usage(format!("{:?} is not a stream id (<ms>-<seq>)", a.id)));
    }
    // A record id is unique within its DLQ; partitions' DLQs are looked
    // through in order, and every match is shown.
    let mut found = Vec::new();
    for part in &parts {
        let mut con = nodes.of(&part.dlq).await?;
        found.extend(dlq::fetch(&mut con, &part.dlq, &a.id).await?);
    }
    if found.is_empty() {
        return Err(usage(format!("no record {} in {}", a.id, dlq_label(&t))));
    }
    if a.json {
        match found.as_slice() {
            [one] => print_json(one)?,
            many => print_json(&many)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    for d in &found {
        print_record(d);
    }
    Ok(ExitCode::SUCCESS)
}

async fn redrive(a: RedriveArgs) -> anyhow::Result<ExitCode> {
    let (mut nodes, t, parts) = open(&a.common.connect, &a.common.target).await?;
    if let Some(to) = &a.to_stream {
        let mut con = nodes.of(to).await?;
        if !matches!(
            inspect::key_type(&mut con, to).await?.as_str(),
            "stream" | "none"
        ) {
            return Err(usage(format!(
                "--to {to:?} holds something other than a stream"
            )));
        }
        if nodes.config().cluster
            && let Some(part) = parts
                .iter()
                .find(|p| key_slot(p.dlq.as_bytes()) != key_slot(to.as_bytes()))
        {
            return Err(usage(format!(
                "--to {to:?} is in another cluster slot than {:?}: a record moves in one atomic step, so both keys must share a hash tag (e.g. {})",
                part.dlq,
                partition::beside(&part.dlq, "redriven").unwrap_or_default()
            )));
        }
    }
    let f = filter(&a.common)?;
    // Without conditions the DLQs' length is the work ahead; else unknown.
    let len = match f.selects_all() {
        true => {
            let mut n = 0;
            for part in &parts {
                let mut con = nodes.of(&part.dlq).await?;
                n += inspect::len(&mut con, &part.dlq).await?;
            }
            Some(n)
        }
        false => None,
    };
    let bar = progress(len, if a.dry_run { "checking" } else { "redriving" });
    let mut out = RowPrinter::new(a.common.json);
    let mut totals = dlq::RedriveTotals::default();
    for part in &parts {
        let mut con = nodes.of(&part.dlq).await?;
        let mut selection = Selection::start(&mut con, &part.dlq, f.clone()).await?;
        let mut mover = match a.dry_run {
            true => None,
            false => Some(dlq::redriver_at(&*nodes.endpoint(&part.dlq).await?).await?),
        };
        while let Some(mut page) = selection.next_page(&mut con).await? {
            if a.dry_run {
                dlq::check_packed(&mut con, &part.dlq, &mut page).await?;
            }
            let rows =
                dlq::redrive_page(mover.as_mut(), &part.dlq, &page, a.to_stream.as_deref()).await?;
            bar.inc(rows.len() as u64);
            totals.add(&rows);
            bar.suspend(|| out.print(&rows))?;
        }
    }
    bar.finish();
    out.finish()?;
    if !a.common.json {
        println!("{}", summary(a.dry_run, &totals, &dlq_label(&t)));
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(a: PurgeArgs) -> anyhow::Result<ExitCode> {
    let (mut nodes, t, parts) = open(&a.common.connect, &a.common.target).await?;
    let label = dlq_label(&t);
    let mut firsts = Vec::with_capacity(parts.len());
    for part in &parts {
        let mut con = nodes.of(&part.dlq).await?;
        firsts.push(Selection::start(&mut con, &part.dlq, filter(&a.common)?).await?);
    }
    if !a.yes {
        // Counted first, then deleted up to the same newest record of each
        // DLQ: what was confirmed is all that can go.
        let mut n = 0;
        for (part, first) in parts.iter().zip(&firsts) {
            let mut con = nodes.of(&part.dlq).await?;
            let mut counting = first.clone();
            while let Some(page) = counting.next_page(&mut con).await? {
                n += page.len();
            }
        }
        if n == 0 {
            println!("no dead letters in {label} match: nothing to purge");
            return Ok(ExitCode::SUCCESS);
        }
        if !confirm(n, &label)? {
            eprintln!("nothing deleted");
            return Ok(ExitCode::from(1));
        }
    }
    let (mut selected, mut deleted) = (0, 0);
    for (part, first) in parts.iter().zip(firsts) {
        let mut con = nodes.of(&part.dlq).await?;
        let mut deleting = first.restart();
        while let Some(page) = deleting.next_page(&mut con).await? {
            selected += page.len();
            deleted += dlq::purge_page(&mut con, &part.dlq, &page).await?;
        }
    }
    if selected == 0 && !a.common.json {
        println!("no dead letters in {label} match: nothing to purge");
    } else if a.common.json {
        print_json(&serde_json::json!({ "dlq": label, "deleted": deleted }))?;
    } else {
        println!("deleted {deleted} dead letters from {label}");
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
