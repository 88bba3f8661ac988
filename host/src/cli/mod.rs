//! The command line: clap definitions and their conversion into validated
//! configuration, from flags or from a config file whose keys are the flags'
//! names. Nothing else in the crate knows about clap.

pub mod demo;
pub mod file;
mod invocation;
pub mod ops;
mod redis;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use self::invocation::{Action, Invocation, RunSource, invocation};
pub use self::redis::RedisArgs;
use crate::config::{
    Assign, ConfigError, CrossSlotEmits, HttpListen, Partitions, RedisConfig, RunConfig,
};
use crate::vocab::units::ByteSize;

/// streamhost: Redis Streams consumer groups, handled by sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "host", version, about, long_about = None, propagate_version = true, args_override_self = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter, e.g. `info`, `debug`, `streamhost=debug,plugin=info`.
    #[arg(
        long,
        global = true,
        env = "STREAMHOST_LOG",
        default_value = "info",
        help_heading = "Logging"
    )]
    pub log: String,
    /// Log line format.
    #[arg(long, global = true, env = "STREAMHOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, help_heading = "Logging")]
    pub log_format: LogFormat,
    /// Write a perf map (`/tmp/perf-<pid>.map`) naming the compiled plugin code, so `perf
    /// record`/`perf report` show a plugin's functions instead of raw JIT addresses. Off by
    /// default: the file grows with every plugin version loaded and is never removed.
    #[arg(
        long,
        global = true,
        env = "STREAMHOST_PERF_MAP",
        help_heading = "Profiling"
    )]
    pub perf_map: bool,
}

/// `--log-format`: how log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl From<LogFormat> for crate::telemetry::LogFormat {
    fn from(flag: LogFormat) -> Self {
        match flag {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume a stream through a consumer group, handing every entry to a WebAssembly handler.
    ///
    /// Success acks the entry (with anything the handler emitted, atomically); a
    /// permanent failure moves it to the dead-letter stream; a retryable failure,
    /// trap or timeout leaves it pending to be retried.
    ///
    /// One pipeline from flags (`--stream`, `--group` and `--plugin` are required), or
    /// any number from a config file (`--config FILE`), whose keys are these flags' names.
    Run(Box<RunArgs>),
    /// Validate a plugin file against the streamhost:plugin/handler contract and describe it.
    ///
    /// Compiles the component, checks its imports and exports against the world, and prints
    /// its identity (name@content-hash), size, compile time, imports and exports. Exits 0 for a
    /// valid plugin and 65 with the reason for anything else.
    Check(CheckArgs),
    /// Work with config files (`host run --config FILE`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show a stream's length and ends, each group's lag, pending entries and consumers, the
    /// dead letters, and whether retention is held back; `--check` for monitoring.
    Status(Box<ops::StatusArgs>),
    /// Append entries: from FIELD=VALUE arguments, JSON lines or the demo order events.
    Produce(Box<ops::ProduceArgs>),
    /// Browse, redrive and purge dead letters.
    #[command(subcommand)]
    Dlq(ops::DlqCommand),
    /// Apply retention once (--maxlen / --max-age), never past what a group still needs unless --force.
    Trim(Box<ops::TrimArgs>),
    /// Create, destroy or move consumer groups, with safe defaults.
    #[command(subcommand)]
    Groups(ops::GroupsCommand),
    /// Print a window of a stream without touching any group, or run a handler over it and
    /// report what each entry would become (ack with emits, retry, dead-letter).
    Replay(Box<ops::ReplayArgs>),
    /// Run the orders demo with its live dashboard: two consumer groups on one stream, real
    /// plugins, a steady trickle of events; starts a private redis-server if none is running.
    ///
    /// Prints the dashboard's link (http://127.0.0.1:8083/#token=…) and runs until
    /// SIGINT/SIGTERM. The plugins are built into the binary: it works from any directory.
    Demo(Box<demo::DemoArgs>),
}

/// `host config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file and print the effective configuration (secrets redacted) without connecting.
    ///
    /// Exits 0 for a valid file, 64 with file, line and column for anything else.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

/// Flags of `host check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The component (.wasm) to check.
    pub plugin: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 250ms, 30s, 5m)"))
}

