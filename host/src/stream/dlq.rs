//! The layout of a dead-letter record: fixed metadata fields, then every
//! original field byte for byte under a `field:` prefix, so nothing collides
//! and the entry can be restored exactly (what a redrive needs). An entry too wide
//! for one scripted `XADD` (more than [`super::scripts::MAX_INLINE_FIELDS`]
//! fields) keeps its fields packed instead: one `packed_fields` value holding
//! a RESP2 array of the names and values, in order, read back by [`unpack`].
//!
//! The metadata is built here; the scripts append it with the fields (see
//! [`super::scripts::DEAD_LETTER`] and [`super::scripts::CLAIM`]).

use crate::vocab::ids::now_ms;
use crate::vocab::outcome::DeadLetterKind;

/// Prefix of original fields inside a DLQ record.
pub const FIELD_PREFIX: &str = "field:";

/// Name of the field that holds the original fields of a wide entry, packed
/// as a RESP2 array of bulk strings (name, value, name, value, …).
pub const PACKED_FIELDS: &str = "packed_fields";

/// The metadata fields of a record, in the order they are written.
pub const META_FIELDS: [&str; 10] = [
    "kind",
    "reason",
    "source_stream",
    "source_id",
    "group",
    "consumer",
    "deliveries",
    "plugin",
    "plugin_version",
    "failed_at_ms",
];

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
    let now_ms = now_ms();
    let values = [
        kind.as_str().to_owned(),
        reason.to_owned(),
        src.stream.to_owned(),
        source_id.to_owned(),
        src.group.to_owned(),
        src.consumer.to_owned(),
        deliveries,
        src.plugin.to_owned(),
        src.plugin_version.to_owned(),
        now_ms.to_string(),
    ];
    let mut values = values.into_iter();
    META_FIELDS.map(|name| (name, values.next().unwrap_or_default()))
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

/// Name/value pairs, byte for byte, in order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a `packed_fields` value cannot be read back as name/value pairs.
/// The same reasons, worded the same, come from the scripts that check
/// packed values inside Redis ([`super::dlq_scan::DLQ_HEADERS`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    /// It does not open with `*<count>\r\n` (a count of at most 18 digits).
    #[error("no RESP array header")]
    NoHeader,
    /// Names and values come in pairs.
    #[error("an odd number of values ({0})")]
    OddCount(u64),
    /// Value `n` (from 1) does not open with `$<length>\r\n`.
    #[error("value {0} has no bulk-string header")]
    NoBulkHeader(u64),
    /// Value `n` (from 1) ends before its length, or without `\r\n`.
    #[error("value {0} is cut short")]
    CutShort(u64),
    /// Bytes follow the last value.
    #[error("{0} bytes after the last value")]
    Trailing(usize),
}

/// The name/value pairs of a `packed_fields` value. Strict: anything but a
/// flat array of bulk strings is refused with the reason, and nothing is
/// allocated for what the value only claims to hold.
pub fn unpack(packed: &[u8]) -> Result<Pairs, Undecodable> {
    let (count, mut rest) = header(packed, b'*').ok_or(Undecodable::NoHeader)?;
    if count % 2 == 1 {
        return Err(Undecodable::OddCount(count));
    }
    // The smallest value takes 6 bytes (`$0\r\n\r\n`).
    let room = rest.len() / 12;
    let mut pairs = Vec::with_capacity(room.min((count / 2) as usize));
    let mut name = None;
    for n in 1..=count {
        let (len, body) = header(rest, b'$').ok_or(Undecodable::NoBulkHeader(n))?;
        let len = usize::try_from(len).map_err(|_| Undecodable::CutShort(n))?;
        if body.len() < len.saturating_add(2) || &body[len..len + 2] != b"\r\n" {
            return Err(Undecodable::CutShort(n));
        }
        let value = body[..len].to_vec();
        rest = &body[len + 2..];
        match name.take() {
            None => name = Some(value),
            Some(k) => pairs.push((k, value)),
        }
    }
    if !rest.is_empty() {
        return Err(Undecodable::Trailing(rest.len()));
    }
    Ok(pairs)
}

/// `<marker><digits>\r\n` at the start of `bytes`: the number and what
/// follows. More than 18 digits is no header (the scripts say the same).
fn header(bytes: &[u8], marker: u8) -> Option<(u64, &[u8])> {
    let rest = bytes.strip_prefix(&[marker])?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 18 {
        return None;
    }
    let after = rest[digits..].strip_prefix(b"\r\n")?;
    let n = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((n, after))
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

    #[test]
    fn packed_values_decode_strictly() {
        let good = b"*4\r\n$1\r\nk\r\n$2\r\n\r\n\r\n$1\r\nz\r\n$0\r\n\r\n";
        assert_eq!(
            unpack(good).unwrap(),
            vec![(b"k".to_vec(), b"\r\n".to_vec()), (b"z".to_vec(), vec![])]
        );
        assert_eq!(unpack(b"*0\r\n").unwrap(), vec![]);
        let refused: [(&[u8], Undecodable); 8] = [
            (b"", Undecodable::NoHeader),
            (b"$3\r\nabc\r\n", Undecodable::NoHeader),
            (b"*1234567890123456789\r\n", Undecodable::NoHeader),
            (b"*3\r\n", Undecodable::OddCount(3)),
            (b"*2\r\n$1\r\nk\r\n:1\r\n", Undecodable::NoBulkHeader(2)),
            (b"*4\r\n$1\r\nk\r\n$5\r\nab", Undecodable::CutShort(2)),
            (b"*2\r\n$1\r\nkX\n$0\r\n\r\n", Undecodable::CutShort(1)),
            (b"*2\r\n$1\r\nk\r\n$0\r\n\r\nxy", Undecodable::Trailing(2)),
        ];
        for (bytes, why) in refused {
            assert_eq!(
                unpack(bytes),
                Err(why),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        // A huge claimed count allocates nothing before it is found out.
        assert_eq!(
            unpack(b"*999999999999999998\r\n$0\r\n\r\n"),
            Err(Undecodable::NoBulkHeader(2))
        );
    }
}
