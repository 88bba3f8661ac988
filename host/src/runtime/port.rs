//! The one port through which a face (the HTTP side and its dashboard)
//! asks the running process for anything: views of the pipelines running
//! now (their counters, in-flight entries, plugin in service and whether a
//! task of theirs failed), the pipelines the configuration declares, the
//! Redis connection, whether the process is draining, the `[http]`
//! settings in force; controls (add or remove a consumer, which the process
//! takes through the same path as a config reload); and plugin uploads
//! ([`super::uploads`]). The process keeps it current as pipelines start,
//! drain and reload; nothing here is on the hot path (the counters are the
//! pipelines' own atomics). [`Face`] is what the process runs beside its
//! pipelines to serve it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use super::call_times::{CallTimes, CallTimesSnapshot};
use super::controls::Controls;
pub use super::controls::MAX_CRASH;
use super::inflight::InFlight;
pub use super::plugin_log::{PluginEvent, PluginLog, ReloadOutcome};
use super::stats::Stats;
use super::supervise::TaskEnd;
use super::uploads::Uploads;
pub use super::uploads::{UploadError, UploadTurn, UploadVerdict};
use crate::config::{Dashboard, RedisConfig, RunConfig};
use crate::plugin::PluginSlot;
use crate::vocab::retention::Retention;

/// A face the process serves beside its pipelines (the HTTP side): started
/// with the port before any plugin compiles, watched like a task (its end
/// before shutdown stops the process), and stopped last, after every
/// pipeline has drained. `main` makes it (binding its listener first, so a
/// taken address is a start-up error) and hands it to [`super::run`].
pub trait Face: Send + std::fmt::Debug {
    /// Its task's name, in logs and failures.
    fn name(&self) -> &'static str;
    /// Serves from `port` until `stop` fires, then lets what is in progress
    /// finish.
    fn serve(
        self: Box<Self>,
        port: Arc<Port>,
        stop: CancellationToken,
    ) -> futures_util::future::BoxFuture<'static, ()>;
}

/// The running process, as its faces see it.
#[derive(Debug, Default)]
pub struct Port {
    running: RwLock<BTreeMap<String, PipelineView>>,
    /// Names of the pipelines the configuration declares.
    declared: RwLock<Vec<String>>,
    /// The partitioned streams the configuration declares, each whole
    /// (whichever of its partitions this process runs).
    partitioned: RwLock<Vec<PartitionedView>>,
    /// The connection every pipeline uses.
    redis: RwLock<Option<RedisConfig>>,
    draining: AtomicBool,
    /// Plugin reloads of every pipeline.
    plugin_log: Arc<PluginLog>,
    /// The process's inbox for consumers added and removed at run time.
    control: Mutex<Option<mpsc::UnboundedSender<Control>>>,
    /// Whom the listener answers and what the dashboard may do: set at
    /// start, replaced by a reload.
    http: watch::Sender<Arc<Dashboard>>,
    /// Plugin uploads in progress.
    uploads: Arc<Uploads>,
}

/// A change to the running pipelines asked for by a face.
#[derive(Debug)]
pub enum Control {
    /// Start another consumer of `group` (on `stream`, if given).
    Add {
        /// The group.
        group: String,
        /// Its stream, when the group name alone is ambiguous.
        stream: Option<String>,
        /// The new pipeline's name (also its consumer name), or why not.
        reply: oneshot::Sender<Result<String, ControlError>>,
    },
    /// Drain and stop a pipeline.
    Remove {
        /// Its name.
        name: String,
        /// Why it could not be removed, or nothing once drained.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}

/// Why a [`Control`] was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// No pipeline has that name.
    #[error("no running pipeline is named {0:?}")]
    NoSuchPipeline(String),
    /// No running pipeline consumes as that group.
    #[error("no running pipeline consumes as group {0:?}")]
    NoSuchGroup(String),
    /// It cannot be done in this state.
    #[error("{0}")]
    Conflict(String),
    /// Redis could not be asked what the change needs to know.
    #[error("redis: {0}")]
    Redis(String),
    /// The new pipeline could not start.
    #[error("{0}")]
    Failed(String),
    /// The process is stopping (or does not take changes).
    #[error("the process is stopping")]
    Stopping,
}

/// A partitioned stream a declared pipeline reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionedView {
    /// The declared pipeline's name.
    pub pipeline: String,
    /// The logical stream.
    pub stream: String,
    /// How many partitions it is read as.
    pub partitions: u32,
    /// The group reading it.
    pub group: String,
    /// Its retention policy, if any.
    pub retention: Option<Retention>,
}

/// One running pipeline.
#[derive(Debug, Clone)]
pub struct PipelineView {
    /// The pipeline's name.
    pub name: String,
    /// Its configuration.
    pub config: Arc<RunConfig>,
    /// The dashboard's controls of it.
    pub controls: Arc<Controls>,
    /// Its stream.
    pub stream: String,
    /// Its consumer group.
    pub group: String,
    /// Its dead-letter stream.
    pub dlq: String,
    /// Its retention policy, if any.
    pub retention: Option<Retention>,
    /// Its counters.
    pub stats: Arc<Stats>,
    /// The entries it holds now.
    pub inflight: Arc<InFlight>,
    /// The plugin version in service.
    pub plugin: Arc<PluginSlot>,
    /// Set by its sentinel when a task ended unexpectedly.
    pub health: Arc<PipelineHealth>,
}

