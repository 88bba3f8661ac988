//! One pipeline — a stream, a group, a plugin and its settings — as a value:
//! [`Pipeline::start`] wires its tasks under the pipeline's own cancellation
//! token and supervisor and returns a [`PipelineHandle`];
//! [`PipelineHandle::drain`] stops it in order within a bounded time. The
//! process holds one handle per pipeline and replaces them on reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::claiming::DlqTarget;
use super::committer::Committer;
use super::dispatch::{Admission, Dispatcher};
use super::holder::Holder;
use super::inflight::{InFlight, LastFailures};
use super::reader::{self, Reader};
use super::reaper::Reaper;
use super::stats::{Stats, StatsSnapshot};
use super::supervise::{Supervisor, Task, TaskEnd};
use super::trimmer::Trimmer;
use super::watcher::PluginWatcher;
use super::workers::WorkerSet;
use super::{RunError, hygiene};
use crate::config::RunConfig;
use crate::plugin::{
    EmitTargets, LoadedPlugin, PluginEngine, PluginError, PluginSettings, PluginSlot,
};
use crate::stream::link::describe_target;
use crate::stream::retention::Retention;
use crate::stream::{GroupRef, LinkHealth, PayloadReader, RedisLink};

/// Response timeout of the committer's connection (big pipelines, scripts).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Response timeout of the background tasks' connections.
const TASK_TIMEOUT: Duration = Duration::from_secs(10);
/// What a drain may take beyond `--shutdown-grace`: the last flush of an
/// abandoned drain, releasing retries, and consumer clean-up, together.
pub const DRAIN_AFTER_GRACE: Duration = Duration::from_secs(5);
/// Consumer clean-up's share of whatever time is left.
const HYGIENE_BUDGET: Duration = Duration::from_secs(3);

/// What a drained pipeline did.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    /// Final counters.
    pub stats: StatsSnapshot,
    /// Whether in-flight work had to be abandoned at the end of the grace period.
    pub abandoned: bool,
}

/// A validated pipeline with its plugin compiled, ready to start.
#[derive(Debug)]
pub struct Prepared {
    /// The engine, kept to compile later versions of the plugin.
    pub engine: PluginEngine,
    /// Limits and configuration every version runs with.
    pub settings: PluginSettings,
    /// The version to start with.
    pub plugin: Arc<LoadedPlugin>,
}

/// Validates `config` and loads its plugin: everything that can be refused
/// before touching Redis. Blocking (compiles the component).
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
    let plugin = engine
        .load(&config.plugin, &settings)
        .map_err(|e: PluginError| RunError::Plugin(e))?;
    Ok(Prepared {
        engine,
        settings,
        plugin,
    })
}

/// The tasks of one running pipeline.
#[derive(Debug)]
struct Tasks {
    reader: Task,
    reaper: Task,
    trimmer: Option<Task>,
    watcher: Task,
    progress: Option<Task>,
    committer: Task,
    holder: Task,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// A running pipeline.
#[derive(Debug)]
pub struct PipelineHandle {
    config: Arc<RunConfig>,
    /// Cancels this pipeline's tasks (a child of the process's token).
    token: CancellationToken,
    tasks: Tasks,
    /// Ends the sentinel did not report: returned by it when the drain begins.
    sentinel: tokio::task::JoinHandle<Supervisor>,
    stats: Arc<Stats>,
    abandon_flag: Arc<AtomicBool>,
    abandon: CancellationToken,
    dlq: DlqTarget,
    cleanup_link: RedisLink,
}

/// A task of a pipeline that ended before the pipeline was stopped.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The pipeline.
    pub pipeline: String,
    /// The task and how it ended.
    pub end: TaskEnd,
}

/// Starting pipelines.
#[derive(Debug)]
pub struct Pipeline;

