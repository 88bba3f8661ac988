//! One `host run` pipeline: plugin engine, reader, workers and committer
//! under one cancellation tree, with an orderly drain on shutdown.

mod committer;
mod dispatch;
mod hygiene;
mod inflight;
mod keepalive;
mod reader;
mod reaper;
mod retry;
mod stats;
mod trimmer;
mod watcher;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use stats::{Stats, StatsSnapshot};

use crate::config::{ConfigError, RunConfig};
use crate::plugin::{LoadedPlugin, PluginEngine, PluginError, PluginSettings, PluginSlot};
use crate::stream::link::describe_target;
use crate::stream::{GroupRef, LinkHealth, RedisLink};
use committer::Committer;
use dispatch::{Admission, Dispatcher};
use inflight::{InFlight, LastFailures};
use keepalive::KeepAlive;
use reader::Reader;
use reaper::Reaper;
use retry::RetryQueue;
use trimmer::Trimmer;
use watcher::PluginWatcher;
use workers::WorkerSet;

/// Response timeout of the committer's connection (big pipelines, scripts).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the committer gets after an abandoned drain.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(7);
/// Last-failure reasons remembered for max-deliveries records.
const MAX_REMEMBERED_FAILURES: usize = 100_000;
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
    let settings = PluginSettings {
        config: config.plugin_config.clone(),
        max_memory: config.max_memory,
        timeout: config.handler_timeout,
    };
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

    let stats = Arc::new(Stats::default());
    let window = Arc::new(Semaphore::new(config.max_in_flight));
    let inflight = Arc::new(InFlight::default());
    let failures = Arc::new(LastFailures::new(MAX_REMEMBERED_FAILURES));
    let (work_tx, work_rx) = flume::unbounded();
    let (settled_tx, settled_rx) = tokio::sync::mpsc::unbounded_channel();
    let (retry_tx, retry_rx) = tokio::sync::mpsc::unbounded_channel();
    let abandon_flag = Arc::new(AtomicBool::new(false));
    let abandon = CancellationToken::new();
    // Stops keep-alive only once nothing is held any more: handlers keep
    // running during the grace period and must not be stolen meanwhile.
    let finished = CancellationToken::new();
    let link = |timeout| RedisLink::new(client.clone(), health.clone(), timeout);

    let committer = Committer {
        link: link(COMMIT_TIMEOUT),
        group: group.clone(),
        dlq: config.dlq.clone(),
        stats: stats.clone(),
        inflight: inflight.clone(),
        failures: failures.clone(),
        retries: retry_tx,
    };
    let mut committer_task = tokio::spawn(committer.run(settled_rx, abandon.clone()));
    let retry_queue = RetryQueue {
        link: link(TASK_TIMEOUT),
        group: group.clone(),
        claim_idle: config.claim_idle,
        base: config.retry_backoff,
        inflight: inflight.clone(),
        stats: stats.clone(),
    };
    let mut retry_task = tokio::spawn(retry_queue.run(retry_rx));
    let keepalive = KeepAlive {
        link: link(TASK_TIMEOUT),
        group: group.clone(),
        claim_idle: config.claim_idle,
        inflight: inflight.clone(),
        stats: stats.clone(),
    };
    let keepalive_task = tokio::spawn(keepalive.run(finished.clone()));

    let slot = PluginSlot::new(plugin);
    let watcher = PluginWatcher {
        engine,
        settings,
        path: config.plugin.clone(),
        slot: slot.clone(),
        poll: config.watch_interval,
        stats: stats.clone(),
    };
    let watcher_task = tokio::spawn(watcher.run(shutdown.clone()));

    let workers = WorkerSet {
        plugin: slot.clone(),
        jobs: work_rx,
        settled: settled_tx.clone(),
        abandon: abandon_flag.clone(),
        group: group.clone(),
        stats: stats.clone(),
        fresh_instance: config.fresh_instance,
    }
    .spawn(config.concurrency)?;

    let dispatch = Dispatcher {
        work: work_tx,
        settled: settled_tx,
        plugin: slot,
        admission: Admission {
            max_deliveries: config.max_deliveries,
            max_entry_size: config.max_entry_size,
        },
        inflight: inflight.clone(),
        failures,
    };
    let reaper = Reaper {
        link: link(TASK_TIMEOUT),
        group: group.clone(),
        claim_idle: config.claim_idle,
        interval: config.claim_interval,
        batch: config.batch,
        window: window.clone(),
        dispatch: dispatch.clone(),
        stats: stats.clone(),
    };
    let reaper_task = tokio::spawn(reaper.run(shutdown.clone()));
    let trimmer = Trimmer {
        link: link(TASK_TIMEOUT),
        stream: config.stream.clone(),
        maxlen: config.maxlen,
        max_age: config.max_age,
        interval: config.trim_interval,
        stats: stats.clone(),
    };
    let trimmer_task = tokio::spawn(trimmer.run(shutdown.clone()));
    let reader = Reader {
        link: link(config.block + reader::READ_TIMEOUT_SLACK),
        group: group.clone(),
        config: config.clone(),
        window,
        dispatch,
        stats: stats.clone(),
        path: Default::default(),
    };
    let reader_task = tokio::spawn(reader.run(shutdown.clone()));
    let progress = tokio::spawn(log_progress(
        stats.clone(),
        config.stats_interval,
        shutdown.clone(),
    ));

    shutdown.cancelled().await;
    let started = Instant::now();
    tracing::info!(grace = %humantime::format_duration(config.shutdown_grace), "shutting down: reading stopped, finishing in-flight entries");
    // Reader and reaper hold the job queue open; once both are gone the
    // workers drain what was read, then the committer sees its inbox close.
    let _ = reader_task.await;
    let _ = reaper_task.await;
    let _ = trimmer_task.await;
    let _ = watcher_task.await;
    progress.abort();

    let abandoned = tokio::time::timeout(config.shutdown_grace, &mut committer_task)
        .await
        .is_err();
    if abandoned {
        tracing::warn!(
            "shutdown grace period over: abandoning unfinished entries (they stay pending for the next owner)"
        );
        abandon_flag.store(true, Ordering::Relaxed);
        abandon.cancel();
        if tokio::time::timeout(FLUSH_TIMEOUT, &mut committer_task)
            .await
            .is_err()
        {
            committer_task.abort();
        }
    } else {
        // Workers have all exited once the committer saw its inbox close.
        for w in workers {
            let _ = w.join();
        }
    }
    // The committer is gone, so the retry queue's inbox is closed: it
    // releases what it still holds and ends.
    if tokio::time::timeout(FLUSH_TIMEOUT, &mut retry_task)
        .await
        .is_err()
    {
        retry_task.abort();
    }
    finished.cancel();
    let _ = keepalive_task.await;
    hygiene::clean_up(
        link(TASK_TIMEOUT),
        &group,
        config.claim_idle,
        config.handover,
    )
    .await;
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
    Ok(RunReport {
        stats: snapshot,
        abandoned,
    })
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
    if interval.is_zero() {
        return;
    }
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
