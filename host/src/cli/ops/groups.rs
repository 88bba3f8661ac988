//! `host groups create|destroy|setid`: consumer groups by hand, with safe
//! defaults.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{Connect, StreamArgs, resolve, usage};
use crate::ops::groups::DestroyPolicy;
use crate::ops::status::COUNT_CAP;
use crate::ops::{self, OpsError, parse_position, require_stream};
use crate::stream::{count, groups, inspect};
use crate::vocab::ids::id_parts;

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
    let stream = targets[0].stream.clone();
    let mut con = ops::connect(&redis).await?;
    match &cmd {
        GroupsCommand::Create(a) => {
            let start = position(&a.start)?;
            if !a.mkstream {
                require_stream(&mut con, &stream).await?;
            }
            if !groups::create(&mut con, &stream, &g.group, &start, a.mkstream)
                .await
                .map_err(OpsError::from)?
            {
                return Err(usage(format!(
                    "group {:?} of {stream:?} already exists",
                    g.group
                )));
            }
            println!("created group {} of {stream} at {start}", g.group);
        }
        GroupsCommand::Destroy(a) => {
            let policy = DestroyPolicy {
                claim_idle: a.claim_idle,
                force: g.force,
            };
            let done = ops::groups::destroy(&mut con, &stream, &g.group, policy).await?;
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
            require_stream(&mut con, &stream).await?;
            let info = find(&mut con, &stream, &g.group).await?;
            let id = position(&a.id)?;
            let skipped = skipped_by(&mut con, &stream, &info, &id).await?;
            if skipped.count > 0 && !g.force {
                return Err(usage(format!(
                    "moving group {} to {id} would skip {} entries it has not delivered yet: add --force to skip them",
                    g.group,
                    at_least(&skipped)
                )));
            }
            groups::set_id(&mut con, &stream, &g.group, &id)
                .await
                .map_err(OpsError::from)?;
            println!(
                "group {} of {stream}: last delivered {} -> {id}{}",
                g.group,
                info.last_delivered_id,
                if skipped.count > 0 {
                    format!(" ({} undelivered entries skipped)", at_least(&skipped))
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The entries a move of the group to `id` (`$`: the end) skips: those
/// after its last delivered id up to `id`, counted inside Redis up to
/// [`COUNT_CAP`].
async fn skipped_by(
    con: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    info: &inspect::GroupInfo,
    id: &str,
) -> anyhow::Result<count::Counted> {
    let end = if id == "$" { "+" } else { id };
    let backwards =
        id == "0" || id_parts(end).is_some_and(|p| Some(p) <= id_parts(&info.last_delivered_id));
    if backwards {
        return Ok(count::Counted {
            count: 0,
            exact: true,
            last: None,
        });
    }
    let after = format!("({}", info.last_delivered_id);
    Ok(count::count(con, stream, &after, end, COUNT_CAP)
        .await
        .map_err(OpsError::from)?)
}

/// A count as text: "at least N" when it stopped at its cap.
fn at_least(c: &count::Counted) -> String {
    if c.exact {
        c.count.to_string()
    } else {
        format!("at least {}", c.count)
    }
}

async fn find(
    con: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
) -> anyhow::Result<inspect::GroupInfo> {
    inspect::groups(con, stream)
        .await
        .map_err(OpsError::from)?
        .into_iter()
        .find(|g| g.name == group)
        .ok_or_else(|| usage(format!("stream {stream:?} has no group {group:?}")))
}
