//! One `host run` pipeline: plugin engine, reader, workers and committer
//! under one cancellation tree, with an orderly drain on shutdown.

mod claiming;
mod committer;
mod dispatch;
mod holder;
mod hygiene;
mod inflight;
mod reader;
mod reaper;
mod stats;
mod supervise;
mod trimmer;
mod watcher;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use stats::{Stats, StatsSnapshot};
pub use supervise::{Supervisor, TaskEnd};

use crate::config::{ConfigError, RunConfig};
use crate::plugin::{
    EmitTargets, LoadedPlugin, PluginEngine, PluginError, PluginSettings, PluginSlot,
};
use crate::stream::link::describe_target;
use crate::stream::retention::Retention;
use crate::stream::{GroupRef, LinkHealth, PayloadReader, RedisLink};
use claiming::DlqTarget;
use committer::Committer;
use dispatch::{Admission, Dispatcher};
use holder::Holder;
use inflight::{InFlight, LastFailures};
use reader::Reader;
use reaper::Reaper;
use trimmer::Trimmer;
use watcher::PluginWatcher;
use workers::WorkerSet;

/// Response timeout of the committer's connection (big pipelines, scripts).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the committer gets after an abandoned drain.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(7);
/// Response timeout of the background tasks' connections.
const TASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is contradictory or out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The plugin file was refused.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The Redis URL is malformed.
    #[error("invalid --redis URL: {0}")]
    RedisUrl(String),
    /// A thread could not be started.
    #[error("cannot start worker threads: {0}")]
    Spawn(#[from] std::io::Error),
    /// A task of the pipeline ended before shutdown; the run was drained.
    #[error(
        "the {task} task {how}; the pipeline was drained and stopped (unfinished entries stay pending for the next owner)"
    )]
    TaskFailed {
        /// Which task.
        task: String,
        /// How it ended.
        how: String,
    },
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Final counters.
    pub stats: StatsSnapshot,
    /// Whether in-flight work had to be abandoned at the end of the grace period.
    pub abandoned: bool,
}

/// A validated configuration with its plugin compiled, ready to run.
#[derive(Debug)]
pub struct Prepared {
    /// The engine, kept to compile later versions of the plugin.
    pub engine: PluginEngine,
    /// Limits and configuration every version runs with.
    pub settings: PluginSettings,
    /// The version to start with.
    pub plugin: Arc<LoadedPlugin>,
}

/// Validates the configuration and loads the plugin: everything that can be
/// refused before touching Redis. Blocking (compiles the component).
pub fn prepare(config: &RunConfig) -> Result<Prepared, RunError> {
    config.validate()?;
    // A fresh instance per entry makes instantiation the hot path: take
    // instances from a pool (each worker holds at most one at a time).
    let engine = if config.fresh_instance {
        PluginEngine::pooled(config.concurrency as u32 * 2 + 8, config.max_memory)?
    } else {
        PluginEngine::new()?
    }
    .with_cache(config.cache_dir.as_deref());
    let targets = EmitTargets {
        source: config.stream.clone(),
        dlq: config.dlq.clone(),
        allow: config.emit_allow.clone(),
    };
    let settings = PluginSettings::new(config.plugin_config.clone(), &config.limits(), targets);
    let plugin = engine.load(&config.plugin, &settings)?;
    Ok(Prepared {
        engine,
        settings,
        plugin,
    })
}

/// Runs the pipeline until `shutdown` fires, then drains: the reader stops,
/// workers finish what was read (within `--shutdown-grace`), the committer
/// flushes, and the report is returned.
pub async fn run(config: RunConfig, shutdown: CancellationToken) -> Result<RunReport, RunError> {
    let cfg = config.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare(&cfg))
        .await
        .map_err(|e| RunError::Spawn(std::io::Error::other(e)))??;
    run_prepared(config, prepared, shutdown).await
}

