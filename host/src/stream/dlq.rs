//! The layout of a dead-letter record: fixed metadata fields, then every
//! original field byte for byte under a `field:` prefix, so nothing collides
//! and the entry can be restored exactly (what a redrive needs). An entry too wide
//! for one scripted `XADD` (more than [`super::scripts::MAX_INLINE_FIELDS`]
//! fields) keeps its fields packed instead: one `packed_fields` value holding
//! a RESP2 array of the names and values, in order.
//!
//! The metadata is built here; the scripts append it with the fields (see
//! [`super::scripts::DEAD_LETTER`] and [`super::scripts::CLAIM`]).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::outcome::DeadLetterKind;

/// Prefix of original fields inside a DLQ record.
pub const FIELD_PREFIX: &str = "field:";

/// Name of the field that holds the original fields of a wide entry, packed
/// as a RESP2 array of bulk strings (name, value, name, value, …).
pub const PACKED_FIELDS: &str = "packed_fields";

/// Reason given in every `trimmed` record.
pub const TRIMMED_REASON: &str = "payload was trimmed from the stream before it could be processed";

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
/// entry exhausted is not one; `""` when unknown.
pub fn deliveries(kind: DeadLetterKind, delivery_count: u32) -> String {
    match (kind, delivery_count) {
        (_, 0) => String::new(),
        (DeadLetterKind::MaxDeliveries, n) => (n - 1).to_string(),
        (_, n) => n.to_string(),
    }
}

/// The metadata pairs of a record, in the order they are written. An empty
/// `source_id` or `deliveries` is filled in by the script that writes it
/// (the claim script records trimmed entries it finds itself).
pub fn metadata(
    kind: DeadLetterKind,
    reason: &str,
    source_id: &str,
    deliveries: String,
    src: DeadLetterSource<'_>,
) -> [(&'static str, String); 10] {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    [
        ("kind", kind.as_str().to_owned()),
        ("reason", reason.to_owned()),
        ("source_stream", src.stream.to_owned()),
        ("source_id", source_id.to_owned()),
        ("group", src.group.to_owned()),
        ("consumer", src.consumer.to_owned()),
        ("deliveries", deliveries),
        ("plugin", src.plugin.to_owned()),
        ("plugin_version", src.plugin_version.to_owned()),
        ("failed_at_ms", now_ms.to_string()),
    ]
}

/// The metadata of the `trimmed` records a claim writes for the entries it
/// finds without payload (their id and delivery count filled in there).
pub fn trimmed_template(src: DeadLetterSource<'_>) -> [(&'static str, String); 10] {
    metadata(
        DeadLetterKind::Trimmed,
        TRIMMED_REASON,
        "",
        String::new(),
        src,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_comes_in_a_fixed_order() {
        let src = DeadLetterSource {
            stream: "s",
            group: "g",
            consumer: "c",
            plugin: "p",
            plugin_version: "abc",
        };
        let meta = metadata(DeadLetterKind::Invalid, "bad name", "5-1", "3".into(), src);
        let names: Vec<&str> = meta.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "kind",
                "reason",
                "source_stream",
                "source_id",
                "group",
                "consumer",
                "deliveries",
                "plugin",
                "plugin_version",
                "failed_at_ms"
            ]
        );
        assert_eq!(meta[0].1, "invalid");
        assert_eq!(meta[3].1, "5-1");
        let trimmed = trimmed_template(src);
        assert_eq!((trimmed[3].1.as_str(), trimmed[6].1.as_str()), ("", ""));
        assert_eq!(deliveries(DeadLetterKind::MaxDeliveries, 4), "3");
        assert_eq!(deliveries(DeadLetterKind::Permanent, 0), "");
    }
}
