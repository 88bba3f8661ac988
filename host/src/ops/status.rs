//! `host status`: one stream's state as data — length and ends, each
//! group's position, lag, pending entries and consumers, the dead letters,
//! and whether retention is held back — plus the threshold checks of
//! `status --check`. [`collect`] is what an HTTP status API serves.
//!
//! Its cost does not grow with the data: entries are counted inside Redis
//! ([`crate::stream::count`]) up to [`StatusOptions::count_cap`], consumers
//! and pending entries are listed up to a number, and a figure cut short by
//! a cap is marked (`*_exact: false`: "at least").

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::dlq::Header;
use super::{OpsError, no_such_stream};
use crate::stream::consumers;
use crate::stream::count;
use crate::stream::dlq_scan::{self, Order, RecordHeader};
use crate::stream::inspect::{self, GroupInfo};
use crate::stream::pending::{self, PendingQuery};
use crate::vocab::ids::{id_lt, id_ms, now_ms};
use crate::vocab::outcome::DeadLetterKind;
use crate::vocab::retention::Retention;

pub use super::thresholds::{Breach, Thresholds, check};

/// Entries counted at most for one figure (a lag Redis cannot tell, the
/// entries retention must keep): each count reads its range inside Redis a
/// few entries at a time and holds nothing of it, but costs Redis time in
/// proportion (the README's "What `status` costs" has the figures).
pub const COUNT_CAP: u64 = 1_000_000;

/// [`COUNT_CAP`] of views refreshed often (`/api/status`, the dashboard's
/// state every second): their counts stop sooner, and say so.
pub const LIVE_COUNT_CAP: u64 = 10_000;

/// Consumers listed at most per group (the group's `consumers_total` says
/// how many there are).
pub const CONSUMERS_LISTED: usize = 100;

/// The kinds the host writes, counted by name in [`DlqStatus::kinds`].
fn named_kinds() -> [&'static str; 4] {
    [
        DeadLetterKind::Permanent,
        DeadLetterKind::MaxDeliveries,
        DeadLetterKind::Trimmed,
        DeadLetterKind::Invalid,
    ]
    .map(DeadLetterKind::as_str)
}

/// What to collect besides the basics.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Dead-letter stream.
    pub dlq: String,
    /// Oldest pending entries listed per group.
    pub oldest_pending: usize,
    /// Newest dead letters listed.
    pub newest_dead_letters: usize,
    /// Newest dead letters counted by kind (inside Redis, a page at a time).
    pub dlq_scan: usize,
    /// The retention policy, when known, to tell whether it is held back.
    pub retention: Option<Retention>,
    /// Entries counted at most for one figure.
    pub count_cap: u64,
    /// Consumers listed at most per group.
    pub consumers_listed: usize,
}

impl StatusOptions {
    /// Defaults for `dlq`.
    pub fn new(dlq: String) -> Self {
        Self {
            dlq,
            oldest_pending: 5,
            newest_dead_letters: 5,
            dlq_scan: 10_000,
            retention: None,
            count_cap: COUNT_CAP,
            consumers_listed: CONSUMERS_LISTED,
        }
    }
}

/// One stream's state.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// Stream key.
    pub stream: String,
    /// When this was collected (ms since the epoch).
    pub collected_at_ms: u64,
    /// Entries in the stream.
    pub length: u64,
    /// Oldest entry id.
    pub first_id: Option<String>,
    /// Newest entry id.
    pub last_id: Option<String>,
    /// Entries ever added (Redis ≥ 7.0).
    pub entries_added: Option<u64>,
    /// Consumer groups.
    pub groups: Vec<GroupStatus>,
    /// Dead letters.
    pub dlq: DlqStatus,
    /// Retention.
    pub retention: RetentionStatus,
}

/// One consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    /// Name.
    pub name: String,
    /// Last id delivered.
    pub last_delivered_id: String,
    /// Entries not yet delivered: Redis's own figure, or else counted.
    pub lag: u64,
    /// Whether `lag` is exact; `false`: the count stopped at the cap, and
    /// the lag is at least `lag`.
    pub lag_exact: bool,
    /// Entries delivered and not yet acked.
    pub pending: u64,
    /// The first consumers by name, at most [`StatusOptions::consumers_listed`].
    pub consumers: Vec<ConsumerStatus>,
    /// Consumers in the group (all of them, listed or not).
    pub consumers_total: u64,
    /// The oldest pending entries, by id.
    pub oldest_pending: Vec<PendingStatus>,
}

/// One consumer.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerStatus {
    /// Name.
    pub name: String,
    /// Entries it holds.
    pub pending: u64,
    /// Milliseconds since it last interacted.
    pub idle_ms: u64,
}

/// One pending entry.
#[derive(Debug, Clone, Serialize)]
pub struct PendingStatus {
    /// Entry id.
    pub id: String,
    /// Holder.
    pub consumer: String,
    /// Milliseconds since its last delivery.
    pub idle_ms: u64,
    /// Deliveries so far.
    pub deliveries: u64,
}