impl Pipeline {
    /// Starts `config`'s tasks under `token`. The first task to end before
    /// `token` is cancelled (or any panic) is sent to `failures`.
    pub fn start(
        config: RunConfig,
        prepared: Prepared,
        token: CancellationToken,
        failures: mpsc::UnboundedSender<Failure>,
    ) -> Result<PipelineHandle, RunError> {
        let Prepared {
            engine,
            settings,
            plugin,
        } = prepared;
        let info = config.redis.connection_info()?;
        let client = redis::Client::open(info).map_err(|e| RunError::RedisUrl(e.to_string()))?;
        let health = LinkHealth::new(describe_target(&client));
        let config = Arc::new(config);
        let span = tracing::info_span!("pipeline", name = %config.name);
        let supervisor = Supervisor::new(config.name.clone(), span.clone());
        let group = GroupRef {
            stream: config.stream.clone(),
            group: config.group.clone(),
            consumer: config.consumer.clone(),
        };
        span.in_scope(|| {
            tracing::info!(
                plugin = %plugin.identity(), compile_ms = plugin.compile_time().as_millis() as u64, cached = plugin.from_cache(),
                redis = %describe_target(&client), stream = %group.stream, group = %group.group,
                consumer = %group.consumer, concurrency = config.concurrency, dlq = %config.dlq,
                fresh_instance = config.fresh_instance,
                "starting"
            );
            log_limits(&config);
        });

        let limits = config.limits();
        let stats = Arc::new(Stats::default());
        let window = Arc::new(Semaphore::new(config.max_in_flight));
        let inflight = Arc::new(InFlight::default());
        let failures_seen = Arc::new(LastFailures::new(limits.remembered_failures()));
        let (work_tx, work_rx) = flume::unbounded();
        let (settled_tx, settled_rx) = mpsc::unbounded_channel();
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
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
            failures: failures_seen.clone(),
            retries: retry_tx,
        };
        let committer = supervisor.spawn("committer", committer.run(settled_rx, abandon.clone()));
        let holder = Holder {
            link: link(TASK_TIMEOUT),
            dlq: dlq.clone(),
            claim_idle: config.claim_idle,
            base: config.retry_backoff,
            inflight: inflight.clone(),
            stats: stats.clone(),
        };
        let holder = supervisor.spawn("holder", holder.run(retry_rx));
        let watcher = PluginWatcher {
            engine,
            settings,
            path: config.plugin.clone(),
            slot: slot.clone(),
            poll: config.watch_interval,
            watch: config.watch,
            stats: stats.clone(),
        };
        let watcher = supervisor.spawn("watcher", watcher.run(token.clone()));
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
            failures: failures_seen,
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
        let reaper = supervisor.spawn("reaper", reaper.run(token.clone()));
        let policy = Retention {
            maxlen: config.maxlen,
            max_age: config.max_age,
        };
        let trimmer = (policy.maxlen.is_some() || policy.max_age.is_some()).then(|| {
            let trimmer = Trimmer {
                link: link(TASK_TIMEOUT),
                stream: config.stream.clone(),
                policy,
                interval: config.trim_interval,
                stats: stats.clone(),
            };
            supervisor.spawn("trimmer", trimmer.run(token.clone()))
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
        let reader = supervisor.spawn("reader", reader.run(token.clone()));
        let progress = (!config.stats_interval.is_zero()).then(|| {
            supervisor.spawn(
                "progress",
                super::log_progress(stats.clone(), config.stats_interval, token.clone()),
            )
        });
        let sentinel = tokio::spawn(sentinel(
            supervisor,
            config.name.clone(),
            token.clone(),
            failures,
        ));
        Ok(PipelineHandle {
            config,
            token,
            tasks: Tasks {
                reader,
                reaper,
                trimmer,
                watcher,
                progress,
                committer,
                holder,
                workers,
            },
            sentinel,
            stats,
            abandon_flag,
            abandon,
            dlq,
            cleanup_link: link(TASK_TIMEOUT),
        })
    }
}

/// Reports the first task of a pipeline to end before the pipeline is
/// cancelled (ends after are the drain's doing), then hands the supervisor
/// back for the drain to look for panics.
async fn sentinel(
    mut supervisor: Supervisor,
    pipeline: String,
    token: CancellationToken,
    failures: mpsc::UnboundedSender<Failure>,
) -> Supervisor {
    let end = tokio::select! {
        biased;
        _ = token.cancelled() => return supervisor,
        end = supervisor.next_end() => end,
    };
    // A task may end on its own once the drain began (a signal that raced
    // this select); before that, or by a panic, it is a failure.
    if !token.is_cancelled() || end.how.starts_with("panicked") {
        let _ = failures.send(Failure { pipeline, end });
    }
    supervisor
}

fn log_limits(config: &RunConfig) {
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
}

impl PipelineHandle {
    /// Stops the pipeline: reading stops at once, in-flight entries get
    /// `--shutdown-grace` to finish, then whatever is left is abandoned
    /// (it stays pending for the next owner). Takes at most the grace plus
    /// [`DRAIN_AFTER_GRACE`]. `Err` names a task that panicked meanwhile.
    pub async fn drain(self) -> Result<PipelineReport, Failure> {
        let Self {
            config,
            token,
            mut tasks,
            sentinel,
            stats,
            abandon_flag,
            abandon,
            dlq,
            cleanup_link,
        } = self;
        let span = tracing::info_span!("pipeline", name = %config.name);
        let started = Instant::now();
        let grace_end = started + config.shutdown_grace;
        let end = grace_end + DRAIN_AFTER_GRACE;
        token.cancel();
        span.in_scope(|| tracing::info!(grace = %humantime::format_duration(config.shutdown_grace), "draining: reading stopped, finishing in-flight entries"));
        // Reader and reaper hold the job queue open; once both are gone the
        // workers drain what was read, then the committer sees its inbox close.
        let until_grace = || grace_end.saturating_duration_since(Instant::now());
        let stoppers = [
            Some(&mut tasks.reader),
            Some(&mut tasks.reaper),
            tasks.trimmer.as_mut(),
            Some(&mut tasks.watcher),
            tasks.progress.as_mut(),
        ];
        for task in stoppers.into_iter().flatten() {
            task.finish_within(until_grace()).await;
        }
        let abandoned = !tasks.committer.finish_within_quietly(until_grace()).await;
        let until_end = || end.saturating_duration_since(Instant::now());
        if abandoned {
            span.in_scope(|| tracing::warn!("shutdown grace period over: abandoning unfinished entries (they stay pending for the next owner)"));
            abandon_flag.store(true, Ordering::Relaxed);
            abandon.cancel();
            tasks.committer.finish_within(until_end()).await;
        } else {
            // Workers have all exited once the committer saw its inbox close.
            for w in tasks.workers {
                let _ = w.join();
            }
        }
        // The committer is gone, so the holder's inbox is closed: it releases
        // what it still holds and ends.
        tasks.holder.finish_within(until_end()).await;
        let hygiene = hygiene::clean_up(
            cleanup_link,
            &dlq,
            config.claim_idle,
            config.handover,
            &stats,
        )
        .instrument(span.clone());
        let budget = until_end().min(HYGIENE_BUDGET);
        if tokio::time::timeout(budget, hygiene).await.is_err() {
            span.in_scope(|| {
                tracing::warn!("consumer clean-up cut short by the shutdown deadline")
            });
        }
        let panicked = match sentinel.await {
            Ok(mut supervisor) => {
                if !supervisor.all_ended(until_end()).await {
                    span.in_scope(|| {
                        tracing::warn!(
                            "tasks still running at the shutdown deadline are left behind"
                        )
                    });
                }
                supervisor.panicked()
            }
            Err(e) => Some(TaskEnd {
                task: "sentinel".into(),
                how: format!("ended abnormally: {e}"),
            }),
        };
        let snapshot = stats.snapshot();
        span.in_scope(|| {
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
            )
        });
        match panicked {
            Some(end) => Err(Failure {
                pipeline: config.name.clone(),
                end,
            }),
            None => Ok(PipelineReport {
                stats: snapshot,
                abandoned,
            }),
        }
    }
}
