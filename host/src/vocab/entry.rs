//! Stream entries as the host sees them: an id, a delivery count and a
//! payload — the fields, or why the host holds none to hand over.

/// One stream entry read through the consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Entry id `<ms>-<seq>`.
    pub id: String,
    /// The entry's fields, or why there are none to hand over.
    pub payload: Payload,
    /// How many times Redis has delivered this entry, this delivery included.
    pub delivery_count: u32,
}

/// The field/value pairs of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Every field name is UTF-8: the entry can be handed to a plugin.
    Fields(Vec<(String, Vec<u8>)>),
    /// At least one field name is not UTF-8; kept byte for byte for the DLQ.
    Raw(Vec<(Vec<u8>, Vec<u8>)>),
    /// Over the entry limits: the host did not keep the fields (a DLQ record
    /// copies them inside Redis). How many there were and what they cost.
    Withheld {
        /// Number of fields.
        fields: usize,
        /// Their cost ([`super::limits::field_cost`] summed).
        bytes: usize,
    },
    /// The entry is still pending but its payload was trimmed from the stream.
    Trimmed,
}

pub use super::limits::FIELD_OVERHEAD;

/// The entry limits the reader enforces while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLimits {
    /// Most fields kept.
    pub max_fields: usize,
    /// Most bytes kept, counted with [`super::limits::field_cost`].
    pub max_bytes: usize,
}

impl Payload {
    /// Number of fields.
    pub fn len(&self) -> usize {
        match self {
            Payload::Fields(f) => f.len(),
            Payload::Raw(f) => f.len(),
            Payload::Withheld { fields, .. } => *fields,
            Payload::Trimmed => 0,
        }
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Names and values plus [`FIELD_OVERHEAD`] per field: what the limits count.
    pub fn cost(&self) -> usize {
        let cost = |k: usize, v: usize| super::limits::field_cost(k, v);
        match self {
            Payload::Fields(f) => f.iter().map(|(k, v)| cost(k.len(), v.len())).sum(),
            Payload::Raw(f) => f.iter().map(|(k, v)| cost(k.len(), v.len())).sum(),
            Payload::Withheld { bytes, .. } => *bytes,
            Payload::Trimmed => 0,
        }
    }

    /// Field pairs as raw bytes, in stream order (empty when not kept).
    pub fn raw_pairs(&self) -> Vec<(&[u8], &[u8])> {
        match self {
            Payload::Fields(f) => f
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_slice()))
                .collect(),
            Payload::Raw(f) => f
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect(),
            Payload::Withheld { .. } | Payload::Trimmed => Vec::new(),
        }
    }
}

impl Entry {
    /// The entry `id` from an `XRANGE id id` reply (`found`, at most one
    /// entry), or `id` as [`Payload::Trimmed`] when its entry is gone.
    /// Delivery count 0, for the caller to fill in.
    pub fn ranged(id: &str, mut found: Vec<Entry>) -> Entry {
        match found.pop() {
            Some(mut e) if e.id == id => {
                e.delivery_count = 0;
                e
            }
            _ => Entry {
                id: id.to_owned(),
                payload: Payload::Trimmed,
                delivery_count: 0,
            },
        }
    }
}