/// The dead-letter stream.
#[derive(Debug, Clone, Serialize)]
pub struct DlqStatus {
    /// Its key.
    pub key: String,
    /// Records in it.
    pub length: u64,
    /// Records by kind, over the newest `scanned` (kinds never seen left
    /// out; a kind the host does not write counted as `other`).
    pub kinds: BTreeMap<String, u64>,
    /// How many records `kinds` counts: all of them, or the newest
    /// [`StatusOptions::dlq_scan`] of a longer DLQ.
    pub scanned: u64,
    /// Whether `kinds` leaves older records out (`scanned < length`).
    pub kinds_estimated: bool,
    /// The newest records, newest first.
    pub newest: Vec<NewestDeadLetter>,
}

/// A recent dead letter, briefly.
#[derive(Debug, Clone, Serialize)]
pub struct NewestDeadLetter {
    /// Record id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// Reason (its first 16 KiB).
    pub reason: String,
    /// Original entry id.
    pub source_id: String,
    /// Why its packed original fields cannot be read back (`None`: they can,
    /// or it has none packed).
    pub undecodable: Option<String>,
}

impl From<RecordHeader> for NewestDeadLetter {
    fn from(h: RecordHeader) -> Self {
        let d = Header::from(h);
        NewestDeadLetter {
            id: d.meta.id,
            kind: d.meta.kind,
            reason: d.meta.reason,
            source_id: d.meta.source_id,
            undecodable: d.undecodable,
        }
    }
}

/// Whether retention can do its work.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionStatus {
    /// The oldest entry some group has not delivered or still has pending:
    /// nothing from here on is trimmed by `run` or `trim`.
    pub floor: Option<String>,
    /// The group that sets the floor.
    pub floor_group: Option<String>,
    /// `--maxlen` of the policy, when known.
    pub maxlen: Option<u64>,
    /// `--max-age` of the policy in ms, when known.
    pub max_age_ms: Option<u64>,
    /// Whether the floor keeps the policy from being met (`None`: no policy
    /// known, or more entries to count than the count cap to tell).
    pub held_back: Option<bool>,
    /// The group holding it back.
    pub held_by: Option<String>,
}

/// Collects `stream`'s status; refuses a stream that does not exist.
pub async fn collect(
    con: &mut MultiplexedConnection,
    stream: &str,
    opts: &StatusOptions,
) -> Result<StreamStatus, OpsError> {
    collect_existing(con, stream, opts)
        .await?
        .ok_or_else(|| no_such_stream(stream))
}

/// The status of a stream that does not exist (yet): empty, no groups,
/// with what its dead-letter stream holds.
pub async fn empty(
    con: &mut MultiplexedConnection,
    stream: &str,
    opts: &StatusOptions,
) -> Result<StreamStatus, OpsError> {
    Ok(StreamStatus {
        stream: stream.to_owned(),
        collected_at_ms: now_ms(),
        length: 0,
        first_id: None,
        last_id: None,
        entries_added: None,
        groups: Vec::new(),
        dlq: dlq_status(con, opts).await?,
        retention: RetentionStatus {
            floor: None,
            floor_group: None,
            maxlen: opts.retention.and_then(|p| p.maxlen),
            max_age_ms: opts
                .retention
                .and_then(|p| p.max_age)
                .map(|d| d.as_millis() as u64),
            held_back: None,
            held_by: None,
        },
    })
}

/// Collects `stream`'s status, or `None` if it does not exist.
pub async fn collect_existing(
    con: &mut MultiplexedConnection,
    stream: &str,
    opts: &StatusOptions,
) -> Result<Option<StreamStatus>, OpsError> {
    let Some(info) = inspect::stream_info(con, stream).await? else {
        return Ok(None);
    };
    let mut groups = Vec::new();
    let mut floor: Option<Floor> = None;
    for g in inspect::groups(con, stream).await? {
        let (status, oldest) = group_status(con, stream, &g, opts).await?;
        let need = match oldest {
            Some(id) => Some(id),
            None => count::next_id(con, stream, &g.last_delivered_id).await?,
        };
        if let Some(need) = need
            && floor.as_ref().is_none_or(|f| id_lt(&need, &f.id))
        {
            floor = Some(Floor {
                id: need,
                group: groups.len(),
            });
        }
        groups.push(status);
    }
    let dlq = dlq_status(con, opts).await?;
    let retention = retention_status(con, stream, &info, &groups, floor, opts).await?;
    Ok(Some(StreamStatus {
        stream: stream.to_owned(),
        collected_at_ms: now_ms(),
        length: info.length,
        first_id: info.first_id,
        last_id: info.last_id,
        entries_added: info.entries_added,
        groups,
        dlq,
        retention,
    }))
}

/// The retention floor: the oldest entry a group still needs, and which
/// group (an index into the collected groups) needs it.
#[derive(Debug)]
struct Floor {
    id: String,
    group: usize,
}

