//! `host groups create|destroy|setid`: consumer groups by hand, with safe
//! defaults.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{Connect, StreamArgs, resolve};
use crate::ops::groups::{DestroyPolicy, at_least};
use crate::ops::{self, parse_position};

/// `host groups …`.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Create a consumer group. It starts at new entries (`$`) unless --start says otherwise,
    /// and the stream must exist unless --mkstream.
    Create(Box<CreateArgs>),
    /// Destroy a consumer group; refused while a consumer was active within --claim-idle (a
    /// running host would recreate it) or entries are pending, unless --force (their
    /// deliveries are forgotten).
    Destroy(Box<DestroyArgs>),
    /// Move a group's last-delivered id. Moving it back redelivers entries; moving it past
    /// entries not yet delivered skips them, which needs --force.
    Setid(Box<SetidArgs>),
}

impl GroupsCommand {
    pub(super) fn connect_mut(&mut self) -> &mut Connect {
        match self {
            GroupsCommand::Create(a) => &mut a.group.connect,
            GroupsCommand::Destroy(a) => &mut a.group.connect,
            GroupsCommand::Setid(a) => &mut a.group.connect,
        }
    }
}

/// A group of a stream.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Connection.
    #[command(flatten)]
    pub connect: Connect,
    /// The stream (`--dlq` is not used).
    #[command(flatten)]
    pub target: StreamArgs,
    /// The consumer group.
    #[arg(long, value_name = "NAME")]
    pub group: String,
    /// destroy: even with pending entries or active consumers; setid: even past undelivered
    /// entries.
    #[arg(long)]
    pub force: bool,
}

/// Flags of `groups create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The group.
    #[command(flatten)]
    pub group: GroupArgs,
    /// Where it starts: `$` (new entries only), `0` (all history), an id or a time.
    #[arg(long, value_name = "ID", default_value = "$")]
    pub start: String,
    /// Create the stream if it does not exist.
    #[arg(long)]
    pub mkstream: bool,
}

/// Flags of `groups destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// The group.
    #[command(flatten)]
    pub group: GroupArgs,
    /// A consumer idle for less than this counts as running (use the hosts' `run --claim-idle`).
    #[arg(long, env = "STREAMHOST_CLAIM_IDLE", default_value = "30s", value_parser = crate::cli::duration)]
    pub claim_idle: Duration,
}

/// Flags of `groups setid`.
#[derive(Debug, Args)]
pub struct SetidArgs {
    /// The group.
    #[command(flatten)]
    pub group: GroupArgs,
    /// The new last-delivered id: `$` (the end), `0` (redeliver everything), an id or a time.
    #[arg(long, value_name = "ID")]
    pub id: String,
}

fn position(text: &str) -> anyhow::Result<String> {
    match text {
        "$" | "0" => Ok(text.to_owned()),
        other => Ok(parse_position(other)?),
    }
}

pub(super) async fn run(cmd: GroupsCommand) -> anyhow::Result<ExitCode> {
    let g = match &cmd {
        GroupsCommand::Create(a) => &a.group,
        GroupsCommand::Destroy(a) => &a.group,
        GroupsCommand::Setid(a) => &a.group,
    };
    let (redis, targets) = resolve(&g.connect, &g.target, false)?;
    let mut nodes = ops::nodes(&redis)?;
    // A partitioned stream's group is one group on each partition, changed
    // partition by partition; a refusal stops the command and names the
    // partitions already changed.
    let mut done: Vec<String> = Vec::new();
    for part in targets[0].parts() {
        let mut con = nodes.of(&part.stream).await?;
        if let Err(e) = one(&cmd, g, &mut con, &part.stream).await {
            if done.is_empty() {
                return Err(e);
            }
            let message = format!("{e} (already changed: {})", done.join(", "));
            return Err(e.context(message));
        }
        done.push(part.stream);
    }
    Ok(ExitCode::SUCCESS)
}

async fn one(
    cmd: &GroupsCommand,
    g: &GroupArgs,
    con: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> anyhow::Result<()> {
    match cmd {
        GroupsCommand::Create(a) => {
            let start = position(&a.start)?;
            ops::groups::create(con, stream, &g.group, &start, a.mkstream).await?;
            println!("created group {} of {stream} at {start}", g.group);
        }
        GroupsCommand::Destroy(a) => {
            let policy = DestroyPolicy {
                claim_idle: a.claim_idle,
                force: g.force,
            };
            let done = ops::groups::destroy(con, stream, &g.group, policy).await?;
            let active = match done.active.len() {
                0 => String::new(),
                n => format!("; {n} consumers were still active"),
            };
            println!(
                "destroyed group {} of {stream} ({} pending entries dropped{active})",
                done.group, done.pending
            );
        }
        GroupsCommand::Setid(a) => {
            let id = position(&a.id)?;
            let moved = ops::groups::set_id(con, stream, &g.group, &id, g.force).await?;
            let skipped = match moved.skipped.count {
                0 => String::new(),
                _ => format!(
                    " ({} undelivered entries skipped)",
                    at_least(&moved.skipped)
                ),
            };
            println!(
                "group {} of {stream}: last delivered {} -> {id}{skipped}",
                g.group, moved.from
            );
        }
    }
    Ok(())
}
