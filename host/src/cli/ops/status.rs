//! `host status`: flags, the watch loop, the checks and the text rendering.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::output::{age, duration, emit, table};
use super::{Connect, StreamArgs, resolve};
use crate::ops;
use crate::ops::dlq::show_bytes;
use crate::ops::partition_status::{self, PartitionedStatus, Report};
use crate::ops::status::{
    self, Breach, GroupStatus, RetentionStatus, StatusOptions, StreamStatus, Thresholds,
};
use crate::vocab::ids::{id_ms, now_ms};
use crate::vocab::retention::Retention;

/// Exit status of `status --check` when a threshold is crossed (not 2:
/// clap exits 2 for unparsable flags, and a probe must tell the two apart).
pub const EXIT_THRESHOLD: u8 = 3;

/// Flags of `host status`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when all is read (and with --check, no threshold is crossed); \
2 when --check finds a threshold crossed (each one is named on stderr); 64 for bad arguments, \
e.g. a stream that does not exist; 69 when Redis cannot be reached."
)]
pub struct StatusArgs {
    /// Connection.
    #[command(flatten)]
    pub connect: Connect,
    /// Stream and dead-letter stream (with --config and no --stream: every pipeline's).
    #[command(flatten)]
    pub target: StreamArgs,
    /// Print JSON (an array with one object per stream) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Refresh every INTERVAL (default 2s), in place on a terminal, until interrupted.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s",
          value_parser = super::super::duration, conflicts_with = "check")]
    pub watch: Option<Duration>,
    /// Oldest pending entries listed per group.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub oldest: usize,
    /// Retention policy to judge "held back" by: keep about N entries [default with --config: the pipeline's].
    #[arg(long, value_name = "N", help_heading = "Retention")]
    pub maxlen: Option<u64>,
    /// Retention policy to judge "held back" by: entries older than this go [default with --config: the pipeline's].
    #[arg(long, value_name = "DUR", value_parser = super::super::duration, help_heading = "Retention")]
    pub max_age: Option<Duration>,
    /// Exit 3 if any threshold below is crossed, naming each on stderr (for cron, CI or a probe).
    #[arg(long, help_heading = "Checks")]
    pub check: bool,
    /// Threshold: most entries a group may have undelivered (its lag).
    #[arg(long, value_name = "N", requires = "check", help_heading = "Checks")]
    pub max_lag: Option<u64>,
    /// Threshold: longest an entry may stay pending since its last delivery (idle time).
    #[arg(long, value_name = "DUR", requires = "check", value_parser = super::super::duration, help_heading = "Checks")]
    pub max_pending_age: Option<Duration>,
    /// Threshold: most dead letters that may have been added within --window (counted by
    /// their ids' timestamps).
    #[arg(long, value_name = "N", requires = "check", help_heading = "Checks")]
    pub max_dlq_growth: Option<u64>,
    /// The window of --max-dlq-growth.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = super::super::duration, help_heading = "Checks")]
    pub window: Duration,
}

