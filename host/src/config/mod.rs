//! The validated configuration of `host run`: plain values (durations, sizes),
//! checked once before anything connects or spawns. A process runs one or
//! more pipelines ([`Config`]), each described by a [`RunConfig`].

mod effective;
mod endpoint;
mod http;
mod partitions;
mod process;
mod redis;
mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use self::effective::{changed_keys, render};
pub use self::endpoint::{Address, RedisEndpoint, TlsTarget};
pub use self::http::{Dashboard, HttpAdmin, HttpListen, TOKEN_ENV, allowed_host};
pub use self::partitions::{Assign, MIN_LEASE_TTL, Owned, PartitionOf, Partitions};
pub use self::process::{Config, Loader, PipelineError, Source};
pub use self::redis::{RedisConfig, Secret, SecretSource, SentinelConfig, TlsConfig, redact_url};
pub use self::tls::{TlsError, TlsFile, TlsMaterial};
use crate::vocab::limits::{Limits, MAX_EMIT_BYTES_CEILING, MAX_FIELDS_CEILING};
use crate::vocab::partition::key_slot;
use crate::vocab::retention::Retention;
use crate::vocab::units::ByteSize;

/// Longest backoff before a failed entry is released for redelivery.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

/// Everything one `host run` pipeline needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// The pipeline's name in logs, metrics and the dashboard.
    pub name: String,
    /// Where to connect (credentials are never logged).
    pub redis: RedisConfig,
    /// Stream key to consume.
    pub stream: String,
    /// Consumer group name.
    pub group: String,
    /// This process's consumer name inside the group.
    pub consumer: String,
    /// Path of the handler component.
    pub plugin: PathBuf,
    /// Values the plugin reads with `config(key)`.
    pub plugin_config: BTreeMap<String, String>,
    /// Number of worker threads, each with its own plugin instance.
    pub concurrency: usize,
    /// XREADGROUP COUNT.
    pub batch: usize,
    /// Most entries read but not yet settled (the backpressure window).
    pub max_in_flight: usize,
    /// XREADGROUP BLOCK.
    pub block: Duration,
    /// Deliveries after which a failing entry is dead-lettered.
    pub max_deliveries: u32,
    /// Idle time after which a pending entry may be reclaimed.
    pub claim_idle: Duration,
    /// How often the reaper looks for idle pending entries.
    pub claim_interval: Duration,
    /// Deadline of one handler call.
    pub handler_timeout: Duration,
    /// Memory cap per plugin instance: all its linear memories and tables together.
    pub max_memory: ByteSize,
    /// A new plugin instance for every call (no state carried between
    /// entries) instead of one warm instance per worker.
    pub fresh_instance: bool,
    /// Entries with the same value of this field are handled one at a
    /// time, in stream order (`--order-by`).
    pub order_by: Option<String>,
    /// Entries larger than this (names and values plus 48 bytes per field)
    /// are dead-lettered as `invalid`.
    pub max_entry_size: ByteSize,
    /// Entries with more fields are dead-lettered as `invalid`; emitted
    /// entries with more fail the call permanently.
    pub max_fields: usize,
    /// Entries one call may emit.
    pub max_emits: usize,
    /// Bytes one call may emit (stream names, names, values and overheads).
    pub max_emit_bytes: ByteSize,
    /// Longest plugin log message, stdout/stderr line or failure reason.
    pub max_message_size: ByteSize,
    /// Plugin log lines per second (log calls and stdout/stderr lines).
    pub max_log_rate: u32,
    /// Patterns an emit target must match (empty: any but the source and the DLQ).
    pub emit_allow: Vec<String>,
    /// Dead-letter stream key.
    pub dlq: String,
    /// Approximate length cap of the dead-letter stream.
    pub dlq_maxlen: Option<u64>,
    /// Where a newly created group starts (`0` = whole history, `$` = new entries only).
    pub start_id: String,
    /// Base delay before a retryable failure is released for redelivery
    /// (doubles with each delivery, capped at [`MAX_RETRY_BACKOFF`]).
    pub retry_backoff: Duration,
    /// Approximate cap on stream length (`XTRIM MAXLEN ~`), never past what a group still needs.
    pub maxlen: Option<u64>,
    /// Age past which entries are trimmed (`XTRIM MINID ~`), never past what a group still needs.
    pub max_age: Option<Duration>,
    /// How often retention is applied.
    pub trim_interval: Duration,
    /// On clean shutdown, make this consumer's unfinished entries immediately
    /// claimable by a live peer instead of waiting out `claim_idle`.
    pub handover: bool,
    /// How long in-flight work may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// How often the plugin file is checked for changes besides filesystem
    /// notifications and SIGHUP (zero: notifications and SIGHUP only).
    pub watch_interval: Duration,
    /// Whether the plugin file is watched at all (`false`: SIGHUP only).
    pub watch: bool,
    /// Where compiled plugins are cached (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// How often a progress line is logged (zero disables).
    pub stats_interval: Duration,
    /// The stream is read as partitions (`--partitions`); the process runs
    /// a pipeline per partition it reads ([`RunConfig::partition`]).
    pub partitions: Option<Partitions>,
    /// Set on a partition's pipeline: the logical stream it is part of.
    pub partition_of: Option<PartitionOf>,
    /// Set on a partition's pipeline under a lease: what its writes are
    /// fenced on.
    pub fence: Option<crate::vocab::partition::Fence>,
    /// On a cluster, what becomes of an emit to a stream in another slot
    /// (`--cross-slot-emits`).
    pub cross_slot_emits: CrossSlotEmits,
    /// How long a forwarded emit's idempotence key is remembered in its
    /// target's slot (`--dedup-window`).
    pub dedup_window: Duration,
    /// Wait for this many replicas to have each commit round before it
    /// counts (`--commit-wait`).
    pub commit_wait: Option<CommitWait>,
}

