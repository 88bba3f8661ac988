//! The layout of a dead-letter record: fixed metadata fields, then every
//! original field byte for byte under a `field:` prefix, so nothing collides
//! and `host dlq redrive` can restore the entry exactly.

use std::time::{SystemTime, UNIX_EPOCH};

use super::entry::Entry;
use crate::outcome::DeadLetterKind;

/// Prefix of original fields inside a DLQ record.
pub const FIELD_PREFIX: &str = "field:";

/// Who dead-lettered an entry, for the record.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterSource<'a> {
    /// Source stream key.
    pub stream: &'a str,
    /// Consumer group.
    pub group: &'a str,
    /// Consumer name.
    pub consumer: &'a str,
    /// Plugin name in service.
    pub plugin: &'a str,
    /// Plugin content hash.
    pub plugin_version: &'a str,
}

/// Deliveries to handlers: for `max-deliveries` the claim that found the
/// entry exhausted is not one; `""` when unknown (trimmed before a claim
/// could read the count).
fn deliveries(entry: &Entry, kind: DeadLetterKind) -> String {
    match (kind, entry.delivery_count) {
        (_, 0) => String::new(),
        (DeadLetterKind::MaxDeliveries, n) => (n - 1).to_string(),
        (_, n) => n.to_string(),
    }
}

/// The field/value pairs of the DLQ record for `entry`.
pub fn record(
    entry: &Entry,
    kind: DeadLetterKind,
    reason: &str,
    src: DeadLetterSource<'_>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let meta: [(&str, String); 10] = [
        ("kind", kind.as_str().to_owned()),
        ("reason", reason.to_owned()),
        ("source_stream", src.stream.to_owned()),
        ("source_id", entry.id.clone()),
        ("group", src.group.to_owned()),
        ("consumer", src.consumer.to_owned()),
        ("deliveries", deliveries(entry, kind)),
        ("plugin", src.plugin.to_owned()),
        ("plugin_version", src.plugin_version.to_owned()),
        ("failed_at_ms", now_ms.to_string()),
    ];
    let pairs = entry.payload.raw_pairs();
    let mut out = Vec::with_capacity(meta.len() + pairs.len());
    out.extend(
        meta.into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.into_bytes())),
    );
    for (k, v) in pairs {
        let mut name = Vec::with_capacity(FIELD_PREFIX.len() + k.len());
        name.extend_from_slice(FIELD_PREFIX.as_bytes());
        name.extend_from_slice(k);
        out.push((name, v.to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::entry::Payload;

    #[test]
    fn keeps_metadata_then_prefixed_original_fields_losslessly() {
        let entry = Entry {
            id: "5-1".into(),
            payload: Payload::Raw(vec![
                (b"\xffname".to_vec(), b"\x00v".to_vec()),
                (b"kind".to_vec(), b"x".to_vec()),
            ]),
            delivery_count: 3,
        };
        let src = DeadLetterSource {
            stream: "s",
            group: "g",
            consumer: "c",
            plugin: "p",
            plugin_version: "abc",
        };
        let rec = record(&entry, DeadLetterKind::Invalid, "bad name", src);
        assert_eq!(rec[0], (b"kind".to_vec(), b"invalid".to_vec()));
        assert_eq!(rec[3], (b"source_id".to_vec(), b"5-1".to_vec()));
        assert_eq!(rec[6], (b"deliveries".to_vec(), b"3".to_vec()));
        assert_eq!(rec[10], (b"field:\xffname".to_vec(), b"\x00v".to_vec()));
        assert_eq!(rec[11], (b"field:kind".to_vec(), b"x".to_vec()));
    }
}
