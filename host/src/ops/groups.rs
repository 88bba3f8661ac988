//! `host groups`'s policies: a group is created only once; it is destroyed
//! only when nothing would notice — no pending entries and no consumer
//! active within the reclaim idle time — and moved only where it skips no
//! undelivered entry (counted inside Redis), unless the operator forces it.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::status::COUNT_CAP;
use super::{OpsError, require_stream};
use crate::stream::count::{self, Counted};
use crate::stream::{consumers, groups, inspect};
use crate::vocab::ids::id_parts;

/// Consumers of a group read to tell whether any is active: a group with
/// more cannot be judged, and is destroyed only with `--force`.
const CONSUMERS_READ: usize = 10_000;

/// Most active consumers a refusal names; the rest are counted.
const NAMED_CONSUMERS: usize = 10;

/// What may stop a destroy.
#[derive(Debug, Clone, Copy)]
pub struct DestroyPolicy {
    /// A consumer idle for less than this is taken to be running (the
    /// `--claim-idle` of the hosts: a live host touches the group well
    /// within it).
    pub claim_idle: Duration,
    /// Destroy whatever is pending or running.
    pub force: bool,
}

/// A consumer of the group that was active within the claim idle time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveConsumer {
    /// Its name.
    pub name: String,
    /// Milliseconds since it last read or claimed.
    pub idle_ms: u64,
}

/// What a destroy found and did.
#[derive(Debug, Clone, Serialize)]
pub struct Destroyed {
    /// Stream key.
    pub stream: String,
    /// The group destroyed.
    pub group: String,
    /// Pending entries whose deliveries were forgotten.
    pub pending: u64,
    /// Consumers still active when it was forced.
    pub active: Vec<ActiveConsumer>,
}

/// Destroys `group` of `stream` under `policy`. Refused (`OpsError::Usage`)
/// while a consumer was active within `policy.claim_idle` — a running host
/// would recreate the group at once — or while entries are pending, unless
/// `policy.force`.
pub async fn destroy(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    policy: DestroyPolicy,
) -> Result<Destroyed, OpsError> {
    require_stream(con, stream).await?;
    let info = inspect::groups(con, stream)
        .await?
        .into_iter()
        .find(|g| g.name == group)
        .ok_or_else(|| OpsError::Usage(format!("stream {stream:?} has no group {group:?}")))?;
    let active = active_consumers(con, stream, group, policy.claim_idle).await?;
    if !policy.force {
        refuse(group, policy.claim_idle, &active, info.pending)?;
    }
    groups::destroy(con, stream, group).await?;
    Ok(Destroyed {
        stream: stream.to_owned(),
        group: group.to_owned(),
        pending: info.pending,
        active,
    })
}

/// The consumers idle for less than `claim_idle`, most recently active first.
async fn active_consumers(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    claim_idle: Duration,
) -> Result<Vec<ActiveConsumer>, OpsError> {
    let within = claim_idle.as_millis() as u64;
    let known = consumers::first(con, stream, group, CONSUMERS_READ + 1).await?;
    if known.len() > CONSUMERS_READ {
        return Err(OpsError::Usage(format!(
            "group {group} has more than {CONSUMERS_READ} consumers: cannot tell whether any is active; add --force to destroy it anyway"
        )));
    }
    let mut active: Vec<ActiveConsumer> = known
        .into_iter()
        .filter(|c| c.idle_ms < within)
        .map(|c| ActiveConsumer {
            name: c.name,
            idle_ms: c.idle_ms,
        })
        .collect();
    active.sort_by_key(|c| c.idle_ms);
    Ok(active)
}

/// The refusal, if anything stands in the way.
fn refuse(
    group: &str,
    claim_idle: Duration,
    active: &[ActiveConsumer],
    pending: u64,
) -> Result<(), OpsError> {
    let mut why = Vec::new();
    if pending > 0 {
        why.push(format!("{pending} pending entries (delivered, not acked)"));
    }
    if !active.is_empty() {
        why.push(format!(
            "consumers active within --claim-idle ({}): {} (a running host recreates its group \
             and goes on; stop them, or wait until they are idle)",
            humantime::format_duration(claim_idle),
            named(active)
        ));
    }
    if why.is_empty() {
        return Ok(());
    }
    Err(OpsError::Usage(format!(
        "group {group} has {}: refusing to destroy it without --force",
        why.join(" and ")
    )))
}

