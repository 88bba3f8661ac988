//! How the tasks of one pipeline are wired together: the shared pieces
//! (counters, the in-flight window, the DLQ target, links to Redis) and one
//! method per side — committing, watching the plugin, working, reading —
//! each spawning its tasks under the pipeline's supervisor.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::RunError;
use super::committer::{Committer, Outbox};
use super::controls::Controls;
use super::dead_letters::DlqTarget;
use super::dispatch::{Dispatcher, WeakDispatcher};
use super::forwarder::Forwarder;
use super::holder::{Holder, Retry};
use super::holdings::{GroupHoldings, Holdings};
use super::inflight::{InFlight, LastFailures};
use super::job::{Job, Settled};
use super::ordering::KeyOrder;
use super::plugin_log::PluginLog;
use super::port::{PipelineHealth, PipelineView};
use super::reader::{self, Reader};
use super::reaper::Reaper;
use super::stats::Stats;
use super::supervise::{Supervisor, Task};
use super::trimmer::Trimmer;
use super::watcher::PluginWatcher;
use super::workers::WorkerSet;
use crate::config::{CrossSlotEmits, RedisEndpoint, RunConfig};
use crate::plugin::{LoadedPlugin, PluginEngine, PluginSettings, PluginSlot};
use crate::stream::cluster::{Links, Route, Router};
use crate::stream::{GroupRef, LinkHealth, PayloadReader, RedisLink};
use crate::vocab::admission::Admission;
use crate::vocab::backoff::Backoff;
use crate::vocab::partition;

/// Response timeout of the committer's connection (big pipelines, scripts).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Response timeout of the background tasks' connections.
pub const TASK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the tasks of one pipeline share.
#[derive(Debug)]
pub struct Wiring {
    /// The pipeline's configuration.
    pub config: Arc<RunConfig>,
    /// Cancels the pipeline's tasks.
    pub token: CancellationToken,
    /// Starts and watches the tasks.
    pub supervisor: Supervisor,
    /// Run counters.
    pub stats: Arc<Stats>,
    /// Set when the grace period is over: workers drop what is left.
    pub abandon_flag: Arc<AtomicBool>,
    /// Cancelled when the grace period is over: the committer flushes and ends.
    pub abandon: CancellationToken,
    /// Stream, group, consumer, DLQ and the plugin in service.
    pub dlq: DlqTarget,
    route: Route,
    endpoint: Arc<RedisEndpoint>,
    router: Option<Arc<Router>>,
    health: Arc<LinkHealth>,
    window: Arc<Semaphore>,
    inflight: Arc<InFlight>,
    /// What every pipeline of this process holds of the same group.
    holdings: Arc<GroupHoldings>,
    failures: Arc<LastFailures>,
    admission: Admission,
    slot: Arc<PluginSlot>,
    /// The dashboard's controls of this pipeline.
    controls: Arc<Controls>,
    /// Where the watcher records reloads.
    plugin_log: Arc<PluginLog>,
    /// The retry channel, until [`Wiring::commit_side`] gives its ends to the
    /// committer and the holder: nothing else may hold the sender, or the
    /// holder's inbox would never close.
    retries: Option<(mpsc::UnboundedSender<Retry>, mpsc::UnboundedReceiver<Retry>)>,
}

/// The tasks that read.
#[derive(Debug)]
pub struct ReadSide {
    /// XREADGROUP.
    pub reader: Task,
    /// Reclaims idle pending entries.
    pub reaper: Task,
    /// Retention, if any is configured.
    pub trimmer: Option<Task>,
    /// The progress line, unless disabled.
    pub progress: Option<Task>,
}

