//! `host trim`: the group-safe retention of `run`
//! ([`crate::stream::retention::trim`], the same script) applied once, or a
//! forced cut that first names what it will take from the groups — counted
//! inside Redis and listed up to a cap, so the report costs the same for a
//! cut of ten entries or ten million.

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::status::COUNT_CAP;
use super::{OpsError, no_such_stream};
use crate::stream::{count, entries, inspect};
use crate::vocab::ids::id_at_age;

/// Pending ids a forced trim lists per group (`pending_count` says how many
/// it removed).
pub const LOST_IDS_LISTED: usize = 100;

/// Pending entries read per `XPENDING` call while counting those a forced
/// trim removes.
const PENDING_PAGE: usize = 1_000;
use crate::stream::pending::{self, PendingQuery};
use crate::stream::retention::{self, TrimMemo};
use crate::vocab::retention::Retention;

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
    /// The oldest pending entries removed, at most [`LOST_IDS_LISTED`]
    /// (they become `trimmed` dead letters when reclaimed).
    pub pending: Vec<String>,
    /// Pending entries removed.
    pub pending_count: u64,
    /// Whether `pending_count` is exact (else at least that many: the count
    /// stopped at [`COUNT_CAP`]).
    pub pending_exact: bool,
    /// Entries removed before the group delivered them.
    pub undelivered: u64,
    /// Whether `undelivered` is exact (else at least that many).
    pub undelivered_exact: bool,
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
            out.removed = entries::cut_below(con, stream, cut).await?;
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
                // The n-th newest entry is the oldest one kept.
                n => count::count_back(con, stream, "+", "-", n)
                    .await?
                    .last
                    .unwrap_or_default(),
            });
        }
    }
    if let Some(age) = policy.max_age {
        let by_age = id_at_age(age);
        cut = match cut {
            Some(c)
                if c == "+"
                    || crate::vocab::ids::id_parts(&c) >= crate::vocab::ids::id_parts(&by_age) =>
            {
                Some(c)
            }
            _ => Some(by_age),
        };
    }
    if cut.as_deref() == Some("+") {
        // Everything goes: the cut is just past the newest entry.
        let last = count::count_back(con, stream, "+", "-", 1).await?.last;
        cut = last.as_deref().map(next_id);
    }
    Ok(cut)
}

fn next_id(id: &str) -> String {
    let (ms, seq) = crate::vocab::ids::id_parts(id).unwrap_or((0, 0));
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
    let before_cut = format!("({cut}");
    for g in inspect::groups(con, stream).await? {
        let (pending, pending_count, pending_exact) =
            pending_before(con, stream, &g.name, &before_cut).await?;
        let after = format!("({}", g.last_delivered_id);
        let undelivered = count::count(con, stream, &after, &before_cut, COUNT_CAP).await?;
        if pending_count > 0 || undelivered.count > 0 {
            out.push(Lost {
                group: g.name,
                pending,
                pending_count,
                pending_exact,
                undelivered: undelivered.count,
                undelivered_exact: undelivered.exact,
            });
        }
    }
    Ok(out)
}

/// The group's pending entries before `end` (an `XPENDING` bound): the
/// oldest [`LOST_IDS_LISTED`] ids, how many there are (read a page at a
/// time, up to [`COUNT_CAP`]), and whether that count is exact.
async fn pending_before(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    end: &str,
) -> Result<(Vec<String>, u64, bool), OpsError> {
    let (mut listed, mut counted) = (Vec::new(), 0u64);
    let mut start = "-".to_owned();
    while counted < COUNT_CAP {
        let query = PendingQuery::oldest(PENDING_PAGE).between(&start, end);
        let page = pending::rows(con, stream, group, query).await?;
        counted += page.len() as u64;
        let full = page.len() == PENDING_PAGE;
        if let Some(last) = page.last() {
            start = format!("({}", last.id);
        }
        let room = LOST_IDS_LISTED - listed.len();
        listed.extend(page.into_iter().take(room).map(|p| p.id));
        if !full {
            return Ok((listed, counted, true));
        }
    }
    Ok((listed, counted, false))
}