/// Whether every task of a pipeline still runs.
#[derive(Debug, Default)]
pub struct PipelineHealth {
    failed: Mutex<Option<TaskEnd>>,
}

impl PipelineHealth {
    /// Records the first task to have ended unexpectedly.
    pub fn failed(&self, end: &TaskEnd) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.get_or_insert_with(|| end.clone());
    }

    /// The task that ended unexpectedly, if one did.
    pub fn failure(&self) -> Option<TaskEnd> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Port {
    /// The port of a process that will run `declared` pipelines against `redis`.
    pub fn new(declared: Vec<String>, redis: Option<RedisConfig>) -> Arc<Self> {
        let port = Self::default();
        port.declare(declared, redis);
        Arc::new(port)
    }

    /// The configuration (re)declares these pipelines, on this connection.
    pub fn declare(&self, names: Vec<String>, redis: Option<RedisConfig>) {
        *write(&self.declared) = names;
        *write(&self.redis) = redis;
    }

    /// A pipeline started.
    pub fn started(&self, view: PipelineView) {
        write(&self.running).insert(view.name.clone(), view);
    }

    /// A pipeline began to drain: it no longer serves.
    pub fn stopping(&self, name: &str) {
        write(&self.running).remove(name);
    }

    /// The whole process began to drain.
    pub fn draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The process takes [`Control`]s on this channel.
    pub fn take_controls(&self, inbox: mpsc::UnboundedSender<Control>) {
        *self.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(inbox);
    }

    /// Another consumer of `group` (on `stream`, or the group's stream
    /// here): a copy of the group's first pipeline under the next free name
    /// of its family, started through the same path as a config reload.
    /// Answers its name (also its consumer name) once it runs.
    pub async fn add_consumer(
        &self,
        group: &str,
        stream: Option<&str>,
    ) -> Result<String, ControlError> {
        let (group, stream) = (group.to_owned(), stream.map(str::to_owned));
        self.ask(|reply| Control::Add {
            group,
            stream,
            reply,
        })
        .await
    }

    /// Drains and removes pipeline `name`; refused for the last consumer of
    /// its group here.
    pub async fn remove_consumer(&self, name: &str) -> Result<(), ControlError> {
        let name = name.to_owned();
        self.ask(|reply| Control::Remove { name, reply }).await
    }

    /// Sends `make(reply)` to the process and waits for its answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ControlError>>) -> Control,
    ) -> Result<T, ControlError> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|inbox| inbox.send(make(reply)).is_ok());
        if !sent {
            return Err(ControlError::Stopping);
        }
        answer.await.unwrap_or(Err(ControlError::Stopping))
    }

    /// Puts `access` in force on the listener, from its next request on.
    pub fn set_http(&self, access: Dashboard) {
        self.http.send_if_modified(|now| {
            let changed = **now != access;
            if changed {
                *now = Arc::new(access);
            }
            changed
        });
    }

    /// Whom the listener answers and what the dashboard may do, now.
    pub fn http(&self) -> Arc<Dashboard> {
        self.http.borrow().clone()
    }

    /// Notified whenever [`Port::set_http`] changes something.
    pub fn watch_http(&self) -> watch::Receiver<Arc<Dashboard>> {
        self.http.subscribe()
    }

    /// Waits for the turn of uploads to the plugin file of `pipeline`; the
    /// face reads the new version's bytes only then, and installs them
    /// through the turn.
    pub async fn upload(&self, pipeline: &str) -> Result<UploadTurn, UploadError> {
        let view = read(&self.running)
            .get(pipeline)
            .cloned()
            .ok_or_else(|| UploadError::NoSuchPipeline(pipeline.to_owned()))?;
        self.uploads.wait_turn(view, self.plugin_log()).await
    }

    /// Plugin reloads of every pipeline.
    pub fn plugin_log(&self) -> Arc<PluginLog> {
        self.plugin_log.clone()
    }

    /// Whether the whole process is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The running pipelines, by name.
    pub fn running(&self) -> Vec<PipelineView> {
        read(&self.running).values().cloned().collect()
    }

    /// The pipelines the configuration declares.
    pub fn declared(&self) -> Vec<String> {
        read(&self.declared).clone()
    }

    /// The configuration declares these partitioned streams.
    pub fn declare_partitioned(&self, streams: Vec<PartitionedView>) {
        *write(&self.partitioned) = streams;
    }

    /// The partitioned streams the configuration declares.
    pub fn partitioned(&self) -> Vec<PartitionedView> {
        read(&self.partitioned).clone()
    }

    /// The Redis connection of the configuration.
    pub fn redis(&self) -> Option<RedisConfig> {
        read(&self.redis).clone()
    }
}