impl Wiring {
    /// The shared pieces of a pipeline running `config` with `plugin`.
    pub fn new(
        config: RunConfig,
        plugin: Arc<LoadedPlugin>,
        token: CancellationToken,
        plugin_log: Arc<PluginLog>,
        holdings: &Holdings,
        router: Option<&Arc<Router>>,
    ) -> Result<Self, RunError> {
        let endpoint = Arc::new(config.redis.endpoint()?);
        // On a cluster every key of the pipeline shares the stream's slot
        // (checked at start-up): its connections go to that slot's node.
        let route = Route::of_key(&endpoint, router, &config.stream);
        let target = match &route {
            Route::Direct(e) => e.target().to_owned(),
            Route::Slot(_, slot) => format!("cluster slot {slot} (seed {})", endpoint.target()),
        };
        let config = Arc::new(config);
        let span = tracing::info_span!("pipeline", name = %config.name);
        let group = GroupRef {
            stream: config.stream.clone(),
            group: config.group.clone(),
            consumer: config.consumer.clone(),
            fence: config.fence.clone(),
        };
        span.in_scope(|| {
            tracing::info!(
                plugin = %plugin.identity(), compile_ms = plugin.compile_time().as_millis() as u64, cached = plugin.from_cache(),
                redis = %target, stream = %group.stream, group = %group.group,
                consumer = %group.consumer, concurrency = config.concurrency, dlq = %config.dlq,
                fresh_instance = config.fresh_instance, order_by = ?config.order_by,
                "starting"
            );
            log_limits(&config);
        });
        let slot = PluginSlot::new(plugin);
        let inflight = Arc::new(InFlight::default());
        let holdings = holdings.join(&group.stream, &group.group, &group.consumer, &inflight);
        Ok(Self {
            supervisor: Supervisor::new(config.name.clone(), span),
            stats: Arc::new(Stats::default()),
            abandon_flag: Arc::new(AtomicBool::new(false)),
            abandon: CancellationToken::new(),
            dlq: DlqTarget {
                key: config.dlq.clone(),
                maxlen: config.dlq_maxlen,
                group,
                plugin: slot.clone(),
            },
            window: Arc::new(Semaphore::new(config.max_in_flight)),
            inflight,
            holdings,
            failures: Arc::new(LastFailures::new(config.limits().remembered_failures())),
            admission: Admission {
                max_deliveries: config.max_deliveries,
                max_entry_size: config.max_entry_size,
                max_fields: config.max_fields,
            },
            slot,
            controls: Arc::new(Controls::default()),
            plugin_log,
            retries: Some(mpsc::unbounded_channel()),
            route,
            endpoint,
            router: router.cloned(),
            health: LinkHealth::new(target),
            token,
            config,
        })
    }

    /// What the metrics and health endpoints see of this pipeline.
    pub fn view(&self, health: Arc<PipelineHealth>) -> PipelineView {
        PipelineView {
            name: self.config.name.clone(),
            config: self.config.clone(),
            controls: self.controls.clone(),
            stream: self.config.stream.clone(),
            group: self.config.group.clone(),
            dlq: self.config.dlq.clone(),
            retention: self.config.retention(),
            stats: self.stats.clone(),
            inflight: self.inflight.clone(),
            plugin: self.slot.clone(),
            health,
        }
    }

    /// The source's outbox, when on a cluster cross-slot emits go through one.
    fn outbox(&self) -> Option<Outbox> {
        let forwarding =
            self.config.redis.cluster && self.config.cross_slot_emits == CrossSlotEmits::Outbox;
        let key = partition::outbox_key(&self.config.stream).filter(|_| forwarding)?;
        Some(Outbox {
            key,
            slot: partition::key_slot(self.config.stream.as_bytes()),
        })
    }

    /// The forwarder of the source's outbox, when it has one, and its stop.
    pub fn forwarder(&self) -> Option<(Task, CancellationToken)> {
        let outbox = self.outbox()?;
        let stop = CancellationToken::new();
        let forwarder = Forwarder {
            outbox: outbox.key,
            link: self.link(self.config.block + reader::READ_TIMEOUT_SLACK),
            targets: Links::new(
                self.endpoint.clone(),
                self.router.clone(),
                self.health.clone(),
                TASK_TIMEOUT,
                Backoff::for_redis(),
            ),
            window: self.config.dedup_window,
            block: self.config.block,
            stats: self.stats.clone(),
        };
        let task = self
            .supervisor
            .spawn("forwarder", forwarder.run(stop.clone()));
        Some((task, stop))
    }

    /// A connection of this pipeline's with its own response timeout.
    pub fn link(&self, timeout: Duration) -> RedisLink {
        RedisLink::routed(self.route.clone(), self.health.clone(), timeout)
    }

    fn payloads(&self, timeout: Duration) -> PayloadReader {
        PayloadReader::routed(self.route.clone(), timeout, self.admission.entry_limits())
    }

