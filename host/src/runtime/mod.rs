//! What happens to entries: a process of supervised pipelines
//! ([`process`]), each a set of tasks ([`pipeline`]) — reader, workers,
//! committer, holder, reaper, trimmer, plugin watcher — under one
//! cancellation tree (root → pipeline → task), with an orderly drain; and
//! the one [`port`] through which faces (the HTTP side) ask it anything.

mod call_times;
mod claiming;
mod committer;
mod controls;
mod dead_letters;
mod dispatch;
mod file_watch;
mod forwarder;
mod holder;
mod holdings;
mod hygiene;
mod inflight;
mod job;
mod leases;
mod ordering;
mod pipeline;
mod plugin_log;
pub mod port;
mod prepare;
mod process;
mod reader;
mod reaper;
mod reload;
mod stats;
mod supervise;
mod trimmer;
mod uploads;
mod watcher;
mod wiring;
mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use pipeline::{DRAIN_AFTER_GRACE, PipelineReport};
pub use prepare::{Prepared, prepare};
pub use process::run;
pub use stats::{Stats, StatsSnapshot};
pub use supervise::{Supervisor, TaskEnd};

use crate::config::{ConfigError, PipelineError};
use crate::plugin::PluginError;

/// Why a run could not start, or ended in failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A value is out of range or contradicts another.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A pipeline of the configuration cannot work.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The plugin file was refused.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A thread could not be started.
    #[error("cannot start worker threads: {0}")]
    Spawn(#[from] std::io::Error),
    /// A task ended before shutdown; every pipeline was drained.
    #[error(
        "the {task} task of pipeline {pipeline:?} {how}; every pipeline was drained and stopped (unfinished entries stay pending for the next owner)"
    )]
    TaskFailed {
        /// Which pipeline.
        pipeline: String,
        /// Which task.
        task: String,
        /// How it ended.
        how: String,
    },
    /// A face the process served (the HTTP side) ended before shutdown;
    /// every pipeline was drained.
    #[error(
        "the {task} task {how}; every pipeline was drained and stopped (unfinished entries stay pending for the next owner)"
    )]
    ProcessTaskFailed {
        /// Which task.
        task: String,
        /// How it ended.
        how: String,
    },
}

/// What a finished run did, per pipeline (the last run of each name).
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Each pipeline's report, by name.
    pub pipelines: BTreeMap<String, PipelineReport>,
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
async fn log_progress(
    stats: Arc<Stats>,
    order: Option<Arc<ordering::KeyOrder>>,
    interval: Duration,
    cancel: CancellationToken,
) {
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
                waiting_for_key = order.as_ref().map(|o| o.waiting()),
                "progress"
            );
            last = now;
        }
    }
}