/// `--commit-wait REPLICAS[/TIMEOUT]`: a `WAIT` at the end of every commit
/// round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitWait {
    /// Replicas that must have the round's writes.
    pub replicas: u32,
    /// How long to wait for them.
    pub timeout: Duration,
}

impl std::str::FromStr for CommitWait {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (n, timeout) = match s.split_once('/') {
            Some((n, t)) => (
                n,
                humantime::parse_duration(t)
                    .map_err(|e| format!("{t:?}: {e} (expected e.g. 500ms, 2s)"))?,
            ),
            None => (s, Duration::from_secs(1)),
        };
        let replicas: u32 = n
            .parse()
            .map_err(|_| format!("{s:?} is not REPLICAS[/TIMEOUT], e.g. 1 or 1/500ms"))?;
        if replicas == 0 {
            return Err("REPLICAS must be at least 1".into());
        }
        if timeout.is_zero() || timeout > Duration::from_secs(5) {
            return Err(
                "TIMEOUT must be above 0 and at most 5s (a commit round waits for it)".into(),
            );
        }
        Ok(Self { replicas, timeout })
    }
}

impl std::fmt::Display for CommitWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            self.replicas,
            humantime::format_duration(self.timeout)
        )
    }
}

/// `--cross-slot-emits`: on a cluster, an emit to a stream in another slot
/// than the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossSlotEmits {
    /// Appended to the source's outbox with the ack, then forwarded under
    /// an idempotence key checked in the target's slot: effectively once.
    Outbox,
    /// Refused: the call fails permanently, naming the hash-tag fix.
    Refuse,
}

impl CrossSlotEmits {
    /// The flag's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outbox => "outbox",
            Self::Refuse => "refuse",
        }
    }
}

/// A configuration that cannot work, reported before start-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A value outside its allowed range.
    #[error("--{flag} {problem}")]
    Invalid {
        /// The flag name.
        flag: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Two values that contradict each other.
    #[error("{message}")]
    Conflict {
        /// The flags involved, the one the message is about first.
        flags: &'static [&'static str],
        /// What contradicts what.
        message: String,
    },
    /// TLS settings of the Redis connection that cannot work.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ConfigError {
    /// The flags (or config keys) the error is about, the main one first.
    pub fn flags(&self) -> &[&'static str] {
        match self {
            Self::Invalid { flag, .. } => std::slice::from_ref(flag),
            Self::Conflict { flags, .. } => flags,
            Self::Tls(_) => &["redis"],
        }
    }
}

fn invalid(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        problem: problem.into(),
    }
}

impl RunConfig {
    /// The retention policy, if `maxlen` or `max-age` sets one.
    pub fn retention(&self) -> Option<Retention> {
        Retention::of(self.maxlen, self.max_age)
    }

    /// The limits this configuration sets.
    pub fn limits(&self) -> Limits {
        Limits {
            handler_timeout: self.handler_timeout,
            max_memory: self.max_memory,
            max_emits: self.max_emits,
            max_emit_bytes: self.max_emit_bytes,
            max_message_size: self.max_message_size,
            max_log_rate: self.max_log_rate,
            max_entry_size: self.max_entry_size,
            max_fields: self.max_fields,
            max_deliveries: self.max_deliveries,
            concurrency: self.concurrency,
            max_in_flight: self.max_in_flight,
            dlq_maxlen: self.dlq_maxlen,
        }
    }