fn http_listen(s: &str) -> Result<HttpListen, String> {
    s.parse()
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Flags of `host run`; each can also be set with its `STREAMHOST_*` variable,
/// and (but `--redis*`, `--config` and `--check`) as a key of a config file's
/// `[defaults]` or `[[pipeline]]` table.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read the pipelines from this TOML file instead of flags; it is reloaded on change and on SIGHUP.
    /// Run flags cannot be combined with it (the file's keys are their names).
    #[arg(long, env = "STREAMHOST_CONFIG", help_heading = "Config file")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print it (secrets redacted) and exit without connecting.
    #[arg(long, help_heading = "Config file")]
    pub check: bool,
    /// Where and as whom to connect to Redis.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Serve Prometheus metrics (`/metrics`) and health checks (`/healthz`, `/readyz`) on ADDR:
    /// `HOST:PORT`, or a bare `PORT` for 127.0.0.1:PORT. Process-level: in a config file, the
    /// `[http]` table's `listen`.
    #[arg(
        long,
        env = "STREAMHOST_HTTP",
        value_name = "ADDR",
        value_parser = http_listen,
        help_heading = "Metrics and health"
    )]
    pub http: Option<HttpListen>,
    /// Allow the dashboard's actions (produce, crash, reclaim, redrive, trim, plugin upload, add
    /// and remove consumers) to requests bearing the admin token: `STREAMHOST_HTTP_TOKEN`, else
    /// one is generated and logged at start-up as a link. Needs --http. In a config file:
    /// `[http]` `admin = true`.
    #[arg(long, requires = "http", help_heading = "Metrics and health")]
    pub http_admin: bool,
    /// A host name the listener answers to besides IP addresses, `localhost` and the --http host;
    /// requests naming any other host are refused (421), so a site that points its own name at
    /// this address gets nothing (DNS rebinding). Repeatable; comma-separated in the variable. In
    /// a config file: `[http]` `allowed-hosts = ["NAME", …]`.
    #[arg(
        long = "http-allowed-host",
        env = "STREAMHOST_HTTP_ALLOWED_HOSTS",
        value_name = "NAME",
        value_delimiter = ',',
        value_parser = crate::config::allowed_host,
        requires = "http",
        help_heading = "Metrics and health"
    )]
    pub http_allowed_hosts: Vec<String>,
    /// Pipeline name in logs [default: the group].
    #[arg(long, env = "STREAMHOST_NAME")]
    pub name: Option<String>,
    /// Stream key to consume.
    #[arg(long, env = "STREAMHOST_STREAM", required_unless_present = "config")]
    pub stream: Option<String>,
    /// Consumer group (created with MKSTREAM if missing).
    #[arg(long, env = "STREAMHOST_GROUP", required_unless_present = "config")]
    pub group: Option<String>,
    /// Consumer name inside the group [default: <hostname>-<pid>].
    #[arg(long, env = "STREAMHOST_CONSUMER")]
    pub consumer: Option<String>,
    /// Handler component (.wasm) implementing streamhost:plugin/handler.
    #[arg(long, env = "STREAMHOST_PLUGIN", required_unless_present = "config")]
    pub plugin: Option<PathBuf>,
    /// A value the plugin reads with `config(KEY)`; repeatable. Values may contain commas.
    /// Also read from STREAMHOST_PLUGIN_CONFIG, one KEY=VALUE per line (flags win).
    #[arg(long = "plugin-config", value_name = "KEY=VALUE", value_parser = key_value)]
    pub plugin_config: Vec<(String, String)>,
    /// Worker threads, each with its own plugin instance [default: number of CPUs].
    #[arg(long, env = "STREAMHOST_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Entries per XREADGROUP (COUNT).
    #[arg(long, env = "STREAMHOST_BATCH", default_value_t = 500)]
    pub batch: usize,
    /// Most entries read but not yet acked or dead-lettered, those waiting out a retry backoff included [default: 2 × --batch].
    #[arg(long, env = "STREAMHOST_MAX_IN_FLIGHT", help_heading = "Limits")]
    pub max_in_flight: Option<usize>,
    /// How long one XREADGROUP waits for new entries (BLOCK).
    #[arg(long, env = "STREAMHOST_BLOCK", default_value = "2s", value_parser = duration)]
    pub block: Duration,
    /// Deliveries after which a still-failing entry is dead-lettered (kind `max-deliveries`).
    #[arg(
        long,
        env = "STREAMHOST_MAX_DELIVERIES",
        default_value_t = 5,
        help_heading = "Limits"
    )]
    pub max_deliveries: u32,
    /// Idle time after which a pending entry is reclaimed and retried.
    #[arg(long, env = "STREAMHOST_CLAIM_IDLE", default_value = "30s", value_parser = duration)]
    pub claim_idle: Duration,
    /// How often to look for idle pending entries to reclaim.
    #[arg(long, env = "STREAMHOST_CLAIM_INTERVAL", default_value = "5s", value_parser = duration)]
    pub claim_interval: Duration,
    /// Deadline of one handler call, time blocked in host calls included; exceeding it counts as a retryable failure.
    #[arg(long, env = "STREAMHOST_HANDLER_TIMEOUT", default_value = "5s", value_parser = duration, help_heading = "Limits")]
    pub handler_timeout: Duration,
    /// Memory cap per plugin instance, all its linear memories and tables together (e.g. 64MiB).
    #[arg(
        long,
        env = "STREAMHOST_MAX_MEMORY",
        default_value = "64MiB",
        help_heading = "Limits"
    )]
    pub max_memory: ByteSize,
    /// A new plugin instance for every entry, so no state can leak between entries
    /// (costs an instantiation per call; by default each worker keeps one warm instance).
    #[arg(long, env = "STREAMHOST_FRESH_INSTANCE")]
    pub fresh_instance: bool,
    /// Handle entries with the same value of FIELD one at a time, in stream order
    /// (a later one waits while an earlier one is in flight or waiting out a retry);
    /// different values run in parallel, entries without the field are unordered.
    #[arg(long, env = "STREAMHOST_ORDER_BY", value_name = "FIELD")]
    pub order_by: Option<String>,
    /// Entries larger than this (names and values plus 48 bytes per field) are dead-lettered as `invalid`.
    #[arg(
        long,
        env = "STREAMHOST_MAX_ENTRY_SIZE",
        default_value = "1MiB",
        help_heading = "Limits"
    )]
    pub max_entry_size: ByteSize,
    /// Entries with more fields are dead-lettered as `invalid`; a handler emitting an entry with more fails permanently (at most 3900).
    #[arg(
        long,
        env = "STREAMHOST_MAX_FIELDS",
        default_value_t = 1000,
        help_heading = "Limits"
    )]
    pub max_fields: usize,
    /// Entries one handler call may emit; more fails the call permanently.
    #[arg(
        long,
        env = "STREAMHOST_MAX_EMITS",
        default_value_t = 1000,
        help_heading = "Limits"
    )]
    pub max_emits: usize,
    /// Bytes one handler call may emit (stream names, names and values, plus 48 bytes per field and 64 per entry); more fails the call permanently. At most 256MiB.
    #[arg(
        long,
        env = "STREAMHOST_MAX_EMIT_BYTES",
        default_value = "1MiB",
        help_heading = "Limits"
    )]
    pub max_emit_bytes: ByteSize,
    /// Longest plugin log message, stdout/stderr line or failure reason; longer ones are cut.
    #[arg(
        long,
        env = "STREAMHOST_MAX_MESSAGE_SIZE",
        default_value = "4KiB",
        help_heading = "Limits"
    )]
    pub max_message_size: ByteSize,
    /// Plugin log lines per second (log calls and stdout/stderr lines); more are dropped and counted.
    #[arg(
        long,
        env = "STREAMHOST_MAX_LOG_RATE",
        default_value_t = 100,
        help_heading = "Limits"
    )]
    pub max_log_rate: u32,
    /// Streams a handler may emit to (`*` and `?` wildcards); repeatable. Without it, any stream but the source and the DLQ; those only when named literally.
    #[arg(
        long = "emit-allow",
        value_name = "PATTERN",
        env = "STREAMHOST_EMIT_ALLOW",
        value_delimiter = ',',
        help_heading = "Limits"
    )]
    pub emit_allow: Vec<String>,
    /// Dead-letter stream [default: <stream>:dlq].
    #[arg(long, env = "STREAMHOST_DLQ")]
    pub dlq: Option<String>,
    /// Keep about this many dead letters (XADD MAXLEN ~); none by default.
    #[arg(long, env = "STREAMHOST_DLQ_MAXLEN", help_heading = "Limits")]
    pub dlq_maxlen: Option<u64>,
    /// Where a newly created group starts: `0` (all history), `$` (new entries only) or an id.
    #[arg(long, env = "STREAMHOST_START_ID", default_value = "0")]
    pub start_id: String,
    /// First delay before a retryable failure is released for redelivery; doubles with each delivery (max 5m).
    #[arg(long, env = "STREAMHOST_RETRY_BACKOFF", default_value = "1s", value_parser = duration)]
    pub retry_backoff: Duration,
    /// Keep about this many entries (XTRIM MAXLEN ~), never trimming what a group still needs.
    #[arg(long, env = "STREAMHOST_MAXLEN")]
    pub maxlen: Option<u64>,
    /// Trim entries older than this (XTRIM MINID ~), never trimming what a group still needs.
    #[arg(long, env = "STREAMHOST_MAX_AGE", value_parser = duration)]
    pub max_age: Option<Duration>,
    /// How often retention (--maxlen / --max-age) is applied.
    #[arg(long, env = "STREAMHOST_TRIM_INTERVAL", default_value = "30s", value_parser = duration)]
    pub trim_interval: Duration,
    /// On clean shutdown, hand unfinished entries to a live peer (claimable at once) instead of waiting out --claim-idle.
    #[arg(long, env = "STREAMHOST_HANDOVER")]
    pub handover: bool,
    /// Time in-flight work gets to finish after SIGINT/SIGTERM.
    #[arg(long, env = "STREAMHOST_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// How often to check the plugin file for a new version, besides file notifications and SIGHUP (0s: never).
    #[arg(long, env = "STREAMHOST_WATCH_INTERVAL", default_value = "2s", value_parser = duration)]
    pub watch_interval: Duration,
    /// Do not watch the plugin file (no file notifications, no polling): reload it on SIGHUP only.
    #[arg(long, env = "STREAMHOST_NO_WATCH")]
    pub no_watch: bool,
    /// Directory for compiled plugins, so restarts skip compilation [default: $XDG_CACHE_HOME/streamhost or ~/.cache/streamhost].
    #[arg(long, env = "STREAMHOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the plugin on every start instead of using the compiled-plugin cache.
    #[arg(long, env = "STREAMHOST_NO_CACHE")]
    pub no_cache: bool,
    /// How often to log a progress line (0s disables).
    #[arg(long, env = "STREAMHOST_STATS_INTERVAL", default_value = "30s", value_parser = duration)]
    pub stats_interval: Duration,
    /// Read the stream as N partitions, the keys {STREAM:0} … {STREAM:N-1} (their dead letters in
    /// {STREAM:i}:dlq). Producers route entries with `host produce --partitions N --partition-by FIELD`.
    #[arg(
        long,
        env = "STREAMHOST_PARTITIONS",
        value_name = "N",
        help_heading = "Partitions"
    )]
    pub partitions: Option<u32>,
    /// How the hosts of one group share the partitions: `lease` (one owner per partition at a
    /// time, its commits fenced on its lease; partitions spread over live hosts; per-key order
    /// holds across hosts) or `shared` (every host reads every partition).
    #[arg(long, env = "STREAMHOST_ASSIGN", value_enum, default_value_t = AssignArg::Lease, requires = "partitions", help_heading = "Partitions")]
    pub assign: AssignArg,
    /// How long a partition's lease outlives its owner's last renewal (renewed every third of it):
    /// a host that dies loses its partitions after this.
    #[arg(long, env = "STREAMHOST_LEASE_TTL", default_value = "10s", value_parser = duration, help_heading = "Partitions")]
    pub lease_ttl: Duration,
    /// On a cluster (--cluster), an emit to a stream in another slot than the source: `outbox`
    /// (appended to the source's outbox with the ack, then forwarded once under an idempotence
    /// key kept in the target's slot) or `refuse` (the call fails permanently).
    #[arg(long, env = "STREAMHOST_CROSS_SLOT_EMITS", value_enum, default_value_t = CrossSlotArg::Outbox, help_heading = "Partitions")]
    pub cross_slot_emits: CrossSlotArg,
    /// How long a forwarded cross-slot emit's idempotence key is remembered: an outbox entry
    /// forwarded again within it (a forwarder that died, a commit a failover undid) lands once.
    #[arg(long, env = "STREAMHOST_DEDUP_WINDOW", default_value = "10m", value_parser = duration, help_heading = "Partitions")]
    pub dedup_window: Duration,
    /// Make every commit round wait (WAIT) until REPLICAS replicas have its writes, at most
    /// TIMEOUT (default 1s, at most 5s): a failover then loses no commit the replicas confirmed.
    /// A round confirmed by fewer still counts; the shortfall is logged and counted
    /// (`streamhost_commit_waits_short`).
    #[arg(
        long,
        env = "STREAMHOST_COMMIT_WAIT",
        value_name = "REPLICAS[/TIMEOUT]",
        help_heading = "Partitions"
    )]
    pub commit_wait: Option<crate::config::CommitWait>,
}

