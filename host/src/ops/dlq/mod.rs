//! Dead letters for operators: records decoded into their metadata and
//! original fields — or, when packed fields are malformed, why they cannot
//! be read back, never a failed listing — selected a page at a time
//! ([`Selection`]), redriven and purged a page at a time ([`redrive_page`],
//! [`purge_page`]).

mod moves;
mod select;

use redis::aio::MultiplexedConnection;
use serde::Serialize;

pub use self::moves::{
    RedriveReport, RedriveRow, RedriveTotals, purge_page, redrive_ids, redrive_page,
    redrive_selection,
};
pub use self::select::{Filter, Selection, newest};
use super::{OpsError, RESPONSE_TIMEOUT};
use crate::config::{RedisConfig, RedisEndpoint};
use crate::stream::dlq::{FIELD_PREFIX, PACKED_FIELDS, Pairs, unpack};
use crate::stream::dlq_scan::{self, Order, RecordHeader};
use crate::stream::inspect::{self, RawEntry};
use crate::stream::redrive::Redriver;

/// Who dead-lettered which entry, when and why: a record's metadata.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Meta {
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
}

impl Meta {
    /// The metadata among a record's `pairs` (the first of each name).
    fn of(id: String, pairs: &Pairs) -> Self {
        let meta = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        Meta {
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
            id,
        }
    }
}

/// One dead-letter record, decoded.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Its metadata.
    #[serde(flatten)]
    pub meta: Meta,
    /// Whether the original fields are packed into one value (a wide entry).
    pub packed: bool,
    /// Why the packed original fields cannot be read back (`None`: they can).
    pub undecodable: Option<String>,
    /// The original fields, in order, byte for byte (none when undecodable).
    #[serde(serialize_with = "shown_pairs")]
    pub fields: Pairs,
}

impl DeadLetter {
    /// Decodes a raw DLQ record; malformed packed fields are reported in
    /// [`DeadLetter::undecodable`], not as an error.
    pub fn decode((id, raw): RawEntry) -> Self {
        let packed = raw.iter().find(|(k, _)| k == PACKED_FIELDS.as_bytes());
        let (fields, undecodable) = match packed.map(|(_, v)| unpack(v)) {
            Some(Ok(pairs)) => (pairs, None),
            Some(Err(why)) => (Vec::new(), Some(why.to_string())),
            None => (
                raw.iter()
                    .filter_map(|(k, v)| {
                        Some((k.strip_prefix(FIELD_PREFIX.as_bytes())?.to_vec(), v.clone()))
                    })
                    .collect(),
                None,
            ),
        };
        DeadLetter {
            packed: packed.is_some(),
            undecodable,
            fields,
            meta: Meta::of(id, &raw),
        }
    }
}

/// A record as a selection sees it: its metadata, without the original
/// fields (see [`crate::stream::dlq_scan`]).
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    /// Its metadata (values cut at a few KiB).
    #[serde(flatten)]
    pub meta: Meta,
    /// Whether it carries original fields (a `trimmed` record does not).
    #[serde(skip)]
    pub has_fields: bool,
    /// Whether they are packed.
    pub packed: bool,
    /// Why packed fields cannot be read back, when that was checked.
    pub undecodable: Option<String>,
}

impl From<RecordHeader> for Header {
    fn from(h: RecordHeader) -> Self {
        Header {
            has_fields: h.has_fields(),
            packed: h.packed,
            undecodable: h.undecodable,
            meta: Meta::of(h.id, &h.meta),
        }
    }
}

fn shown_pairs<S: serde::Serializer>(pairs: &Pairs, s: S) -> Result<S::Ok, S::Error> {
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

/// A [`Redriver`] on a connection of its own to `redis`.
pub async fn redriver(redis: &RedisConfig) -> Result<Redriver, OpsError> {
    redriver_at(&redis.endpoint()?).await
}

/// A [`Redriver`] on `endpoint` (on a cluster, the node that holds the
/// DLQ being redriven).
pub async fn redriver_at(endpoint: &RedisEndpoint) -> Result<Redriver, OpsError> {
    Ok(Redriver::open(endpoint, RESPONSE_TIMEOUT).await?)
}

/// Fills in [`Header::undecodable`] of the packed `records`, checking
/// their packed fields inside Redis one record at a time (for what is
/// shown, never for a whole walk).
pub async fn check_packed(
    con: &mut MultiplexedConnection,
    dlq: &str,
    records: &mut [Header],
) -> Result<(), OpsError> {
    for h in records.iter_mut().filter(|h| h.packed) {
        let id = h.meta.id.as_str();
        let checked = dlq_scan::headers(con, dlq, Order::OldestFirst, (id, id), 1, true).await?;
        h.undecodable = checked.into_iter().next().and_then(|c| c.undecodable);
    }
    Ok(())
}

/// Record `id` of `dlq` with its original fields, if it is there
/// (`XRANGE dlq id id COUNT 1`).
pub async fn fetch(
    con: &mut MultiplexedConnection,
    dlq: &str,
    id: &str,
) -> Result<Option<DeadLetter>, OpsError> {
    let found = inspect::range(con, dlq, id, id, 1).await?;
    Ok(found
        .into_iter()
        .next()
        .filter(|(found, _)| found == id)
        .map(DeadLetter::decode))
}

/// One record of `dlq` by id; refused when there is none.
pub async fn show(
    con: &mut MultiplexedConnection,
    dlq: &str,
    id: &str,
) -> Result<DeadLetter, OpsError> {
    fetch(con, dlq, id)
        .await?
        .ok_or_else(|| OpsError::Usage(format!("no record {id} in {dlq:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn record(id: &str, extra: &[(&str, &[u8])]) -> RawEntry {
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
        ));
        assert_eq!(
            d.fields,
            vec![
                (b"a".to_vec(), b"\x00\xff".to_vec()),
                (b"b".to_vec(), b"x".to_vec())
            ]
        );
        assert_eq!(d.meta.deliveries, Some(2));
        assert_eq!(d.undecodable, None);
        let packed = b"*4\r\n$1\r\nk\r\n$2\r\n\r\n\r\n$1\r\nz\r\n$0\r\n\r\n";
        let d = DeadLetter::decode(record("6-0", &[("packed_fields", packed)]));
        assert!(d.packed);
        assert_eq!(
            d.fields,
            vec![(b"k".to_vec(), b"\r\n".to_vec()), (b"z".to_vec(), vec![])]
        );
    }

    #[test]
    fn a_malformed_packed_record_decodes_as_undecodable_with_its_metadata() {
        let cut = b"*4\r\n$1\r\nk\r\n$5\r\nab";
        let d = DeadLetter::decode(record("7-0", &[("packed_fields", cut)]));
        assert_eq!(d.undecodable.as_deref(), Some("value 2 is cut short"));
        assert!(d.fields.is_empty() && d.packed);
        assert_eq!(
            (d.meta.kind.as_str(), d.meta.reason.as_str()),
            ("permanent", "Bad Amount")
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["undecodable"], "value 2 is cut short");
        assert_eq!(json["id"], "7-0");
    }

    #[test]
    fn bytes_show_safely() {
        assert_eq!(show_bytes(b"ok \xe2\x9c\x93"), "ok \u{2713}");
        assert_eq!(show_bytes(b"a\nb\\\x1b[2J\xff"), "a\\nb\\\\\\x1b[2J\\xff");
    }
}