async fn group_status(
    con: &mut MultiplexedConnection,
    stream: &str,
    g: &GroupInfo,
    opts: &StatusOptions,
) -> Result<(GroupStatus, Option<String>), OpsError> {
    let (lag, lag_exact) = match g.lag {
        Some(lag) => (lag, true),
        None => {
            let after = format!("({}", g.last_delivered_id);
            let n = count::count(con, stream, &after, "+", opts.count_cap).await?;
            (n.count, n.exact)
        }
    };
    let consumers = consumers::first(con, stream, &g.name, opts.consumers_listed)
        .await?
        .into_iter()
        .map(|c| ConsumerStatus {
            name: c.name,
            pending: c.pending,
            idle_ms: c.idle_ms,
        })
        .collect();
    // At least one row: the oldest pending id is the group's retention floor.
    let query = PendingQuery::oldest(opts.oldest_pending.max(1));
    let rows = pending::rows(con, stream, &g.name, query).await?;
    let oldest = rows.first().map(|p| p.id.clone());
    let oldest_pending = rows
        .into_iter()
        .take(opts.oldest_pending)
        .map(|p| PendingStatus {
            id: p.id,
            consumer: p.consumer,
            idle_ms: p.idle_ms,
            deliveries: u64::from(p.deliveries),
        })
        .collect();
    let status = GroupStatus {
        name: g.name.clone(),
        last_delivered_id: g.last_delivered_id.clone(),
        lag,
        lag_exact,
        pending: g.pending,
        consumers,
        consumers_total: g.consumers,
        oldest_pending,
    };
    Ok((status, oldest))
}

async fn dlq_status(
    con: &mut MultiplexedConnection,
    opts: &StatusOptions,
) -> Result<DlqStatus, OpsError> {
    let key = opts.dlq.clone();
    let length = match inspect::key_type(con, &key).await?.as_str() {
        "stream" => inspect::len(con, &key).await?,
        _ => 0,
    };
    let (mut kinds, mut scanned, mut newest) = (BTreeMap::new(), 0, Vec::new());
    if length > 0 {
        (kinds, scanned) =
            dlq_scan::count_kinds(con, &key, &named_kinds(), opts.dlq_scan as u64).await?;
        let all = ("-", "+");
        let n = opts.newest_dead_letters;
        newest = dlq_scan::headers(con, &key, Order::NewestFirst, all, n, true)
            .await?
            .into_iter()
            .map(NewestDeadLetter::from)
            .collect();
    }
    Ok(DlqStatus {
        key,
        length,
        kinds,
        kinds_estimated: scanned < length,
        scanned,
        newest,
    })
}

async fn retention_status(
    con: &mut MultiplexedConnection,
    stream: &str,
    info: &inspect::StreamInfo,
    groups: &[GroupStatus],
    floor: Option<Floor>,
    opts: &StatusOptions,
) -> Result<RetentionStatus, OpsError> {
    let policy = opts.retention;
    let floor_group = floor.as_ref().map(|f| groups[f.group].name.clone());
    let mut status = RetentionStatus {
        floor: floor.as_ref().map(|f| f.id.clone()),
        floor_group: floor_group.clone(),
        maxlen: policy.and_then(|p| p.maxlen),
        max_age_ms: policy.and_then(|p| p.max_age).map(|d| d.as_millis() as u64),
        held_back: None,
        held_by: None,
    };
    let Some(policy) = policy else {
        return Ok(status);
    };
    let mut held = Some(false);
    if let (Some(floor), Some(first)) = (&floor, &info.first_id) {
        if let Some(maxlen) = policy.maxlen
            && info.length > maxlen
        {
            let limit = maxlen.saturating_add(1).min(opts.count_cap);
            let (kept, exact) = kept_from(con, stream, floor, &groups[floor.group], limit).await?;
            held = match (kept > maxlen, exact) {
                (true, _) => Some(true),
                (false, true) => held,
                (false, false) => None,
            };
        }
        if let Some(age) = policy.max_age {
            let cutoff = now_ms().saturating_sub(age.as_millis() as u64);
            let first_old = id_ms(first).is_some_and(|ms| ms < cutoff);
            let floor_old = id_ms(&floor.id).is_some_and(|ms| ms < cutoff);
            if first_old && floor_old {
                held = Some(true);
            }
        }
    }
    status.held_back = held;
    status.held_by = if held == Some(true) {
        floor_group
    } else {
        None
    };
    Ok(status)
}

/// Entries from the floor on — what retention must keep — counted up to
/// `limit`, and whether that is all of them. The floor group's lag already
/// counts those after its last delivered id, so only the span from the
/// floor to there (its pending entries, usually few) is counted here.
async fn kept_from(
    con: &mut MultiplexedConnection,
    stream: &str,
    floor: &Floor,
    group: &GroupStatus,
    limit: u64,
) -> Result<(u64, bool), OpsError> {
    if !id_lt(&group.last_delivered_id, &floor.id) {
        let span = count::count(con, stream, &floor.id, &group.last_delivered_id, limit).await?;
        return Ok((
            span.count.saturating_add(group.lag),
            span.exact && group.lag_exact,
        ));
    }
    // The floor is the first undelivered entry: all it keeps is the lag.
    Ok((group.lag, group.lag_exact))
}