pub(super) async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (redis, targets) = resolve(&args.connect, &args.target, true)?;
    let mut nodes = ops::nodes(&redis)?;
    let flags_policy = Retention::of(args.maxlen, args.max_age);
    let thresholds = Thresholds {
        max_lag: args.max_lag,
        max_pending_age: args.max_pending_age,
        max_dlq_growth: args.max_dlq_growth,
        window: args.window,
    };
    let in_place = std::io::stdout().is_terminal();
    let mut interrupts = match args.watch {
        Some(_) => Some(Interrupts::listen().context("listening for Ctrl-C")?),
        None => None,
    };
    loop {
        let frame = collect_all(&mut nodes, &targets, &args, flags_policy, &thresholds);
        let (all, breaches) = match interrupts.as_mut() {
            // Ctrl-C (or SIGTERM) ends a watch at once, even mid-frame: the
            // way out, not a failure.
            Some(interrupts) => tokio::select! {
                frame = frame => frame?,
                () = interrupts.next() => return Ok(ExitCode::SUCCESS),
            },
            None => frame.await?,
        };
        let mut frame = String::new();
        if args.watch.is_some() && in_place {
            frame.push_str("\x1b[H\x1b[2J");
        }
        if args.json {
            frame.push_str(&serde_json::to_string_pretty(&all)?);
            frame.push('\n');
        } else {
            for r in &all {
                match r {
                    Report::Stream(s) => frame.push_str(&render(s)),
                    Report::Partitioned(p) => frame.push_str(&render_partitioned(p)),
                }
                frame.push('\n');
            }
        }
        match emit(&frame) {
            // Whoever read the output is gone (`| head`): nothing more to show.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            other => other.context("writing to stdout")?,
        }
        if let (Some(every), Some(interrupts)) = (args.watch, interrupts.as_mut()) {
            tokio::select! {
                () = tokio::time::sleep(every) => continue,
                () = interrupts.next() => return Ok(ExitCode::SUCCESS),
            }
        }
        if args.check {
            for b in &breaches {
                eprintln!(
                    "threshold crossed: --{} on {}: {}",
                    b.threshold, b.stream, b.message
                );
            }
            if !breaches.is_empty() {
                return Ok(ExitCode::from(EXIT_THRESHOLD));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
}

/// One frame: each target's status and, with `--check`, the thresholds
/// it crosses.
async fn collect_all(
    nodes: &mut crate::stream::cluster::Nodes,
    targets: &[super::Target],
    args: &StatusArgs,
    flags_policy: Option<Retention>,
    thresholds: &Thresholds,
) -> anyhow::Result<(Vec<Report>, Vec<Breach>)> {
    let mut all = Vec::new();
    let mut breaches: Vec<Breach> = Vec::new();
    for t in targets {
        let mut opts = StatusOptions::new(t.dlq.clone());
        opts.oldest_pending = args.oldest;
        opts.retention = flags_policy.or(t.retention);
        let report = match t.partitions {
            None => {
                let mut con = nodes.of(&t.stream).await?;
                Report::Stream(status::collect(&mut con, &t.stream, &opts).await?)
            }
            Some(n) => {
                let indexes: Vec<u32> = t.parts().iter().filter_map(|p| p.index).collect();
                let p = partition_status::collect(nodes, &t.stream, n, &indexes, &opts).await?;
                Report::Partitioned(p)
            }
        };
        if args.check {
            // Each partition is checked on its own: its lag is one
            // owner's backlog.
            let each: Vec<&StreamStatus> = match &report {
                Report::Stream(s) => vec![s],
                Report::Partitioned(p) => p.rows.iter().map(|r| &r.status).collect(),
            };
            for s in each {
                let mut con = nodes.of(&s.stream).await?;
                breaches.extend(status::check(&mut con, s, thresholds).await?);
            }
        }
        all.push(report);
    }
    Ok((all, breaches))
}

/// SIGINT and SIGTERM, listened for from the watch's start (a signal while
/// a frame is being read is not missed).
struct Interrupts(Signal, Signal);

impl Interrupts {
    fn listen() -> std::io::Result<Self> {
        Ok(Self(
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.0.recv() => {}
            _ = self.1.recv() => {}
        }
    }
}

fn opt(id: &Option<String>) -> String {
    id.clone().unwrap_or_else(|| "-".into())
}

/// `stream`'s status as text: a header, then a table per part. A figure
/// marked `+` is a lower bound (its count stopped at the cap).
pub fn render(s: &StreamStatus) -> String {
    let mut out = String::new();
    let added = s
        .entries_added
        .map(|n| format!(", {n} ever added"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "stream {}: {} entries{added}, first {}, last {}",
        s.stream,
        s.length,
        opt(&s.first_id),
        opt(&s.last_id)
    );
    render_groups(&mut out, &s.groups);
    for g in &s.groups {
        render_group(&mut out, g);
    }
    render_dlq(&mut out, s);
    render_retention(&mut out, &s.retention);
    out
}

/// A partitioned stream as text: totals, a row per partition and group
/// (owner, lag, pending, dead letters), the groups over all partitions,
/// the newest dead letters; with one partition chosen, that partition as
/// an unpartitioned stream is shown, under its owners.
pub fn render_partitioned(p: &PartitionedStatus) -> String {
    let mut out = String::new();
    if let [row] = p.rows.as_slice()
        && p.partitions > 1
    {
        let owners: Vec<String> = row
            .owners
            .iter()
            .map(|(g, o)| format!("group {g} by {o}"))
            .collect();
        let _ = writeln!(
            out,
            "partition {} of {} ({} partitions); leased: {}",
            row.index,
            p.stream,
            p.partitions,
            if owners.is_empty() {
                "none".to_owned()
            } else {
                owners.join(", ")
            }
        );
        out.push_str(&render(&row.status));
        return out;
    }
    let added = p
        .entries_added
        .map(|n| format!(", {n} ever added"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "stream {}: {} partitions, {} entries{added}, {} dead letters",
        p.stream, p.partitions, p.length, p.dead_letters
    );
    let mut rows = Vec::new();
    for r in &p.rows {
        let s = &r.status;
        let common = |group: &str, owner: &str, lag: String, pending: String| {
            vec![
                r.index.to_string(),
                r.key.clone(),
                s.length.to_string(),
                group.to_owned(),
                owner.to_owned(),
                lag,
                pending,
                s.dlq.length.to_string(),
            ]
        };
        if s.groups.is_empty() {
            let none = if r.exists { "-" } else { "(no key)" };
            rows.push(common(none, "-", "-".into(), "-".into()));
        }
        for g in &s.groups {
            let owner = r.owners.get(&g.name).map_or("-", String::as_str);
            rows.push(common(
                &g.name,
                owner,
                at_least(g.lag, g.lag_exact),
                g.pending.to_string(),
            ));
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        table(
            &[
                "PARTITION",
                "KEY",
                "ENTRIES",
                "GROUP",
                "OWNER",
                "LAG",
                "PENDING",
                "DEAD LETTERS"
            ],
            rows
        )
    );
    if !p.groups.is_empty() {
        let rows = p
            .groups
            .iter()
            .map(|g| {
                vec![
                    g.name.clone(),
                    at_least(g.lag, g.lag_exact),
                    g.pending.to_string(),
                    format!("{}/{}", g.leased, g.partitions),
                    if g.hosts.is_empty() {
                        "-".to_owned()
                    } else {
                        g.hosts.join(", ")
                    },
                ]
            })
            .collect();
        let _ = writeln!(
            out,
            "\ngroups over the partitions:\n{}",
            table(&["GROUP", "LAG", "PENDING", "LEASED", "HOSTS"], rows)
        );
    }
    let _ = writeln!(
        out,
        "\ndead letters in {{{}:i}}:dlq: {}{}{}",
        p.stream,
        p.dead_letters,
        by_kind(&p.dead_letter_kinds),
        if partition_status::kinds_estimated(p) {
            " (kinds of each partition's newest)"
        } else {
            ""
        }
    );
    let newest = partition_status::newest_dead_letters(p, 5);
    if !newest.is_empty() {
        let rows = newest
            .iter()
            .map(|(i, d)| {
                vec![
                    i.to_string(),
                    d.id.clone(),
                    d.kind.clone(),
                    d.source_id.clone(),
                    show_bytes(d.reason.as_bytes()),
                ]
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            table(&["PARTITION", "ID", "KIND", "SOURCE ID", "REASON"], rows)
        );
    }
    let held: Vec<String> = p
        .held_back()
        .iter()
        .map(|(i, r)| format!("{i} (group {})", r.held_by.as_deref().unwrap_or("?")))
        .collect();
    let judged = p
        .rows
        .iter()
        .any(|r| r.status.retention.held_back.is_some());
    let _ = write!(
        out,
        "\nretention: {}",
        match (held.is_empty(), judged) {
            (false, _) => format!("HELD BACK in partitions {}", held.join(", ")),
            (true, true) => "not held back in any partition".to_owned(),
            (true, false) =>
                "not judged (no policy known, or more entries to count than the cap)".to_owned(),
        }
    );
    out
}

fn render_groups(out: &mut String, groups: &[GroupStatus]) {
    if groups.is_empty() {
        let _ = writeln!(out, "\nno consumer groups");
        return;
    }
    let rows = groups
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.last_delivered_id.clone(),
                at_least(g.lag, g.lag_exact),
                g.pending.to_string(),
                g.consumers_total.to_string(),
            ]
        })
        .collect();
    let _ = writeln!(
        out,
        "\n{}",
        table(
            &["GROUP", "LAST DELIVERED", "LAG", "PENDING", "CONSUMERS"],
            rows
        )
    );
    if groups.iter().any(|g| !g.lag_exact) {
        let _ = writeln!(
            out,
            "(+ at least: Redis cannot tell this group's lag, and counting it stopped at the cap)"
        );
    }
}

/// `n`, or `n+` when it is only a lower bound.
fn at_least(n: u64, exact: bool) -> String {
    if exact {
        n.to_string()
    } else {
        format!("{n}+")
    }
}

fn render_group(out: &mut String, g: &GroupStatus) {
    let now = now_ms();
    if !g.consumers.is_empty() {
        let rows = g
            .consumers
            .iter()
            .map(|c| vec![c.name.clone(), c.pending.to_string(), age(c.idle_ms)])
            .collect();
        let listed = g.consumers.len() as u64;
        let some = if g.consumers_total > listed {
            format!(" (the first {listed} of {})", g.consumers_total)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\nconsumers of {}{some}:\n{}",
            g.name,
            table(&["CONSUMER", "PENDING", "IDLE"], rows)
        );
    }
    if !g.oldest_pending.is_empty() {
        let rows = g
            .oldest_pending
            .iter()
            .map(|p| {
                let waited = id_ms(&p.id)
                    .map(|ms| age(now.saturating_sub(ms)))
                    .unwrap_or_default();
                vec![
                    p.id.clone(),
                    p.consumer.clone(),
                    age(p.idle_ms),
                    p.deliveries.to_string(),
                    waited,
                ]
            })
            .collect();
        let _ = writeln!(
            out,
            "\noldest pending of {}:\n{}",
            g.name,
            table(&["ID", "CONSUMER", "IDLE", "DELIVERIES", "AGE"], rows)
        );
    }
}

/// `: permanent 3, trimmed 1` — dead letters counted by kind, or nothing.
fn by_kind(kinds: &std::collections::BTreeMap<String, u64>) -> String {
    if kinds.is_empty() {
        return String::new();
    }
    let each: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(": {}", each.join(", "))
}

fn render_dlq(out: &mut String, s: &StreamStatus) {
    let counted = if s.dlq.scanned < s.dlq.length {
        format!(" (kinds of the newest {})", s.dlq.scanned)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "\ndead letters in {}: {}{}{counted}",
        s.dlq.key,
        s.dlq.length,
        by_kind(&s.dlq.kinds)
    );
    if !s.dlq.newest.is_empty() {
        let rows = s
            .dlq
            .newest
            .iter()
            .map(|d| {
                let reason = show_bytes(d.reason.as_bytes());
                vec![
                    d.id.clone(),
                    d.kind.clone(),
                    d.source_id.clone(),
                    match &d.undecodable {
                        Some(why) => format!("[undecodable: {why}] {reason}"),
                        None => reason,
                    },
                ]
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            table(&["ID", "KIND", "SOURCE ID", "REASON"], rows)
        );
    }
}

fn render_retention(out: &mut String, r: &RetentionStatus) {
    let floor = match (&r.floor, &r.floor_group) {
        (Some(f), Some(g)) => format!("groups need entries from {f} on (group {g})"),
        _ => "no group needs any entry".into(),
    };
    let mut policy = Vec::new();
    if let Some(m) = r.maxlen {
        policy.push(format!("maxlen {m}"));
    }
    if let Some(a) = r.max_age_ms {
        policy.push(format!("max-age {}", duration(Duration::from_millis(a))));
    }
    let policy = if policy.is_empty() {
        String::new()
    } else {
        format!(" [{}]", policy.join(", "))
    };
    let held = match (&r.held_back, &r.held_by) {
        (Some(true), Some(g)) => format!("; retention{policy} HELD BACK by group {g}"),
        (Some(false), _) => format!("; retention{policy} not held back"),
        (None, _) if !policy.is_empty() => format!(
            "; retention{policy} cannot be judged: more entries to count from the floor on than the count cap"
        ),
        _ => String::new(),
    };
    let _ = write!(out, "\nretention: {floor}{held}");
}