/// `--cross-slot-emits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CrossSlotArg {
    /// Through the source's outbox, forwarded effectively once.
    Outbox,
    /// Refused (the call fails permanently).
    Refuse,
}

/// `--assign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AssignArg {
    /// One owner per partition, under a fenced lease.
    Lease,
    /// Every host reads every partition.
    Shared,
}

impl RunArgs {
    /// Fills in computed defaults; validation is [`RunConfig::validate`].
    /// `plugin_config` comes before the flags' (which win): the
    /// `STREAMHOST_PLUGIN_CONFIG` lines for flags, nothing for a file.
    pub fn into_config(
        self,
        redis: RedisConfig,
        plugin_config: Vec<(String, String)>,
    ) -> Result<RunConfig, ConfigError> {
        let missing = |flag| ConfigError::Invalid {
            flag,
            problem: "is required".into(),
        };
        let stream = self.stream.ok_or_else(|| missing("stream"))?;
        let group = self.group.ok_or_else(|| missing("group"))?;
        let plugin = self.plugin.ok_or_else(|| missing("plugin"))?;
        let consumer = self.consumer.unwrap_or_else(default_consumer);
        let partitions = self.partitions.map(|count| Partitions {
            count,
            assign: match self.assign {
                AssignArg::Lease => Assign::Lease,
                AssignArg::Shared => Assign::Shared,
            },
            lease_ttl: self.lease_ttl,
        });
        let dlq = match (self.dlq, partitions) {
            (None, None) => format!("{stream}:dlq"),
            (Some(dlq), None) => dlq,
            (None, Some(_)) => format!("{{{stream}:i}}:dlq"),
            (Some(_), Some(_)) => {
                return Err(ConfigError::Conflict {
                    flags: &["dlq", "partitions"],
                    message: format!(
                        "--dlq cannot be combined with --partitions: each partition keeps its dead letters beside it, in {{{stream}:i}}:dlq, so that moving one is a single-slot script"
                    ),
                });
            }
        };
        let concurrency = self.concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        Ok(RunConfig {
            name: self.name.unwrap_or_else(|| group.clone()),
            redis,
            stream,
            group,
            consumer,
            plugin,
            plugin_config: plugin_config
                .into_iter()
                .chain(self.plugin_config)
                .collect::<BTreeMap<_, _>>(),
            concurrency,
            batch: self.batch,
            max_in_flight: self.max_in_flight.unwrap_or(self.batch.saturating_mul(2)),
            block: self.block,
            max_deliveries: self.max_deliveries,
            claim_idle: self.claim_idle,
            claim_interval: self.claim_interval,
            handler_timeout: self.handler_timeout,
            max_memory: self.max_memory,
            fresh_instance: self.fresh_instance,
            order_by: self.order_by,
            max_entry_size: self.max_entry_size,
            max_fields: self.max_fields,
            max_emits: self.max_emits,
            max_emit_bytes: self.max_emit_bytes,
            max_message_size: self.max_message_size,
            max_log_rate: self.max_log_rate,
            emit_allow: self.emit_allow,
            dlq,
            dlq_maxlen: self.dlq_maxlen,
            start_id: self.start_id,
            retry_backoff: self.retry_backoff,
            maxlen: self.maxlen,
            max_age: self.max_age,
            trim_interval: self.trim_interval,
            handover: self.handover,
            shutdown_grace: self.shutdown_grace,
            watch_interval: self.watch_interval,
            watch: !self.no_watch,
            cache_dir: if self.no_cache {
                None
            } else {
                self.cache_dir.or_else(crate::plugin::default_cache_dir)
            },
            stats_interval: self.stats_interval,
            partitions,
            partition_of: None,
            fence: None,
            cross_slot_emits: match self.cross_slot_emits {
                CrossSlotArg::Outbox => CrossSlotEmits::Outbox,
                CrossSlotArg::Refuse => CrossSlotEmits::Refuse,
            },
            dedup_window: self.dedup_window,
            commit_wait: self.commit_wait,
        })
    }
}

