//! Watching one file for a new version: filesystem notifications on its
//! directory (editors and deploy tools replace files by rename, which a watch
//! on the file itself misses), a periodic stat as fallback, and SIGHUP.
//! Bursts of writes are debounced so the file is read once, whole.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

/// Quiet time after the last change before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Why a watched file should be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The file changed.
    Changed,
    /// SIGHUP.
    Hangup,
}

/// What identifies a file version without reading it.
type Fingerprint = (u64, u64, i64, i64);

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// One watched file.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    changes: mpsc::UnboundedReceiver<()>,
    _notifications: Option<notify::RecommendedWatcher>,
    poll: Duration,
    hangup: Option<Signal>,
    seen: Option<Fingerprint>,
}

impl FileWatch {
    /// Watches `path` (`watch`: notifications, and a stat every `poll`
    /// unless zero; otherwise SIGHUP only). `what` names the file in logs.
    pub fn new(path: &Path, watch: bool, poll: Duration, what: &str) -> Self {
        let (tx, changes) = mpsc::unbounded_channel();
        let notifications = if watch {
            notifications(path, tx, poll, what)
        } else {
            None
        };
        let hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; {what} reloads follow file changes only");
                None
            }
        };
        Self {
            path: path.to_owned(),
            changes,
            _notifications: notifications,
            poll: if watch { poll } else { Duration::ZERO },
            hangup,
            seen: fingerprint(path),
        }
    }

    /// Waits for the next reason to read the file again.
    pub async fn next(&mut self) -> Trigger {
        let trigger = loop {
            let poll = async {
                if self.poll.is_zero() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(self.poll).await;
            };
            let hup = async {
                match self.hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(()) = self.changes.recv() => break Trigger::Changed,
                _ = hup => break Trigger::Hangup,
                _ = poll => {
                    if fingerprint(&self.path) != self.seen {
                        break Trigger::Changed;
                    }
                }
            }
        };
        // Let a burst of writes settle before the file is read.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(DEBOUNCE) => break,
                Some(()) = self.changes.recv() => {}
            }
        }
        self.seen = fingerprint(&self.path);
        trigger
    }
}

fn notifications(
    path: &Path,
    tx: mpsc::UnboundedSender<()>,
    poll: Duration,
    what: &str,
) -> Option<notify::RecommendedWatcher> {
    let name = path.file_name()?.to_owned();
    let dir = match path.parent() {
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
            tracing::warn!(error = %e, dir = %dir.display(), poll = %humantime::format_duration(poll),
                "file notifications unavailable; watching the {what} by polling");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paused time: the debounce and the poll are timers, so the test runs
    /// in no real time and cannot flake on a slow machine.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_writes_is_one_change_seen_by_polling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "a").unwrap();
        // No notifications: the stat poll alone must see the change.
        let mut watch = FileWatch::new(&path, false, Duration::ZERO, "test file");
        watch.poll = Duration::from_secs(2);
        std::fs::write(&path, "bb").unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(watch.next().await, Trigger::Changed);
        assert!(started.elapsed() >= Duration::from_secs(2) + DEBOUNCE);
        // Nothing changed since: the next poll finds nothing.
        let quiet = tokio::time::timeout(Duration::from_secs(7), watch.next()).await;
        assert!(quiet.is_err(), "an unchanged file is no change");
    }
}
