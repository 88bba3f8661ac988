//! What redrive and purge do with a page of selected dead letters: each
//! record moved in one atomic step by a [`Redriver`] (its own connection,
//! so concurrent redrives from any face move each record exactly once), or
//! deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::{Header, Selection};
use crate::ops::OpsError;
use crate::stream::dlq_scan::{self, Order};
use crate::stream::entries;
use crate::stream::redrive::{Redriven, Redriver};

/// What a redrive did with one record.
#[derive(Debug, Clone, Serialize)]
pub struct RedriveRow {
    /// Record id in the DLQ.
    pub id: String,
    /// Where it went (or would go).
    pub target: String,
    /// `moved`, `would-move` (dry run), `gone`, `no-payload`, `no-target`,
    /// `wrong-target` or `undecodable`; every outcome but `moved` and
    /// `gone` leaves the record in the DLQ.
    pub outcome: &'static str,
    /// Its new id on the target, when moved.
    pub new_id: Option<String>,
    /// Why the record cannot move, for `wrong-target` (the target's type)
    /// and `undecodable` (what is wrong with its packed fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// How many rows of each outcome a redrive had.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedriveTotals {
    /// Rows, by outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// All rows.
    pub records: u64,
}

impl RedriveTotals {
    /// Counts `rows` in.
    pub fn add(&mut self, rows: &[RedriveRow]) {
        for r in rows {
            *self.outcomes.entry(r.outcome).or_default() += 1;
            self.records += 1;
        }
    }

    /// Rows of `outcome`.
    pub fn of(&self, outcome: &str) -> u64 {
        self.outcomes.get(outcome).copied().unwrap_or_default()
    }
}

/// Redrives the selected `records` of `dlq` (a page), one atomic step
/// each, onto `to` or each record's source stream. Without a `mover` it is
/// a dry run: it only says where each would go.
pub async fn redrive_page(
    mover: Option<&mut Redriver>,
    dlq: &str,
    records: &[Header],
    to: Option<&str>,
) -> Result<Vec<RedriveRow>, OpsError> {
    let mut rows = Vec::with_capacity(records.len());
    let mut mover = mover;
    for h in records {
        let target = to.unwrap_or(&h.meta.source_stream).to_owned();
        let refused = if target.is_empty() {
            Some(("no-target", None))
        } else if !h.has_fields {
            Some(("no-payload", None))
        } else {
            h.undecodable.clone().map(|why| ("undecodable", Some(why)))
        };
        let (outcome, new_id, detail) = match (refused, mover.as_deref_mut()) {
            (Some((outcome, detail)), _) => (outcome, None, detail),
            (None, None) => ("would-move", None, None),
            (None, Some(mover)) => {
                if crate::fault::injected("redrive-slow") {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                match mover.redrive(dlq, &target, &h.meta.id).await? {
                    Redriven::Moved(id) => ("moved", Some(id), None),
                    Redriven::Gone => ("gone", None, None),
                    Redriven::NoPayload => ("no-payload", None, None),
                    Redriven::WrongTarget(kind) => ("wrong-target", None, Some(kind)),
                    Redriven::Undecodable(why) => ("undecodable", None, Some(why)),
                }
            }
        };
        rows.push(RedriveRow {
            id: h.meta.id.clone(),
            target,
            outcome,
            new_id,
            detail,
        });
    }
    Ok(rows)
}

/// What a redrive of many records answers: the first rows, up to a cap,
/// and the totals of all of them (so an answer stays small however many
/// records moved).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedriveReport {
    /// The first rows.
    pub rows: Vec<RedriveRow>,
    /// Every row, counted.
    pub totals: RedriveTotals,
    /// Whether rows were left out of `rows`.
    pub rows_cut: bool,
}

impl RedriveReport {
    fn add(&mut self, page: Vec<RedriveRow>, rows_cap: usize) {
        self.totals.add(&page);
        let room = rows_cap.saturating_sub(self.rows.len());
        self.rows_cut |= page.len() > room;
        self.rows.extend(page.into_iter().take(room));
    }
}

/// Redrives the records `ids` of `dlq` onto their source streams, after
/// checking that every one is there (nothing moves otherwise); lists at
/// most `rows_cap` rows.
pub async fn redrive_ids(
    con: &mut MultiplexedConnection,
    mover: &mut Redriver,
    dlq: &str,
    ids: &[String],
    rows_cap: usize,
) -> Result<RedriveReport, OpsError> {
    let mut page = Vec::with_capacity(ids.len());
    for id in ids {
        let range = (id.as_str(), id.as_str());
        let found = dlq_scan::headers(con, dlq, Order::OldestFirst, range, 1, false).await?;
        match found.into_iter().next() {
            Some(h) if h.id == *id => page.push(Header::from(h)),
            _ => return Err(OpsError::Usage(format!("no record {id} in {dlq:?}"))),
        }
    }
    let mut report = RedriveReport::default();
    report.add(redrive_page(Some(mover), dlq, &page, None).await?, rows_cap);
    Ok(report)
}

/// Redrives every record of `selection` onto its source stream, a page at
/// a time; lists at most `rows_cap` rows.
pub async fn redrive_selection(
    con: &mut MultiplexedConnection,
    mover: &mut Redriver,
    dlq: &str,
    mut selection: Selection,
    rows_cap: usize,
) -> Result<RedriveReport, OpsError> {
    let mut report = RedriveReport::default();
    while let Some(page) = selection.next_page(con).await? {
        report.add(redrive_page(Some(mover), dlq, &page, None).await?, rows_cap);
    }
    Ok(report)
}

/// Deletes the selected `records` (a page) from `dlq`
/// (`XDEL dlq id …`); returns how many were deleted.
pub async fn purge_page(
    con: &mut MultiplexedConnection,
    dlq: &str,
    records: &[Header],
) -> Result<u64, OpsError> {
    if records.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = records.iter().map(|h| h.meta.id.as_str()).collect();
    Ok(entries::delete(con, dlq, &ids).await?)
}
