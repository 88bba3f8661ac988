//! `host trim`: flags and report of a one-off retention pass.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args};

use super::output::print_json;
use super::{Connect, StreamArgs, resolve};
use crate::ops::{self, OpsError, trim};
use crate::vocab::retention::Retention;

/// Flags of `host trim`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("policy").required(true).multiple(true).args(["maxlen", "max_age"])))]
#[command(
    after_help = "Without --force the trim is the one `host run` applies: approximate \
(XTRIM MAXLEN ~ / MINID ~, whole stream nodes), and never past the oldest entry any group has not \
yet delivered or still has pending; the group that holds it back is named. --exact cuts to the \
entry instead of whole nodes, still never past that oldest entry. With --force the cut is exact and \
ignores the groups; what they lose is named on stderr.\n\n\
Exit status: 0 when the trim ran (held back or not); 64 for bad arguments, e.g. a stream that does \
not exist; 69 when Redis cannot be reached.\n\n\
With partitions (--partitions N, or a --config pipeline's), each partition is trimmed to the policy \
(as `host run` trims each), or only the one --partition names."
)]
pub struct TrimArgs {
    /// Connection.
    #[command(flatten)]
    pub connect: Connect,
    /// The stream, or its partitions (`--dlq` is not used).
    #[command(flatten)]
    pub target: StreamArgs,
    /// Keep about N entries.
    #[arg(long, value_name = "N")]
    pub maxlen: Option<u64>,
    /// Remove entries older than this.
    #[arg(long, value_name = "DUR", value_parser = super::super::duration)]
    pub max_age: Option<Duration>,
    /// Cut regardless of the groups: entries not yet delivered or still pending are lost
    /// (pending ones become `trimmed` dead letters when a host reclaims them).
    #[arg(long)]
    pub force: bool,
    /// Trim to exactly the bound (XTRIM MAXLEN = / MINID =) rather than whole stream nodes, still
    /// never past an entry a group needs: for a small stream, where `~` removes nothing.
    #[arg(long, conflicts_with = "force")]
    pub exact: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(args: TrimArgs) -> anyhow::Result<ExitCode> {
    let (redis, targets) = resolve(&args.connect, &args.target, false)?;
    let t = &targets[0];
    let mut nodes = ops::nodes(&redis)?;
    let policy = Retention {
        maxlen: args.maxlen,
        max_age: args.max_age,
    };
    // A partitioned stream is trimmed partition by partition, each to the
    // policy, as `host run` applies it to each; partitions nothing was
    // appended to yet are passed over.
    let mut outcomes = Vec::new();
    for part in t.parts() {
        let mut con = nodes.of(&part.stream).await?;
        match trim::trim(&mut con, &part.stream, policy, args.force, args.exact).await {
            Ok(out) => outcomes.push(out),
            Err(OpsError::Usage(_)) if part.index.is_some() && t.only.is_none() => {}
            Err(e) => return Err(e.into()),
        }
    }
    if outcomes.is_empty() {
        return Err(OpsError::Usage(format!("no partition of {} exists", t.label())).into());
    }
    for lost in outcomes.iter().flat_map(|o| &o.lost) {
        warn_lost(lost);
    }
    if args.json {
        match (t.partitions, t.only) {
            (Some(_), None) => print_json(&outcomes)?,
            _ => print_json(&outcomes[0])?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    for out in &outcomes {
        println!(
            "{}: removed {} entries ({} -> {}){}",
            out.stream,
            out.removed,
            out.before,
            out.after,
            if out.forced {
                " regardless of the groups"
            } else {
                ""
            }
        );
        if let Some(group) = &out.held_by {
            println!(
                "held back by group {group}: it has not yet delivered or acked entries from {} on, so those stay",
                out.floor.as_deref().unwrap_or("?")
            );
        }
    }
    if outcomes.len() > 1 {
        let removed: u64 = outcomes.iter().map(|o| o.removed).sum();
        println!(
            "{}: removed {removed} entries over {} partitions",
            t.stream,
            outcomes.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Names on stderr what a forced cut took from one group; `+` marks a count
/// that stopped at its cap.
fn warn_lost(lost: &trim::Lost) {
    let shown: Vec<&str> = lost.pending.iter().take(10).map(String::as_str).collect();
    let more = lost.pending_count.saturating_sub(shown.len() as u64);
    let ids = match (shown.is_empty(), more) {
        (true, _) => String::new(),
        (false, 0) => format!(" ({})", shown.join(", ")),
        (false, more) => format!(" ({}, … [{more} more])", shown.join(", ")),
    };
    let plus = |exact: bool| if exact { "" } else { "+" };
    eprintln!(
        "warning: --force removed entries group {} still needed: {}{} pending{ids} and {}{} not yet delivered",
        lost.group,
        lost.pending_count,
        plus(lost.pending_exact),
        lost.undelivered,
        plus(lost.undelivered_exact),
    );
}
