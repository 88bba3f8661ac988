//! The plugin watcher: a change to the `--plugin` file (filesystem
//! notification, a periodic stat as fallback, or SIGHUP) reloads it — read
//! whole, compiled off the async runtime, checked against the `handler` world
//! — and swaps it in. With `--no-watch` only SIGHUP reloads. A file that fails to load (torn write, garbage, wrong
//! world) is reported and the previous version keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::file_watch::{FileWatch, Trigger};
use super::plugin_log::{PluginEvent, PluginLog, ReloadOutcome};
use super::stats::Stats;
use crate::plugin::{PluginEngine, PluginSettings, PluginSlot, content_hash};

/// Watches the plugin file and swaps new versions in.
#[derive(Debug)]
pub struct PluginWatcher {
    /// The engine that compiled the version in service.
    pub engine: PluginEngine,
    /// Limits and configuration for new versions.
    pub settings: PluginSettings,
    /// The `--plugin` path.
    pub path: PathBuf,
    /// Where versions are swapped.
    pub slot: Arc<PluginSlot>,
    /// How often to stat the file when notifications are missed (zero: never).
    pub poll: Duration,
    /// Whether to watch the file at all (`false`: SIGHUP only).
    pub watch: bool,
    /// Run counters.
    pub stats: Arc<Stats>,
    /// The pipeline, as named in the log.
    pub pipeline: String,
    /// Where reloads are recorded for the dashboard.
    pub log: Arc<PluginLog>,
}

impl PluginWatcher {
    /// Watches until `cancel` fires, even in the middle of a compile.
    pub async fn run(self, cancel: CancellationToken) {
        let mut file = FileWatch::new(&self.path, self.watch, self.poll, "plugin");
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                trigger = file.next() => {
                    if trigger == Trigger::Hangup {
                        tracing::info!(path = %self.path.display(), "SIGHUP: reloading the plugin");
                    }
                }
            }
            tokio::select! {
                biased;
                // The compile goes on in its thread; its result is dropped.
                _ = cancel.cancelled() => return,
                () = self.reload() => {}
            }
        }
    }

    /// Loads the file and swaps it in if it is a new, valid version.
    async fn reload(&self) {
        let current = self.slot.current();
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) => {
                self.refused(
                    &current.identity(),
                    None,
                    format!("cannot read the plugin file: {e}"),
                );
                tracing::error!(path = %self.path.display(), error = %e, serving = %current.identity(),
                    "cannot read the plugin file; the previous version keeps serving");
                return;
            }
        };
        let judged = content_hash(&bytes);
        if judged == current.version() {
            tracing::debug!(plugin = %current.identity(), "plugin file unchanged");
            return;
        }
        let (engine, settings, path) = (
            self.engine.clone(),
            self.settings.clone(),
            self.path.clone(),
        );
        let name = current.name().to_owned();
        let started = Instant::now();
        let loaded =
            tokio::task::spawn_blocking(move || engine.load_bytes(&path, &name, &bytes, &settings))
                .await;
        match loaded {
            Ok(Ok(new)) => {
                let old = self.slot.swap(new.clone());
                self.stats.swapped();
                self.log.record(PluginEvent {
                    seq: 0,
                    at_ms: 0,
                    pipeline: self.pipeline.clone(),
                    path: self.path.clone(),
                    outcome: ReloadOutcome::Swapped,
                    judged: Some(judged),
                    from: old.identity(),
                    to: Some(new.identity()),
                    error: None,
                });
                tracing::info!(from = %old.identity(), to = %new.identity(), compile_ms = new.compile_time().as_millis() as u64, cached = new.from_cache(),
                    took_ms = started.elapsed().as_millis() as u64, "plugin swapped: new calls use the new version");
            }
            Ok(Err(e)) => {
                self.refused(&current.identity(), Some(judged), e.to_string());
                tracing::error!(error = %e, serving = %current.identity(), "plugin reload refused; the previous version keeps serving");
            }
            Err(e) => {
                self.refused(
                    &current.identity(),
                    Some(judged),
                    format!("the compile crashed: {e}"),
                );
                tracing::error!(error = %e, serving = %current.identity(), "plugin reload crashed; the previous version keeps serving");
            }
        }
    }

    /// Counts and records a refused file (`judged`: its content hash).
    fn refused(&self, serving: &str, judged: Option<String>, error: String) {
        self.stats.reload_failed();
        self.log.record(PluginEvent {
            seq: 0,
            at_ms: 0,
            pipeline: self.pipeline.clone(),
            path: self.path.clone(),
            outcome: ReloadOutcome::Refused,
            judged,
            from: serving.to_owned(),
            to: None,
            error: Some(error),
        });
    }
}