/// Like [`run`] with the plugin already loaded.
pub async fn run_prepared(
    config: RunConfig,
    prepared: Prepared,
    shutdown: CancellationToken,
) -> Result<RunReport, RunError> {
    let Prepared {
        engine,
        settings,
        plugin,
    } = prepared;
    let client = redis::Client::open(config.redis_url.as_str())
        .map_err(|e| RunError::RedisUrl(e.to_string()))?;
    let health = LinkHealth::new(describe_target(&client));
    let config = Arc::new(config);
    let group = GroupRef {
        stream: config.stream.clone(),
        group: config.group.clone(),
        consumer: config.consumer.clone(),
    };
    tracing::info!(
        plugin = %plugin.identity(), compile_ms = plugin.compile_time().as_millis() as u64, cached = plugin.from_cache(),
        redis = %describe_target(&client), stream = %group.stream, group = %group.group,
        consumer = %group.consumer, concurrency = config.concurrency, dlq = %config.dlq,
        fresh_instance = config.fresh_instance,
        "starting"
    );

    let limits = config.limits();
    tracing::info!(
        handler_timeout = %humantime::format_duration(limits.handler_timeout),
        max_memory = %limits.max_memory, max_emits = limits.max_emits, max_emit_bytes = %limits.max_emit_bytes,
        max_message_size = %limits.max_message_size, max_log_rate = limits.max_log_rate,
        max_entry_size = %limits.max_entry_size, max_fields = limits.max_fields, max_deliveries = limits.max_deliveries,
        max_in_flight = limits.max_in_flight, dlq_maxlen = ?limits.dlq_maxlen,
        memory_bound_mib = limits.memory_bound() >> 20,
        "limits"
    );

    let mut supervisor = Supervisor::default();
    let stats = Arc::new(Stats::default());
    let window = Arc::new(Semaphore::new(config.max_in_flight));
    let inflight = Arc::new(InFlight::default());
    let failures = Arc::new(LastFailures::new(limits.remembered_failures()));
    let (work_tx, work_rx) = flume::unbounded();
    let (settled_tx, settled_rx) = tokio::sync::mpsc::unbounded_channel();
    let (retry_tx, retry_rx) = tokio::sync::mpsc::unbounded_channel();
    let abandon_flag = Arc::new(AtomicBool::new(false));
    let abandon = CancellationToken::new();
    let link = |timeout| RedisLink::new(client.clone(), health.clone(), timeout);
    let slot = PluginSlot::new(plugin);
    let dlq = DlqTarget {
        key: config.dlq.clone(),
        maxlen: config.dlq_maxlen,
        group: group.clone(),
        plugin: slot.clone(),
    };
    let admission = Admission {
        max_deliveries: config.max_deliveries,
        max_entry_size: config.max_entry_size,
        max_fields: config.max_fields,
    };
    let payloads = |timeout| {
        PayloadReader::new(
            client.get_connection_info().clone(),
            timeout,
            admission.entry_limits(),
        )
    };

    let committer = Committer {
        link: link(COMMIT_TIMEOUT),
        dlq: dlq.clone(),
        stats: stats.clone(),
        inflight: inflight.clone(),
        failures: failures.clone(),
        retries: retry_tx,
    };
    let mut committer_task =
        supervisor.spawn("committer", committer.run(settled_rx, abandon.clone()));
    let holder = Holder {
        link: link(TASK_TIMEOUT),
        dlq: dlq.clone(),
        claim_idle: config.claim_idle,
        base: config.retry_backoff,
        inflight: inflight.clone(),
        stats: stats.clone(),
    };
    let mut holder_task = supervisor.spawn("holder", holder.run(retry_rx));

    let watcher = PluginWatcher {
        engine,
        settings,
        path: config.plugin.clone(),
        slot: slot.clone(),
        poll: config.watch_interval,
        watch: config.watch,
        stats: stats.clone(),
    };
    let mut watcher_task = supervisor.spawn("watcher", watcher.run(shutdown.clone()));

    let workers = WorkerSet {
        plugin: slot.clone(),
        jobs: work_rx,
        settled: settled_tx.clone(),
        abandon: abandon_flag.clone(),
        group: group.clone(),
        stats: stats.clone(),
        fresh_instance: config.fresh_instance,
    }
    .spawn(config.concurrency, &supervisor)?;

    let dispatch = Dispatcher {
        work: work_tx,
        settled: settled_tx,
        plugin: slot,
        admission,
        inflight: inflight.clone(),
        failures,
    };
    let reaper = Reaper {
        link: link(TASK_TIMEOUT),
        payloads: payloads(TASK_TIMEOUT),
        dlq: dlq.clone(),
        claim_idle: config.claim_idle,
        interval: config.claim_interval,
        batch: config.batch,
        window: window.clone(),
        dispatch: dispatch.clone(),
        stats: stats.clone(),
    };
    let mut reaper_task = supervisor.spawn("reaper", reaper.run(shutdown.clone()));
    let policy = Retention {
        maxlen: config.maxlen,
        max_age: config.max_age,
    };
    let mut trimmer_task = (policy.maxlen.is_some() || policy.max_age.is_some()).then(|| {
        let trimmer = Trimmer {
            link: link(TASK_TIMEOUT),
            stream: config.stream.clone(),
            policy,
            interval: config.trim_interval,
            stats: stats.clone(),
        };
        supervisor.spawn("trimmer", trimmer.run(shutdown.clone()))
    });
    let reader = Reader {
        link: link(config.block + reader::READ_TIMEOUT_SLACK),
        group: group.clone(),
        config: config.clone(),
        window,
        dispatch,
        stats: stats.clone(),
        payloads: payloads(reader::READ_TIMEOUT_SLACK),
        dlq: dlq.clone(),
    };
    let mut reader_task = supervisor.spawn("reader", reader.run(shutdown.clone()));
    let mut progress = (!config.stats_interval.is_zero()).then(|| {
        supervisor.spawn(
            "progress",
            log_progress(stats.clone(), config.stats_interval, shutdown.clone()),
        )
    });

    // Every task runs until shutdown: one that ends before is a failure.
    let failure = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        // Tasks end on their own only once shutdown began (a signal that
        // raced this select); before that, or by a panic, it is a failure.
        end = supervisor.next_end() => {
            (!shutdown.is_cancelled() || end.how.starts_with("panicked")).then_some(end)
        }
    };
    if let Some(end) = &failure {
        tracing::error!(task = %end.task, how = %end.how, "a task of the pipeline ended unexpectedly; draining and stopping");
        shutdown.cancel();
    }
    let started = Instant::now();
    tracing::info!(grace = %humantime::format_duration(config.shutdown_grace), "shutting down: reading stopped, finishing in-flight entries");
    // Reader and reaper hold the job queue open; once both are gone the
    // workers drain what was read, then the committer sees its inbox close.
    reader_task.finished().await;
    reaper_task.finished().await;
    if let Some(t) = trimmer_task.as_mut() {
        t.finished().await;
    }
    watcher_task.finished().await;
    if let Some(p) = progress.as_mut() {
        p.finished().await;
    }

    let abandoned = tokio::time::timeout(config.shutdown_grace, committer_task.finished())
        .await
        .is_err();
    if abandoned {
        tracing::warn!(
            "shutdown grace period over: abandoning unfinished entries (they stay pending for the next owner)"
        );
        abandon_flag.store(true, Ordering::Relaxed);
        abandon.cancel();
        committer_task.finish_within(FLUSH_TIMEOUT).await;
    } else {
        // Workers have all exited once the committer saw its inbox close.
        for w in workers {
            let _ = w.join();
        }
    }
    // The committer is gone, so the holder's inbox is closed: it releases
    // what it still holds and ends.
    holder_task.finish_within(FLUSH_TIMEOUT).await;
    hygiene::clean_up(
        link(TASK_TIMEOUT),
        &dlq,
        config.claim_idle,
        config.handover,
        &stats,
    )
    .await;
    let failure = failure.or_else(|| supervisor.panicked());
    let snapshot = stats.snapshot();
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        read = snapshot.read,
        acked = snapshot.acked,
        dead_lettered = snapshot.dead_lettered(),
        retried = snapshot.retried,
        avg_read_batch = snapshot.avg_read_batch(),
        avg_commit_batch = snapshot.avg_commit_batch(),
        abandoned,
        "stopped"
    );
    match failure {
        Some(TaskEnd { task, how }) => Err(RunError::TaskFailed { task, how }),
        None => Ok(RunReport {
            stats: snapshot,
            abandoned,
        }),
    }
}

/// A token that cancels itself after `d`: a time budget for best-effort
/// work at the end of a run.
fn cancel_after(d: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let timer = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        timer.cancel();
    });
    token
}

/// Logs a progress line every `interval` while anything changes.
async fn log_progress(stats: Arc<Stats>, interval: Duration, cancel: CancellationToken) {
    let mut last = stats.snapshot();
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = stats.snapshot();
        if now != last {
            let rate = (now.handled - last.handled) as f64 / interval.as_secs_f64();
            tracing::info!(
                read = now.read,
                acked = now.acked,
                dead_lettered = now.dead_lettered(),
                retried = now.retried,
                emitted = now.emitted,
                reclaimed = now.reclaimed,
                trimmed = now.trimmed,
                retention_held_back = now.retention_held_back == 1,
                handled_per_sec = rate.round() as u64,
                avg_read_batch = now.avg_read_batch(),
                avg_commit_batch = now.avg_commit_batch(),
                "progress"
            );
            last = now;
        }
    }
}