    /// The committer (the only writer of acks and dead letters) and the
    /// holder (keep-alive and retry release), joined by the retry channel.
    pub fn commit_side(
        &mut self,
        settled: mpsc::UnboundedReceiver<Settled>,
        dispatch: WeakDispatcher,
    ) -> Result<(Task, Task), RunError> {
        let Some((retries, inbox)) = self.retries.take() else {
            return Err(RunError::Spawn(std::io::Error::other(
                "the commit side of a pipeline was started twice",
            )));
        };
        let committer = Committer {
            link: self.link(COMMIT_TIMEOUT),
            dlq: self.dlq.clone(),
            stats: self.stats.clone(),
            inflight: self.inflight.clone(),
            failures: self.failures.clone(),
            retries,
            dispatch: dispatch.clone(),
            outbox: self.outbox(),
            commit_wait: self.config.commit_wait,
        };
        let holder = Holder {
            link: self.link(TASK_TIMEOUT),
            dlq: self.dlq.clone(),
            claim_idle: self.config.claim_idle,
            base: self.config.retry_backoff,
            inflight: self.inflight.clone(),
            stats: self.stats.clone(),
            dispatch,
        };
        Ok((
            self.supervisor
                .spawn("committer", committer.run(settled, self.abandon.clone())),
            self.supervisor.spawn("holder", holder.run(inbox)),
        ))
    }

    /// The plugin watcher, hot-swapping new versions of the file.
    pub fn watcher(&self, engine: PluginEngine, settings: PluginSettings) -> Task {
        let watcher = PluginWatcher {
            engine,
            settings,
            path: self.config.plugin.clone(),
            slot: self.slot.clone(),
            poll: self.config.watch_interval,
            watch: self.config.watch,
            stats: self.stats.clone(),
            pipeline: self.config.name.clone(),
            log: self.plugin_log.clone(),
        };
        self.supervisor
            .spawn("watcher", watcher.run(self.token.clone()))
    }

    /// The worker threads.
    pub fn workers(
        &self,
        jobs: flume::Receiver<Job>,
        settled: mpsc::UnboundedSender<Settled>,
    ) -> Result<Vec<std::thread::JoinHandle<()>>, RunError> {
        Ok(WorkerSet {
            plugin: self.slot.clone(),
            jobs,
            settled,
            abandon: self.abandon_flag.clone(),
            group: self.dlq.group.clone(),
            stats: self.stats.clone(),
            fresh_instance: self.config.fresh_instance,
        }
        .spawn(self.config.concurrency, &self.supervisor)?)
    }

    /// Where the reader and the reaper hand entries over.
    pub fn dispatcher(
        &self,
        work: flume::Sender<Job>,
        settled: mpsc::UnboundedSender<Settled>,
    ) -> Dispatcher {
        Dispatcher {
            work,
            settled,
            plugin: self.slot.clone(),
            admission: self.admission,
            inflight: self.inflight.clone(),
            failures: self.failures.clone(),
            controls: self.controls.clone(),
            order: self
                .config
                .order_by
                .as_deref()
                .map(|field| Arc::new(KeyOrder::new(field))),
        }
    }

    /// The reader, the reaper, the trimmer and the progress line.
    pub fn read_side(&self, dispatch: Dispatcher) -> ReadSide {
        let config = &self.config;
        let dispatch_order = dispatch.order.clone();
        let reaper = Reaper {
            link: self.link(TASK_TIMEOUT),
            payloads: self.payloads(TASK_TIMEOUT),
            dlq: self.dlq.clone(),
            claim_idle: config.claim_idle,
            interval: config.claim_interval,
            batch: config.batch,
            window: self.window.clone(),
            dispatch: dispatch.clone(),
            stats: self.stats.clone(),
            requests: self.controls.take_requests(),
            holdings: self.holdings.clone(),
        };
        let trimmer = config.retention().map(|policy| Trimmer {
            link: self.link(TASK_TIMEOUT),
            stream: config.stream.clone(),
            policy,
            interval: config.trim_interval,
            stats: self.stats.clone(),
        });
        let reader = Reader {
            link: self.link(config.block + reader::READ_TIMEOUT_SLACK),
            group: self.dlq.group.clone(),
            config: config.clone(),
            window: self.window.clone(),
            dispatch,
            stats: self.stats.clone(),
            payloads: self.payloads(reader::READ_TIMEOUT_SLACK),
            dlq: self.dlq.clone(),
            holdings: self.holdings.clone(),
        };
        let (s, token) = (&self.supervisor, &self.token);
        ReadSide {
            reaper: s.spawn("reaper", reaper.run(token.clone())),
            trimmer: trimmer.map(|t| s.spawn("trimmer", t.run(token.clone()))),
            reader: s.spawn("reader", reader.run(token.clone())),
            progress: (!config.stats_interval.is_zero()).then(|| {
                let progress = super::log_progress(
                    self.stats.clone(),
                    dispatch_order.clone(),
                    config.stats_interval,
                    token.clone(),
                );
                s.spawn("progress", progress)
            }),
        }
    }
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
