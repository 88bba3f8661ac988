//! What happens to an entry after its turn: the single place where a handler's
//! answer (or the host's own verdict) becomes data for the committer.

use std::fmt;

use crate::vocab::msgpack::PackedFields;

/// The decision for one entry; only the committer acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: XACK, atomically with the entries the handler emitted.
    Ack {
        /// Entries to append with the ack.
        emits: Vec<Emit>,
    },
    /// Transient failure: leave the entry pending so it is retried.
    Retry {
        /// Why, for logs and the eventual DLQ record.
        reason: String,
    },
    /// Move to the dead-letter stream (append + XACK in one atomic step).
    DeadLetter {
        /// Which rule sent it there.
        kind: DeadLetterKind,
        /// Human-readable cause.
        reason: String,
    },
}

/// An entry a handler asked to append to some stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    /// Target stream key.
    pub stream: String,
    /// Field/value pairs, in order, packed for the commit script. Names
    /// are UTF-8: they were checked when the guest's strings were read.
    pub fields: PackedFields,
}

/// Why an entry was dead-lettered; written to the DLQ record's `kind` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterKind {
    /// The handler answered `permanent`.
    Permanent,
    /// Delivered `--max-deliveries` times without success.
    MaxDeliveries,
    /// The payload was trimmed from the stream before it could be processed.
    Trimmed,
    /// The host cannot hand the entry over (non-UTF-8 field name, too large).
    Invalid,
}

impl DeadLetterKind {
    /// The name used in DLQ records and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::Permanent => "permanent",
            DeadLetterKind::MaxDeliveries => "max-deliveries",
            DeadLetterKind::Trimmed => "trimmed",
            DeadLetterKind::Invalid => "invalid",
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Outcome {
    /// A dead-letter outcome.
    pub fn dead_letter(kind: DeadLetterKind, reason: impl Into<String>) -> Self {
        Outcome::DeadLetter {
            kind,
            reason: reason.into(),
        }
    }
}
