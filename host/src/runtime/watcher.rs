//! The plugin watcher: a change to the `--plugin` file (filesystem
//! notification, a periodic stat as fallback, or SIGHUP) reloads it — read
//! whole, compiled off the async runtime, checked against the `handler` world
//! — and swaps it in. With `--no-watch` only SIGHUP reloads. A file that fails to load (torn write, garbage, wrong
//! world) is reported and the previous version keeps serving.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use crate::plugin::{PluginEngine, PluginSettings, PluginSlot, content_hash};

/// Quiet time after the last change before reloading, so a file written in
/// several steps is read once, whole.
const DEBOUNCE: Duration = Duration::from_millis(150);

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
}

/// What identifies a file version without reading it.
fn fingerprint(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

impl PluginWatcher {
    /// Watches until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let (tx, mut changes) = mpsc::unbounded_channel::<()>();
        let _fs_watcher = if self.watch {
            self.watch_directory(tx)
        } else {
            None
        };
        let poll_every = if self.watch {
            self.poll
        } else {
            Duration::ZERO
        };
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; plugin reloads follow file changes only");
                None
            }
        };
        let mut seen = fingerprint(&self.path);
        loop {
            let poll = async {
                if poll_every.is_zero() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(poll_every).await;
            };
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                Some(()) = changes.recv() => {}
                _ = hup => tracing::info!(path = %self.path.display(), "SIGHUP: reloading the plugin"),
                _ = poll => {
                    if fingerprint(&self.path) == seen {
                        continue;
                    }
                }
            }
            // Let a burst of writes settle before reading the file.
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(DEBOUNCE) => break,
                    Some(()) = changes.recv() => {}
                }
            }
            seen = fingerprint(&self.path);
            self.reload().await;
        }
    }

    /// Notifications for the plugin's directory (editors and deploy tools
    /// replace files by rename, which a watch on the file itself misses).
    fn watch_directory(&self, tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
        let name = self.path.file_name()?.to_owned();
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let handler = move |res: notify::Result<notify::Event>| {
            // Opening or reading the file (our own reload does) is no change.
            if let Ok(event) = res
                && !matches!(event.kind, notify::EventKind::Access(_))
                && event
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(name.as_os_str()))
            {
                let _ = tx.send(());
            }
        };
        let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
            w.watch(&dir, RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), poll = %humantime::format_duration(self.poll),
                    "file notifications unavailable; watching the plugin by polling");
                None
            }
        }
    }

    /// Loads the file and swaps it in if it is a new, valid version.
    async fn reload(&self) {
        let current = self.slot.current();
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(b) => b,
            Err(e) => {
                self.stats.reload_failed();
                tracing::error!(path = %self.path.display(), error = %e, serving = %current.identity(),
                    "cannot read the plugin file; the previous version keeps serving");
                return;
            }
        };
        if content_hash(&bytes) == current.version() {
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
                tracing::info!(from = %old.identity(), to = %new.identity(), compile_ms = new.compile_time().as_millis() as u64, cached = new.from_cache(),
                    took_ms = started.elapsed().as_millis() as u64, "plugin swapped: new calls use the new version");
            }
            Ok(Err(e)) => {
                self.stats.reload_failed();
                tracing::error!(error = %e, serving = %current.identity(), "plugin reload refused; the previous version keeps serving");
            }
            Err(e) => {
                self.stats.reload_failed();
                tracing::error!(error = %e, serving = %current.identity(), "plugin reload crashed; the previous version keeps serving");
            }
        }
    }
}
