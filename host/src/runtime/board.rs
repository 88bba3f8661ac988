//! What the HTTP side sees of the running process: the pipelines running
//! now (their counters, in-flight entries, plugin in service and whether a
//! task of theirs failed), the pipelines the configuration declares, the
//! Redis connection, and whether the process is draining. The process keeps
//! it current as pipelines start, drain and reload; nothing here is on the
//! hot path (the counters are the pipelines' own atomics).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::inflight::InFlight;
use super::stats::Stats;
use super::supervise::TaskEnd;
use crate::config::RedisConfig;
use crate::plugin::PluginSlot;
use crate::stream::retention::Retention;

/// The running process, as the metrics and health endpoints see it.
#[derive(Debug, Default)]
pub struct Board {
    running: RwLock<BTreeMap<String, PipelineView>>,
    /// Names of the pipelines the configuration declares.
    declared: RwLock<Vec<String>>,
    /// The connection every pipeline uses.
    redis: RwLock<Option<RedisConfig>>,
    draining: AtomicBool,
}

/// One running pipeline.
#[derive(Debug, Clone)]
pub struct PipelineView {
    /// The pipeline's name.
    pub name: String,
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

impl Board {
    /// A board for a process that will run `declared` pipelines against `redis`.
    pub fn new(declared: Vec<String>, redis: Option<RedisConfig>) -> Arc<Self> {
        let board = Self::default();
        board.declare(declared, redis);
        Arc::new(board)
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

    /// The Redis connection of the configuration.
    pub fn redis(&self) -> Option<RedisConfig> {
        read(&self.redis).clone()
    }
}
