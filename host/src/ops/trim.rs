//! `host trim`: the group-safe retention of `run`
//! ([`crate::stream::retention::trim`], the same script) applied once, or a
//! forced cut that first names what it will take from the groups.

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::{OpsError, no_such_stream, now_ms};
use crate::stream::inspect;
use crate::stream::retention::{self, Retention, TrimMemo};

/// What a trim did.
#[derive(Debug, Clone, Serialize)]
pub struct TrimOutcome {
    /// Stream key.
    pub stream: String,
    /// Length before.
    pub before: u64,
    /// Length after.
    pub after: u64,
    /// Entries removed.
    pub removed: u64,
    /// The group that kept the policy from being met (safe trim only).
    pub held_by: Option<String>,
    /// The oldest entry some group still needs.
    pub floor: Option<String>,
    /// Whether the cut ignored the groups (`--force`).
    pub forced: bool,
    /// Per group, the undelivered or pending entries a forced cut removed.
    pub lost: Vec<Lost>,
}

/// Entries a group still needed that a forced cut removed.
#[derive(Debug, Clone, Serialize)]
pub struct Lost {
    /// Group.
    pub group: String,
    /// Pending entries removed (they become `trimmed` dead letters when reclaimed).
    pub pending: Vec<String>,
    /// Entries removed before the group delivered them.
    pub undelivered: u64,
}

/// Applies `policy` to `stream` once: group-safe (approximate unless
/// `exact`), or with `force` exactly (`XTRIM MAXLEN` / `MINID`), naming
/// what the groups lose.
pub async fn trim(
    con: &mut MultiplexedConnection,
    stream: &str,
    policy: Retention,
    force: bool,
    exact: bool,
) -> Result<TrimOutcome, OpsError> {
    let before = inspect::stream_info(con, stream)
        .await?
        .ok_or_else(|| no_such_stream(stream))?
        .length;
    let mut out = TrimOutcome {
        stream: stream.to_owned(),
        before,
        after: before,
        removed: 0,
        held_by: None,
        floor: None,
        forced: force,
        lost: Vec::new(),
    };
    if force {
        let cut = cut_point(con, stream, policy).await?;
        if let Some(cut) = &cut {
            out.lost = losses(con, stream, cut).await?;
            let n: u64 = redis::cmd("XTRIM")
                .arg(stream)
                .arg("MINID")
                .arg(cut)
                .query_async(con)
                .await?;
            out.removed = n;
        }
    } else {
        let report = retention::trim(con, stream, policy, &TrimMemo::default(), exact)
            .await?
            .ok_or_else(|| no_such_stream(stream))?;
        out.removed = report.trimmed;
        out.held_by = report.held_by;
        out.floor = report.floor;
    }
    out.after = inspect::len(con, stream).await?;
    Ok(out)
}

/// The first id a forced trim keeps (everything before it goes): the later
/// of the `maxlen`-th newest entry and the age cutoff; `None` if nothing goes.
async fn cut_point(
    con: &mut MultiplexedConnection,
    stream: &str,
    policy: Retention,
) -> Result<Option<String>, OpsError> {
    let mut cut: Option<String> = None;
    if let Some(n) = policy.maxlen {
        let len = inspect::len(con, stream).await?;
        if len > n {
            cut = Some(match n {
                0 => "+".to_owned(),
                n => {
                    let kept = inspect::rev_range(con, stream, "+", "-", n as usize).await?;
                    kept.last().map(|(id, _)| id.clone()).unwrap_or_default()
                }
            });
        }
    }
    if let Some(age) = policy.max_age {
        let by_age = format!("{}-0", now_ms().saturating_sub(age.as_millis() as u64));
        cut = match cut {
            Some(c)
                if c == "+"
                    || crate::stream::entry::id_parts(&c)
                        >= crate::stream::entry::id_parts(&by_age) =>
            {
                Some(c)
            }
            _ => Some(by_age),
        };
    }
    if cut.as_deref() == Some("+") {
        // Everything goes: the cut is just past the newest entry.
        let last = inspect::rev_range(con, stream, "+", "-", 1).await?;
        cut = last.first().map(|(id, _)| next_id(id));
    }
    Ok(cut)
}

fn next_id(id: &str) -> String {
    let (ms, seq) = crate::stream::entry::id_parts(id).unwrap_or((0, 0));
    match seq.checked_add(1) {
        Some(s) => format!("{ms}-{s}"),
        None => format!("{}-0", ms + 1),
    }
}

/// What each group still needs before `cut`.
async fn losses(
    con: &mut MultiplexedConnection,
    stream: &str,
    cut: &str,
) -> Result<Vec<Lost>, OpsError> {
    let mut out = Vec::new();
    for g in inspect::groups(con, stream).await? {
        let pending: Vec<String> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&g.name)
            .arg("-")
            .arg(format!("({cut}"))
            .arg(100_000)
            .query_async::<Vec<(String, String, u64, u64)>>(con)
            .await?
            .into_iter()
            .map(|(id, ..)| id)
            .collect();
        let undelivered = inspect::range(
            con,
            stream,
            &format!("({}", g.last_delivered_id),
            &format!("({cut}"),
            usize::MAX >> 1,
        )
        .await?
        .len() as u64;
        if !pending.is_empty() || undelivered > 0 {
            out.push(Lost {
                group: g.name,
                pending,
                undelivered,
            });
        }
    }
    Ok(out)
}