    /// Checks ranges and cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, value) in [
            ("name", &self.name),
            ("stream", &self.stream),
            ("group", &self.group),
            ("consumer", &self.consumer),
            ("dlq", &self.dlq),
        ] {
            if value.is_empty() {
                return Err(invalid(flag, "must not be empty"));
            }
        }
        if self.dlq == self.stream {
            return Err(ConfigError::Conflict {
                flags: &["dlq", "stream"],
                message: format!(
                    "--dlq must differ from --stream ({:?}): dead letters would be consumed again",
                    self.stream
                ),
            });
        }
        if self.order_by.as_deref() == Some("") {
            return Err(invalid("order-by", "must name a field"));
        }
        if !is_valid_start_id(&self.start_id) {
            return Err(invalid(
                "start-id",
                format!(
                    "{:?} is not `0`, `$` or an entry id like 1700000000000-0",
                    self.start_id
                ),
            ));
        }
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err(invalid("concurrency", "must be between 1 and 1024"));
        }
        if self.batch == 0 || self.batch > 100_000 {
            return Err(invalid("batch", "must be between 1 and 100000"));
        }
        if self.max_in_flight < self.batch {
            return Err(invalid(
                "max-in-flight",
                format!("must be at least --batch ({})", self.batch),
            ));
        }
        if self.max_deliveries == 0 {
            return Err(invalid("max-deliveries", "must be at least 1"));
        }
        if self.block.is_zero() {
            return Err(invalid(
                "block",
                "must be above zero (a zero BLOCK waits forever)",
            ));
        }
        if self.handler_timeout.is_zero() {
            return Err(invalid("handler-timeout", "must be above zero"));
        }
        if self.claim_interval.is_zero() {
            return Err(invalid("claim-interval", "must be above zero"));
        }
        if self.handler_timeout >= self.claim_idle {
            return Err(ConfigError::Conflict {
                flags: &["handler-timeout", "claim-idle"],
                message: format!(
                    "--handler-timeout ({}) must be below --claim-idle ({}): otherwise a peer may reclaim an entry while its handler is still running",
                    humantime::format_duration(self.handler_timeout),
                    humantime::format_duration(self.claim_idle)
                ),
            });
        }
        if self.retry_backoff.is_zero() {
            return Err(invalid("retry-backoff", "must be above zero"));
        }
        if self.maxlen == Some(0) {
            return Err(invalid("maxlen", "must be at least 1"));
        }
        if self.max_age.is_some_and(|a| a.is_zero()) {
            return Err(invalid("max-age", "must be above zero"));
        }
        if self.trim_interval.is_zero() {
            return Err(invalid("trim-interval", "must be above zero"));
        }
        if self.max_memory.0 < (1 << 20) {
            return Err(invalid("max-memory", "must be at least 1MiB"));
        }
        if self.max_entry_size.0 == 0 {
            return Err(invalid("max-entry-size", "must be above zero"));
        }
        if self.max_fields == 0 || self.max_fields > MAX_FIELDS_CEILING {
            return Err(invalid(
                "max-fields",
                format!(
                    "must be between 1 and {MAX_FIELDS_CEILING} (the most one Redis script can append in one XADD)"
                ),
            ));
        }
        if self.max_emits == 0 || self.max_emits > 1_000_000 {
            return Err(invalid("max-emits", "must be between 1 and 1000000"));
        }
        if self.max_emit_bytes.0 < 1024 || self.max_emit_bytes.0 > MAX_EMIT_BYTES_CEILING {
            return Err(invalid(
                "max-emit-bytes",
                "must be between 1KiB and 256MiB (a call's emits reach Redis as one argument, and Redis takes at most 512MB in one)",
            ));
        }
        if self.max_message_size.0 < 64 || self.max_message_size.0 > 1 << 20 {
            return Err(invalid("max-message-size", "must be between 64B and 1MiB"));
        }
        if self.dlq_maxlen == Some(0) {
            return Err(invalid("dlq-maxlen", "must be at least 1"));
        }
        if let Some(p) = self.emit_allow.iter().find(|p| p.is_empty()) {
            return Err(invalid("emit-allow", format!("{p:?} is an empty pattern")));
        }
        if let Some(parts) = &self.partitions {
            parts.validate(&self.stream)?;
        }
        if self.dedup_window < Duration::from_secs(1) {
            return Err(invalid("dedup-window", "must be at least 1s"));
        }
        if self.redis.cluster && self.partitions.is_none() {
            let (stream, dlq) = (
                key_slot(self.stream.as_bytes()),
                key_slot(self.dlq.as_bytes()),
            );
            if stream != dlq {
                return Err(ConfigError::Conflict {
                    flags: &["stream", "dlq", "cluster"],
                    message: format!(
                        "on a cluster a pipeline's stream and dead-letter stream must share a slot (a dead-letter move is one script): {:?} is in slot {stream}, {:?} in slot {dlq}; read the stream as partitions (--partitions N: {{{s}:i}} with {{{s}:i}}:dlq), or name both with one hash tag (--stream {{{s}}} --dlq {{{s}}}:dlq)",
                        self.stream,
                        self.dlq,
                        s = self.stream.trim_matches(|c| c == '{' || c == '}'),
                    ),
                });
            }
        }
        self.redis.endpoint()?;
        Ok(())
    }
}