/// `a (idle 120ms), b (idle 2s)`, at most [`NAMED_CONSUMERS`] of them.
fn named(active: &[ActiveConsumer]) -> String {
    let mut text: Vec<String> = active
        .iter()
        .take(NAMED_CONSUMERS)
        .map(|c| {
            let idle = humantime::format_duration(Duration::from_millis(c.idle_ms));
            format!("{} (idle {idle})", c.name)
        })
        .collect();
    if active.len() > NAMED_CONSUMERS {
        text.push(format!("and {} more", active.len() - NAMED_CONSUMERS));
    }
    text.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(name: &str, idle_ms: u64) -> ActiveConsumer {
        ActiveConsumer {
            name: name.into(),
            idle_ms,
        }
    }

    #[test]
    fn active_consumers_are_named_with_their_idle_time_and_counted_past_ten() {
        let idle = Duration::from_secs(30);
        let err = refuse("g", idle, &[consumer("a", 120), consumer("b", 2_000)], 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("within --claim-idle (30s): a (idle 120ms), b (idle 2s) ("),
            "{err}"
        );
        let many: Vec<_> = (0..13).map(|i| consumer(&format!("c{i}"), i)).collect();
        let err = refuse("g", idle, &many, 0).unwrap_err().to_string();
        assert!(err.contains("c9 (idle 9ms), and 3 more"), "{err}");
        assert!(!err.contains("c10"), "{err}");
    }

    #[test]
    fn pending_entries_and_active_consumers_are_both_named() {
        let idle = Duration::from_secs(1);
        let err = refuse("g", idle, &[], 2).unwrap_err().to_string();
        assert!(err.contains("has 2 pending entries"), "{err}");
        let err = refuse("g", idle, &[consumer("a", 5)], 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 pending entries (delivered, not acked) and consumers active"),
            "{err}"
        );
        assert!(
            err.ends_with("refusing to destroy it without --force"),
            "{err}"
        );
        assert!(refuse("g", idle, &[], 0).is_ok());
    }
}

/// Creates `group` of `stream` at `start`; refused if it exists, or if the
/// stream does not and `mkstream` is not asked.
pub async fn create(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    start: &str,
    mkstream: bool,
) -> Result<(), OpsError> {
    if !mkstream {
        require_stream(con, stream).await?;
    }
    if !groups::create(con, stream, group, start, mkstream).await? {
        return Err(OpsError::Usage(format!(
            "group {group:?} of {stream:?} already exists"
        )));
    }
    Ok(())
}

/// What a move of a group did.
#[derive(Debug, Clone)]
pub struct Moved {
    /// Its last delivered id before.
    pub from: String,
    /// The entries not yet delivered that the move skipped.
    pub skipped: Counted,
}

/// Moves `group`'s last delivered id to `id` (`$`: the end, `0`: redeliver
/// everything). Refused when it would skip entries the group has not
/// delivered yet, unless `force`.
pub async fn set_id(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    id: &str,
    force: bool,
) -> Result<Moved, OpsError> {
    require_stream(con, stream).await?;
    let info = find(con, stream, group).await?;
    let skipped = skipped_by(con, stream, &info, id).await?;
    if skipped.count > 0 && !force {
        return Err(OpsError::Usage(format!(
            "moving group {group} to {id} would skip {} entries it has not delivered yet: add --force to skip them",
            at_least(&skipped)
        )));
    }
    groups::set_id(con, stream, group, id).await?;
    Ok(Moved {
        from: info.last_delivered_id,
        skipped,
    })
}

/// The entries a move of the group to `id` (`$`: the end) skips: those
/// after its last delivered id up to `id`, counted inside Redis up to
/// [`COUNT_CAP`].
async fn skipped_by(
    con: &mut MultiplexedConnection,
    stream: &str,
    info: &inspect::GroupInfo,
    id: &str,
) -> Result<Counted, OpsError> {
    let end = if id == "$" { "+" } else { id };
    let backwards =
        id == "0" || id_parts(end).is_some_and(|p| Some(p) <= id_parts(&info.last_delivered_id));
    if backwards {
        return Ok(Counted {
            count: 0,
            exact: true,
            last: None,
        });
    }
    let after = format!("({}", info.last_delivered_id);
    Ok(count::count(con, stream, &after, end, COUNT_CAP).await?)
}

/// A count as text: "at least N" when it stopped at its cap.
pub fn at_least(c: &Counted) -> String {
    if c.exact {
        c.count.to_string()
    } else {
        format!("at least {}", c.count)
    }
}

async fn find(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<inspect::GroupInfo, OpsError> {
    inspect::groups(con, stream)
        .await?
        .into_iter()
        .find(|g| g.name == group)
        .ok_or_else(|| OpsError::Usage(format!("stream {stream:?} has no group {group:?}")))
}