/// `STREAMHOST_PLUGIN_CONFIG`: one `KEY=VALUE` per line (lines without `=`
/// are ignored), so values can hold commas.
pub fn env_plugin_config() -> Vec<(String, String)> {
    std::env::var("STREAMHOST_PLUGIN_CONFIG")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| key_value(l.trim()).ok())
        .collect()
}

/// `<hostname>-<pid>`: unique per process on a host, stable enough to read in logs.
fn default_consumer() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse_into_config() {
        let cli = Cli::try_parse_from([
            "host",
            "run",
            "--stream",
            "orders",
            "--group",
            "g",
            "--plugin",
            "n.wasm",
            "--block",
            "250ms",
            "--max-memory",
            "32MiB",
            "--plugin-config",
            "a=1,2",
            "--plugin-config",
            "b=x=y",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as run")
        };
        let c = args
            .into_config(RedisConfig::from_url("redis://x"), Vec::new())
            .unwrap();
        assert_eq!(c.dlq, "orders:dlq");
        assert_eq!(c.name, "g", "the name defaults to the group");
        assert_eq!(c.block, Duration::from_millis(250));
        assert_eq!(c.max_memory, ByteSize(32 << 20));
        assert_eq!(c.max_in_flight, 1000);
        assert_eq!(c.plugin_config.get("b").map(String::as_str), Some("x=y"));
        assert_eq!(
            c.plugin_config.get("a").map(String::as_str),
            Some("1,2"),
            "commas stay in values"
        );
        assert!(c.consumer.ends_with(&format!("-{}", std::process::id())));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn defaults_match_the_documented_limits() {
        let cli = Cli::try_parse_from([
            "host",
            "run",
            "--stream",
            "s",
            "--group",
            "g",
            "--plugin",
            "p",
            "--concurrency",
            "2",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("parsed as run")
        };
        assert_eq!(
            args.into_config(RedisConfig::from_url("redis://x"), Vec::new())
                .unwrap()
                .limits(),
            crate::vocab::limits::Limits::default()
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = Cli::try_parse_from([
            "host", "run", "--stream", "s", "--group", "g", "--plugin", "p", "--block", "soon",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--block") && err.contains("expected e.g. 250ms"),
            "{err}"
        );
    }
}