fn is_valid_start_id(id: &str) -> bool {
    if id == "$" || id == "0" {
        return true;
    }
    crate::vocab::ids::id_parts(id).is_some()
}

#[cfg(test)]
pub(crate) fn sample() -> RunConfig {
    RunConfig {
        name: "g".into(),
        redis: RedisConfig::from_url("redis://127.0.0.1:6379"),
        stream: "s".into(),
        group: "g".into(),
        consumer: "c".into(),
        plugin: "p.wasm".into(),
        plugin_config: BTreeMap::new(),
        concurrency: 2,
        batch: 100,
        max_in_flight: 200,
        block: Duration::from_secs(2),
        max_deliveries: 5,
        claim_idle: Duration::from_secs(30),
        claim_interval: Duration::from_secs(5),
        handler_timeout: Duration::from_secs(5),
        max_memory: ByteSize(64 << 20),
        fresh_instance: false,
        order_by: None,
        max_entry_size: ByteSize(1 << 20),
        max_fields: 1_000,
        max_emits: 1_000,
        max_emit_bytes: ByteSize(1 << 20),
        max_message_size: ByteSize(4 << 10),
        max_log_rate: 100,
        emit_allow: Vec::new(),
        dlq: "s:dlq".into(),
        dlq_maxlen: None,
        start_id: "0".into(),
        retry_backoff: Duration::from_secs(1),
        maxlen: None,
        max_age: None,
        trim_interval: Duration::from_secs(30),
        handover: false,
        shutdown_grace: Duration::from_secs(10),
        watch_interval: Duration::from_secs(2),
        watch: true,
        cache_dir: None,
        stats_interval: Duration::from_secs(30),
        partitions: None,
        partition_of: None,
        fence: None,
        cross_slot_emits: CrossSlotEmits::Outbox,
        dedup_window: Duration::from_secs(600),
        commit_wait: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_valid() {
        assert_eq!(sample().validate(), Ok(()));
    }

    #[test]
    fn timeout_must_stay_below_claim_idle() {
        let mut c = sample();
        c.handler_timeout = Duration::from_secs(30);
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("--handler-timeout (30s) must be below --claim-idle (30s)"),
            "{err}"
        );
    }

    #[test]
    fn rejects_out_of_range_values() {
        type Breaker = fn(&mut RunConfig);
        let cases: [(&str, Breaker); 16] = [
            ("--max-fields", |c| c.max_fields = 0),
            ("--max-fields", |c| c.max_fields = 3_901),
            ("--max-emits", |c| c.max_emits = 0),
            ("--max-emit-bytes", |c| c.max_emit_bytes = ByteSize(10)),
            ("--max-emit-bytes", |c| {
                c.max_emit_bytes = ByteSize(257 << 20)
            }),
            ("--max-message-size", |c| c.max_message_size = ByteSize(1)),
            ("--dlq-maxlen", |c| c.dlq_maxlen = Some(0)),
            ("--batch", |c| c.batch = 0),
            ("--concurrency", |c| c.concurrency = 0),
            ("--max-in-flight", |c| c.max_in_flight = 10),
            ("--start-id", |c| c.start_id = "yesterday".into()),
            ("--dlq", |c| c.dlq = c.stream.clone()),
            ("--max-deliveries", |c| c.max_deliveries = 0),
            ("--maxlen", |c| c.maxlen = Some(0)),
            ("--max-age", |c| c.max_age = Some(Duration::ZERO)),
            ("hash tag", |c| c.redis.cluster = true),
        ];
        assert!(sample().limits().memory_bound() > 0);
        for (flag, break_it) in cases {
            let mut c = sample();
            break_it(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn commit_wait_reads_replicas_and_an_optional_timeout() {
        let w: CommitWait = "2/250ms".parse().unwrap();
        assert_eq!((w.replicas, w.timeout), (2, Duration::from_millis(250)));
        assert_eq!(
            "1".parse::<CommitWait>().unwrap().timeout,
            Duration::from_secs(1)
        );
        assert_eq!(w.to_string(), "2/250ms");
        for bad in ["0", "x", "1/", "1/10s", "1/0s"] {
            assert!(bad.parse::<CommitWait>().is_err(), "{bad}");
        }
    }

    #[test]
    fn start_ids() {
        for ok in ["0", "$", "1700000000000-0", "1700000000000"] {
            assert!(is_valid_start_id(ok), "{ok}");
        }
        for bad in ["", "-", "x-1", "1-x"] {
            assert!(!is_valid_start_id(bad), "{bad}");
        }
    }
}
