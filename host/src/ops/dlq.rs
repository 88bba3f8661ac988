//! Dead letters for operators: records decoded into their metadata and
//! original fields, selected by id range, kind, age, plugin version and
//! reason text; redrive (one atomic step per record, see
//! [`crate::stream::redrive`]) and purge.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::{OpsError, id_ms, now_ms};
use crate::stream::dlq::{FIELD_PREFIX, PACKED_FIELDS};
use crate::stream::inspect::{self, RawEntry};
use crate::stream::redrive::{self, Redriven};

/// Records read per `XRANGE` page while selecting.
const PAGE: usize = 500;

/// One dead-letter record, decoded.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Record id in the DLQ (its time part is when it was dead-lettered).
    pub id: String,
    /// `permanent`, `max-deliveries`, `trimmed` or `invalid`.
    pub kind: String,
    /// Why.
    pub reason: String,
    /// Stream the entry came from.
    pub source_stream: String,
    /// Its id there.
    pub source_id: String,
    /// Group that delivered it.
    pub group: String,
    /// Consumer that held it.
    pub consumer: String,
    /// Deliveries to handlers (`None` when not recorded).
    pub deliveries: Option<u32>,
    /// Plugin name.
    pub plugin: String,
    /// Plugin content hash.
    pub plugin_version: String,
    /// When it was dead-lettered (ms since the epoch).
    pub failed_at_ms: Option<u64>,
    /// Whether the original fields are packed into one value (a wide entry).
    pub packed: bool,
    /// The original fields, in order, byte for byte.
    #[serde(serialize_with = "shown_pairs")]
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DeadLetter {
    /// Decodes a raw DLQ record.
    pub fn decode((id, raw): RawEntry) -> Result<Self, OpsError> {
        let meta = |name: &str| {
            raw.iter()
                .find(|(k, _)| k == name.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let packed = raw.iter().find(|(k, _)| k == PACKED_FIELDS.as_bytes());
        let fields = match packed {
            Some((_, value)) => redrive::unpack(value)?,
            None => raw
                .iter()
                .filter_map(|(k, v)| {
                    Some((k.strip_prefix(FIELD_PREFIX.as_bytes())?.to_vec(), v.clone()))
                })
                .collect(),
        };
        Ok(DeadLetter {
            kind: meta("kind"),
            reason: meta("reason"),
            source_stream: meta("source_stream"),
            source_id: meta("source_id"),
            group: meta("group"),
            consumer: meta("consumer"),
            deliveries: meta("deliveries").parse().ok(),
            plugin: meta("plugin"),
            plugin_version: meta("plugin_version"),
            failed_at_ms: meta("failed_at_ms").parse().ok(),
            packed: packed.is_some(),
            fields,
            id,
        })
    }
}

fn shown_pairs<S: serde::Serializer>(
    pairs: &[(Vec<u8>, Vec<u8>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(pairs.len()))?;
    for (k, v) in pairs {
        seq.serialize_element(&ShownField::new(k, v))?;
    }
    seq.end()
}

/// A field as JSON: text when it is UTF-8, else escaped text plus hex.
#[derive(Debug, Clone, Serialize)]
pub struct ShownField {
    /// Name (escaped if not UTF-8).
    pub name: String,
    /// Value (escaped if not UTF-8).
    pub value: String,
    /// The exact value in hex, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_hex: Option<String>,
}

impl ShownField {
    /// A field shown for people and JSON.
    pub fn new(k: &[u8], v: &[u8]) -> Self {
        let hex = std::str::from_utf8(v)
            .is_err()
            .then(|| v.iter().map(|b| format!("{b:02x}")).collect());
        ShownField {
            name: show_bytes(k),
            value: show_bytes(v),
            value_hex: hex,
        }
    }
}

/// Bytes for a terminal: UTF-8 text as is, control characters, backslashes
/// and bytes that are not UTF-8 escaped (`\n`, `\\`, `\x00`), so every byte
/// is visible and nothing can drive the terminal.
pub fn show_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

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
    /// Text the reason contains (case-insensitive).
    pub reason: Option<String>,
    /// Most records to select.
    pub limit: Option<usize>,
}

impl Filter {
    /// Whether `d` passes every condition.
    pub fn matches(&self, d: &DeadLetter, now_ms: u64) -> bool {
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

/// The records of `dlq` that pass `filter`, oldest first.
pub async fn select(
    con: &mut MultiplexedConnection,
    dlq: &str,
    filter: &Filter,
) -> Result<Vec<DeadLetter>, OpsError> {
    let now = now_ms();
    let end = filter.to.clone().unwrap_or_else(|| "+".into());
    let mut start = filter.from.clone().unwrap_or_else(|| "-".into());
    let limit = filter.limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    loop {
        let page = inspect::range(con, dlq, &start, &end, PAGE).await?;
        let full = page.len() == PAGE;
        let Some(last) = page.last().map(|(id, _)| id.clone()) else {
            return Ok(out);
        };
        for raw in page {
            let d = DeadLetter::decode(raw)?;
            if filter.matches(&d, now) {
                out.push(d);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        if !full {
            return Ok(out);
        }
        start = format!("({last}");
    }
}

/// One record of `dlq` by id.
pub async fn show(
    con: &mut MultiplexedConnection,
    dlq: &str,
    id: &str,
) -> Result<DeadLetter, OpsError> {
    let found = inspect::range(con, dlq, id, id, 1).await?;
    match found.into_iter().next() {
        Some(raw) if raw.0 == id => DeadLetter::decode(raw),
        _ => Err(OpsError::Usage(format!("no record {id} in {dlq:?}"))),
    }
}

/// What a redrive did with one record.
#[derive(Debug, Clone, Serialize)]
pub struct RedriveRow {
    /// Record id in the DLQ.
    pub id: String,
    /// Where it went (or would go).
    pub target: String,
    /// `moved`, `would-move` (dry run), `gone`, `no-payload`, `no-target`
    /// or `wrong-target`.
    pub outcome: &'static str,
    /// Its new id on the target, when moved.
    pub new_id: Option<String>,
}

/// Redrives `records` one atomic step each, onto `to` or each record's
/// source stream; `dry_run` only says where each would go. `progress` sees
/// every row as it is done.
pub async fn redrive(
    con: &mut MultiplexedConnection,
    dlq: &str,
    records: &[DeadLetter],
    to: Option<&str>,
    dry_run: bool,
    progress: &mut (dyn FnMut(&RedriveRow) + Send),
) -> Result<Vec<RedriveRow>, OpsError> {
    let mut rows = Vec::with_capacity(records.len());
    for d in records {
        let target = to.unwrap_or(&d.source_stream).to_owned();
        let (outcome, new_id) = if target.is_empty() {
            ("no-target", None)
        } else if d.fields.is_empty() {
            ("no-payload", None)
        } else if dry_run {
            ("would-move", None)
        } else {
            if crate::fault::injected("redrive-slow") {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            match redrive::redrive(con, dlq, &target, &d.id).await? {
                Redriven::Moved(id) => ("moved", Some(id)),
                Redriven::Gone => ("gone", None),
                Redriven::NoPayload => ("no-payload", None),
                Redriven::WrongTarget(_) => ("wrong-target", None),
            }
        };
        let row = RedriveRow {
            id: d.id.clone(),
            target,
            outcome,
            new_id,
        };
        progress(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// Deletes `ids` from `dlq` (`XDEL dlq id …`, a few hundred per call);
/// returns how many were deleted.
pub async fn purge(
    con: &mut MultiplexedConnection,
    dlq: &str,
    ids: &[String],
) -> Result<u64, OpsError> {
    let mut deleted = 0;
    for chunk in ids.chunks(PAGE) {
        let n: u64 = redis::cmd("XDEL")
            .arg(dlq)
            .arg(chunk)
            .query_async(con)
            .await?;
        deleted += n;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, extra: &[(&str, &[u8])]) -> RawEntry {
        let mut raw: Vec<(Vec<u8>, Vec<u8>)> = [
            ("kind", "permanent"),
            ("reason", "Bad Amount"),
            ("source_stream", "orders"),
            ("deliveries", "2"),
            ("plugin_version", "abc123"),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
        raw.extend(
            extra
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec())),
        );
        (id.to_owned(), raw)
    }

    #[test]
    fn records_decode_inline_and_packed_fields() {
        let d = DeadLetter::decode(record(
            "5-0",
            &[("field:a", b"\x00\xff"), ("field:b", b"x")],
        ))
        .unwrap();
        assert_eq!(
            d.fields,
            vec![
                (b"a".to_vec(), b"\x00\xff".to_vec()),
                (b"b".to_vec(), b"x".to_vec())
            ]
        );
        assert_eq!(d.deliveries, Some(2));
        let packed = b"*4\r\n$1\r\nk\r\n$2\r\n\r\n\r\n$1\r\nz\r\n$0\r\n\r\n";
        let d = DeadLetter::decode(record("6-0", &[("packed_fields", packed)])).unwrap();
        assert!(d.packed);
        assert_eq!(
            d.fields,
            vec![(b"k".to_vec(), b"\r\n".to_vec()), (b"z".to_vec(), vec![])]
        );
    }

    #[test]
    fn filters_combine() {
        let d = DeadLetter::decode(record("1000-0", &[])).unwrap();
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

    #[test]
    fn bytes_show_safely() {
        assert_eq!(show_bytes(b"ok \xe2\x9c\x93"), "ok \u{2713}");
        assert_eq!(show_bytes(b"a\nb\\\x1b[2J\xff"), "a\\nb\\\\\\x1b[2J\\xff");
    }
}
