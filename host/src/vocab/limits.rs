//! Every limit the host enforces, as one value: built from the
//! configuration, printed at start, passed to where each limit is enforced,
//! and listed in the README's Limits table together with the memory bound
//! they add up to.

use std::time::Duration;

use serde::Serialize;

use crate::vocab::units::ByteSize;

/// What one field costs beyond its name and value bytes: the host keeps
/// each pair as a `(String, Vec<u8>)` (48 bytes), so a million empty fields
/// are not free.
pub const FIELD_OVERHEAD: usize = 48;

/// What one emitted entry costs beyond its stream name and fields.
pub const EMIT_OVERHEAD: usize = 64;

/// Most fields one entry may have for the host to append it in a script
/// (Redis's Lua passes about 8,000 arguments to one command at most): the
/// ceiling of `--max-fields`, which emitted entries obey too.
pub const MAX_FIELDS_CEILING: usize = 3_900;

/// Ceiling of `--max-emit-bytes`: a call's emits reach Redis packed into one
/// argument, and Redis refuses one over `proto-max-bulk-len` (512 MB by
/// default); half of it leaves room for the packing and the batch.
pub const MAX_EMIT_BYTES_CEILING: u64 = 256 << 20;

/// Failure reasons remembered per entry in flight (for `max-deliveries`
/// records): entries released for a retry are no longer in flight but still
/// worth a reason when they come back.
pub const REMEMBERED_FAILURES_PER_SLOT: usize = 4;

/// Memory every host needs besides the limits below: the runtime, its
/// connections and buffers (compiled plugin code comes on top).
pub const BASE_MEMORY: u64 = 64 << 20;

/// The cost of one field as the limits count it.
pub fn field_cost(name: usize, value: usize) -> usize {
    name + value + FIELD_OVERHEAD
}

/// The limits of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Per call: deadline, covering time blocked in host calls too.
    #[serde(serialize_with = "humantime_serde_compat::serialize")]
    pub handler_timeout: Duration,
    /// Per instance: all linear memories and tables together.
    pub max_memory: ByteSize,
    /// Per call: entries a handler may emit.
    pub max_emits: usize,
    /// Per call: bytes a handler may emit (stream names, names and values,
    /// plus [`FIELD_OVERHEAD`] per field and [`EMIT_OVERHEAD`] per entry).
    pub max_emit_bytes: ByteSize,
    /// Per message: longest log message, stdout/stderr line or failure
    /// reason a plugin can produce; longer ones are cut.
    pub max_message_size: ByteSize,
    /// Per pipeline: plugin log lines (log calls and stdout/stderr lines)
    /// per second; more are dropped and counted.
    pub max_log_rate: u32,
    /// Per entry: bytes (names and values plus [`FIELD_OVERHEAD`] per field).
    pub max_entry_size: ByteSize,
    /// Per entry: fields, of entries read and of entries emitted.
    pub max_fields: usize,
    /// Per entry: deliveries before a failing entry is dead-lettered.
    pub max_deliveries: u32,
    /// Per process: worker threads, one plugin instance each.
    pub concurrency: usize,
    /// Per process: entries read and not yet settled, those waiting out a
    /// retry backoff included.
    pub max_in_flight: usize,
    /// The dead-letter stream's approximate length cap, if any.
    pub dlq_maxlen: Option<u64>,
}

impl Default for Limits {
    /// The command line's defaults (a test in `cli` keeps them in step).
    fn default() -> Self {
        Self {
            handler_timeout: Duration::from_secs(5),
            max_memory: ByteSize(64 << 20),
            max_emits: 1_000,
            max_emit_bytes: ByteSize(1 << 20),
            max_message_size: ByteSize(4 << 10),
            max_log_rate: 100,
            max_entry_size: ByteSize(1 << 20),
            max_fields: 1_000,
            max_deliveries: 5,
            concurrency: 2,
            max_in_flight: 1_000,
            dlq_maxlen: None,
        }
    }
}

impl Limits {
    /// Failure reasons remembered at most.
    pub fn remembered_failures(&self) -> usize {
        self.max_in_flight
            .saturating_mul(REMEMBERED_FAILURES_PER_SLOT)
            .max(1_000)
    }

    /// The most memory these limits let the host use, compiled plugin code
    /// aside: every worker's instance at its cap plus the host's copy of the
    /// arguments of a host call (at most three times the guest memory they
    /// come from) and the emits of its call; every entry in flight at its
    /// size cap with a full emit budget; and the remembered failure reasons.
    pub fn memory_bound(&self) -> u64 {
        let per_worker = 4 * self.max_memory.0 + self.max_emit_bytes.0;
        let per_entry = self.max_entry_size.0 + self.max_emit_bytes.0;
        let reasons = self.remembered_failures() as u64 * (self.max_message_size.0 + 64);
        BASE_MEMORY
            + self.concurrency as u64 * per_worker
            + self.max_in_flight as u64 * per_entry
            + reasons
    }
}

/// Durations as `5s` in JSON, like on the command line.
mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_bound_adds_up_workers_entries_and_reasons() {
        let l = Limits::default();
        let mib = 1u64 << 20;
        let expected =
            64 * mib + 2 * (4 * 64 * mib + mib) + 1_000 * (2 * mib) + 4_000 * ((4 << 10) + 64);
        assert_eq!(l.memory_bound(), expected);
        assert_eq!(field_cost(3, 5), 56);
    }
}
