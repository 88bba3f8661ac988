//! Which dead letters a command works on: a [`Filter`], and a
//! [`Selection`] that walks the DLQ a page of headers at a time, so a
//! command holds one page however many records it goes through.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{DeadLetter, Header, Meta};
use crate::ops::OpsError;
use crate::stream::dlq_scan::{self, HEADER_PAGE, Order};
use crate::vocab::ids::id_parts;
use crate::vocab::ids::{id_ms, now_ms};

/// Which records a command works on; every condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// First record id (or `-`).
    pub from: Option<String>,
    /// Last record id (or `+`).
    pub to: Option<String>,
    /// Kinds to keep (any if empty).
    pub kinds: Vec<String>,
    /// Only records dead-lettered at least this long ago.
    pub older_than: Option<Duration>,
    /// Only records dead-lettered at most this long ago.
    pub newer_than: Option<Duration>,
    /// Plugin version (content hash) prefix.
    pub plugin_version: Option<String>,
    /// Text the reason contains (case-insensitive; in its first 16 KiB).
    pub reason: Option<String>,
    /// Most records to select.
    pub limit: Option<usize>,
}

impl Filter {
    /// Whether it has no condition at all.
    pub fn selects_all(&self) -> bool {
        let Filter {
            from,
            to,
            kinds,
            older_than,
            newer_than,
            plugin_version,
            reason,
            limit,
        } = self;
        from.is_none()
            && to.is_none()
            && kinds.is_empty()
            && older_than.is_none()
            && newer_than.is_none()
            && plugin_version.is_none()
            && reason.is_none()
            && limit.is_none()
    }

    /// Whether `d` passes every condition.
    pub fn matches(&self, d: &Meta, now_ms: u64) -> bool {
        let age = id_ms(&d.id).map(|ms| now_ms.saturating_sub(ms));
        let at_least = |min: Duration| age.is_some_and(|a| a >= min.as_millis() as u64);
        let at_most = |max: Duration| age.is_some_and(|a| a <= max.as_millis() as u64);
        (self.kinds.is_empty() || self.kinds.contains(&d.kind))
            && self.older_than.is_none_or(at_least)
            && self.newer_than.is_none_or(at_most)
            && self
                .plugin_version
                .as_ref()
                .is_none_or(|v| d.plugin_version.starts_with(v.as_str()))
            && self
                .reason
                .as_ref()
                .is_none_or(|r| d.reason.to_lowercase().contains(&r.to_lowercase()))
    }
}

/// The records of a DLQ that pass a filter, oldest first, a page at a
/// time. It ends at the newest record there when it started: records
/// dead-lettered meanwhile (a redriven entry failing again) are left for
/// the next command instead of being chased.
#[derive(Debug, Clone)]
pub struct Selection {
    dlq: String,
    filter: Filter,
    /// Where the next page starts (`-`, an id, or `(id`).
    next: String,
    /// The newest record when the walk began (`None`: the DLQ was empty).
    end: Option<String>,
    selected: usize,
    now_ms: u64,
    done: bool,
}

impl Selection {
    /// A walk over `dlq`'s records that pass `filter`. Packed fields are
    /// not checked here (see [`super::check_packed`]): a walk costs Redis
    /// the same whatever the records hold.
    pub async fn start(
        con: &mut MultiplexedConnection,
        dlq: &str,
        filter: Filter,
    ) -> Result<Self, OpsError> {
        let newest = dlq_scan::headers(con, dlq, Order::NewestFirst, ("-", "+"), 1, false).await?;
        let end = newest.into_iter().next().map(|h| h.id);
        Ok(Self {
            dlq: dlq.to_owned(),
            next: filter.from.clone().unwrap_or_else(|| "-".into()),
            done: end.is_none() || filter.limit == Some(0),
            filter,
            end,
            selected: 0,
            now_ms: now_ms(),
        })
    }

    /// The same walk again from its beginning, ending where this one ends.
    pub fn restart(&self) -> Self {
        Self {
            next: self.filter.from.clone().unwrap_or_else(|| "-".into()),
            selected: 0,
            done: self.end.is_none() || self.filter.limit == Some(0),
            ..self.clone()
        }
    }

    /// The next records that pass (at most a page); `None` at the end.
    pub async fn next_page(
        &mut self,
        con: &mut MultiplexedConnection,
    ) -> Result<Option<Vec<Header>>, OpsError> {
        let limit = self.filter.limit.unwrap_or(usize::MAX);
        let end = self.end.clone().unwrap_or_default();
        let high = self.filter.to.clone().unwrap_or_else(|| "+".into());
        while !self.done {
            let page = dlq_scan::headers(
                con,
                &self.dlq,
                Order::OldestFirst,
                (&self.next, &high),
                HEADER_PAGE,
                false,
            )
            .await?;
            self.done = page.len() < HEADER_PAGE;
            if let Some(last) = page.last() {
                self.next = format!("({}", last.id);
            }
            let mut out = Vec::new();
            for h in page {
                if id_parts(&h.id) > id_parts(&end) {
                    self.done = true;
                    break;
                }
                let h = Header::from(h);
                if self.filter.matches(&h.meta, self.now_ms) {
                    out.push(h);
                    self.selected += 1;
                    if self.selected >= limit {
                        self.done = true;
                        break;
                    }
                }
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }
}

/// The newest `limit` records of `dlq`, newest first, read whole — of
/// kind `kind` only, when given, among the newest `scan_cap` records.
/// They are chosen by their headers, a page at a time, so only the records
/// returned are read whole.
pub async fn newest(
    con: &mut MultiplexedConnection,
    dlq: &str,
    limit: usize,
    kind: Option<&str>,
    scan_cap: usize,
) -> Result<Vec<DeadLetter>, OpsError> {
    let mut records = Vec::new();
    let mut high = "+".to_owned();
    for _ in 0..scan_cap.div_ceil(HEADER_PAGE) {
        let range = ("-", high.as_str());
        let page =
            dlq_scan::headers(con, dlq, Order::NewestFirst, range, HEADER_PAGE, false).await?;
        let last = page.len() < HEADER_PAGE;
        high = page
            .last()
            .map(|h| format!("({}", h.id))
            .unwrap_or_default();
        for h in page.into_iter().map(Header::from) {
            if records.len() < limit && kind.is_none_or(|k| k == h.meta.kind) {
                records.extend(super::fetch(con, dlq, &h.meta.id).await?);
            }
        }
        if last || records.len() >= limit {
            break;
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::super::DeadLetter;
    use super::super::tests::record;
    use super::*;

    #[test]
    fn filters_combine() {
        let d = DeadLetter::decode(record("1000-0", &[])).meta;
        let now = 1000 + 60_000;
        let pass = |f: Filter| f.matches(&d, now);
        assert!(pass(Filter::default()));
        assert!(pass(Filter {
            kinds: vec!["permanent".into()],
            reason: Some("bad amount".into()),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            kinds: vec!["trimmed".into()],
            ..Filter::default()
        }));
        assert!(pass(Filter {
            older_than: Some(Duration::from_secs(30)),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            newer_than: Some(Duration::from_secs(30)),
            ..Filter::default()
        }));
        assert!(pass(Filter {
            plugin_version: Some("abc".into()),
            ..Filter::default()
        }));
        assert!(!pass(Filter {
            plugin_version: Some("def".into()),
            ..Filter::default()
        }));
    }
}
