//! The host's own verdict on an entry, before any plugin sees it: trimmed,
//! delivered too often, or not representable — a pure function of the
//! entry and the limits, shared by the runtime and `host replay`.

use super::entry::{Entry, EntryLimits, Payload};
use super::outcome::{DeadLetterKind, Outcome};
use super::units::ByteSize;

/// Limits applied before an entry reaches a plugin.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Deliveries after which an entry is dead-lettered without another call.
    pub max_deliveries: u32,
    /// Largest entry handed to a plugin (`--max-entry-size`).
    pub max_entry_size: ByteSize,
    /// Most fields of an entry handed to a plugin (`--max-fields`).
    pub max_fields: usize,
}

impl Admission {
    /// The limits the reader enforces while decoding.
    pub fn entry_limits(&self) -> EntryLimits {
        EntryLimits {
            max_fields: self.max_fields,
            max_bytes: usize::try_from(self.max_entry_size.0).unwrap_or(usize::MAX),
        }
    }
}

impl Admission {
    /// The host's own verdict on an entry, or `None` if a plugin should decide.
    /// `last_failure` is asked only when the delivery limit is exceeded.
    pub fn verdict(
        &self,
        entry: &Entry,
        last_failure: impl FnOnce() -> Option<String>,
    ) -> Option<Outcome> {
        let dead = |kind, reason: String| Some(Outcome::dead_letter(kind, reason));
        match &entry.payload {
            // No payload left: nothing any number of retries could do.
            Payload::Trimmed => dead(
                DeadLetterKind::Trimmed,
                "payload was trimmed from the stream before it could be processed".into(),
            ),
            _ if entry.delivery_count > self.max_deliveries => {
                let tries = entry.delivery_count - 1;
                let times = if tries == 1 { "once" } else { "times" };
                let tries = if tries == 1 {
                    String::new()
                } else {
                    format!("{tries} ")
                };
                let reason = match last_failure() {
                    Some(last) => {
                        format!("delivered {tries}{times} without success; last failure: {last}")
                    }
                    None => format!("delivered {tries}{times} without success"),
                };
                dead(DeadLetterKind::MaxDeliveries, reason)
            }
            Payload::Raw(fields) => {
                let bad = fields
                    .iter()
                    .find(|(k, _)| std::str::from_utf8(k).is_err())
                    .map(|(k, _)| String::from_utf8_lossy(&k[..k.len().min(64)]).into_owned())
                    .unwrap_or_default();
                dead(
                    DeadLetterKind::Invalid,
                    format!("field name {bad:?} is not valid UTF-8"),
                )
            }
            Payload::Withheld { fields, .. } if *fields > self.max_fields => dead(
                DeadLetterKind::Invalid,
                format!(
                    "entry has {fields} fields, over --max-fields {}",
                    self.max_fields
                ),
            ),
            Payload::Withheld { bytes, .. } => dead(
                DeadLetterKind::Invalid,
                format!(
                    "entry is {bytes} bytes (names and values plus 48 per field), over --max-entry-size {}",
                    self.max_entry_size
                ),
            ),
            Payload::Fields(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(payload: Payload, deliveries: u32) -> Entry {
        Entry {
            id: "1-0".into(),
            payload,
            delivery_count: deliveries,
        }
    }

    const ADMIT: Admission = Admission {
        max_deliveries: 3,
        max_entry_size: ByteSize(10),
        max_fields: 2,
    };

    fn kind(o: Option<Outcome>) -> Option<DeadLetterKind> {
        match o {
            Some(Outcome::DeadLetter { kind, .. }) => Some(kind),
            _ => None,
        }
    }

    #[test]
    fn admits_ordinary_entries() {
        let e = entry(Payload::Fields(vec![("a".into(), b"1".to_vec())]), 3);
        assert_eq!(ADMIT.verdict(&e, || None), None);
    }

    #[test]
    fn dead_letters_what_no_plugin_should_see() {
        let big = entry(
            Payload::Withheld {
                fields: 1,
                bytes: 99,
            },
            1,
        );
        match ADMIT.verdict(&big, || None) {
            Some(Outcome::DeadLetter { kind, reason }) => {
                assert_eq!(kind, DeadLetterKind::Invalid);
                assert!(
                    reason.contains("99 bytes") && reason.contains("--max-entry-size 10B"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let wide = entry(
            Payload::Withheld {
                fields: 3,
                bytes: 9,
            },
            1,
        );
        match ADMIT.verdict(&wide, || None) {
            Some(Outcome::DeadLetter { reason, .. }) => {
                assert_eq!(reason, "entry has 3 fields, over --max-fields 2");
            }
            other => panic!("{other:?}"),
        }
        let raw = entry(Payload::Raw(vec![(vec![0xff], vec![])]), 1);
        assert_eq!(
            kind(ADMIT.verdict(&raw, || None)),
            Some(DeadLetterKind::Invalid)
        );
        assert_eq!(
            kind(ADMIT.verdict(&entry(Payload::Trimmed, 1), || None)),
            Some(DeadLetterKind::Trimmed)
        );
        let tired = entry(Payload::Fields(vec![]), 4);
        match ADMIT.verdict(&tired, || None) {
            Some(Outcome::DeadLetter { kind, reason }) => {
                assert_eq!(kind, DeadLetterKind::MaxDeliveries);
                assert_eq!(reason, "delivered 3 times without success");
            }
            other => panic!("{other:?}"),
        }
        match ADMIT.verdict(&tired, || Some("card declined".into())) {
            Some(Outcome::DeadLetter { reason, .. }) => {
                assert_eq!(
                    reason,
                    "delivered 3 times without success; last failure: card declined"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
