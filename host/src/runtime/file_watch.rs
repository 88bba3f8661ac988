//! Watching one file for a new version: filesystem notifications on its
//! directory (editors and deploy tools replace files by rename, which a watch
//! on the file itself misses), a periodic stat as fallback, and SIGHUP.
//! A change is reported once the file has settled — unchanged in size,
//! mtime and contents over a quiet period — so a file written in several
//! steps is read once, whole (a writer that pauses longer than that can
//! still be caught half-way: writing a new file and renaming it over the
//! old one is the safe way to update).

use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

/// How long a file must stay unchanged before it is read, unless
/// [`FileWatch::settle_for`] says otherwise.
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

/// What a file is at one moment: its fingerprint and a hash of its
/// contents (`None`: it cannot be read).
type Snapshot = Option<(Fingerprint, u64)>;

/// Reads `path` to fingerprint and hash it, a chunk at a time.
fn snapshot(path: &Path) -> Snapshot {
    let before = fingerprint(path)?;
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = std::hash::DefaultHasher::new();
    let mut chunk = vec![0; 64 << 10];
    loop {
        match file.read(&mut chunk).ok()? {
            0 => break,
            n => hasher.write(&chunk[..n]),
        }
    }
    Some((before, hasher.finish()))
}

/// What a file was when it settled. A reader compares it with
/// [`Version::of`] the file after reading it: a difference means a new
/// write began meanwhile, and the watch will report it once it settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(Snapshot);

impl Version {
    /// What `path` is now (it is read whole).
    pub fn of(path: &Path) -> Self {
        Self(snapshot(path))
    }
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
    /// How long the file must stay unchanged before a change is reported.
    settle: Duration,
    /// What the file was when the last change was reported.
    version: Version,
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
            settle: DEBOUNCE,
            version: Version(None),
        }
    }

    /// Reports a change only once the file has been unchanged for `settle`.
    pub fn settle_for(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
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
        self.version = Version(self.settled().await);
        // From the settled version, not a new stat: a write that began
        // since is then a change for the poll too.
        self.seen = self.version.0.map(|(f, _)| f);
        trigger
    }

    /// What the file was when [`FileWatch::next`] last returned.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// Waits until the file has stayed the same — no notification, same
    /// fingerprint and contents — for the settle period. Comparing contents
    /// too catches a change that notifications missed and a coarse mtime
    /// hid.
    async fn settled(&mut self) -> Snapshot {
        let mut last = self.snapshot().await;
        loop {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.settle) => break,
                    Some(()) = self.changes.recv() => {}
                }
            }
            let now = self.snapshot().await;
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// [`snapshot`] off the async runtime: a plugin file may be large.
    async fn snapshot(&self) -> Snapshot {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || snapshot(&path))
            .await
            .ok()
            .flatten()
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
        // The burst goes on across the poll: 12 more writes, 100 ms apart
        // (less than the debounce), each a different length.
        let step = Duration::from_millis(100);
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                for i in 0..12 {
                    tokio::time::sleep(step).await;
                    std::fs::write(&path, "c".repeat(3 + i)).unwrap();
                }
            })
        };
        let started = tokio::time::Instant::now();
        assert_eq!(watch.next().await, Trigger::Changed);
        let burst_end = Duration::from_millis(1_500) + step * 12;
        assert!(
            started.elapsed() >= burst_end + DEBOUNCE,
            "reported after the last write had settled: {:?}",
            started.elapsed()
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c".repeat(14));
        assert_eq!(watch.version(), &Version::of(&path), "the burst's end");
        writer.await.unwrap();
        // Nothing changed since: the next poll finds nothing.
        let quiet = tokio::time::timeout(Duration::from_secs(7), watch.next()).await;
        assert!(quiet.is_err(), "an unchanged file is no change");
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_written_in_two_steps_is_reported_once_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "a").unwrap();
        let settle = Duration::from_secs(1);
        let mut watch =
            FileWatch::new(&path, false, Duration::ZERO, "test file").settle_for(settle);
        watch.poll = Duration::from_secs(2);
        std::fs::write(&path, "first part").unwrap();
        let pause = Duration::from_secs(2) + Duration::from_millis(600);
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                std::io::Write::write_all(&mut file, b", second part").unwrap();
            })
        };
        let started = tokio::time::Instant::now();
        assert_eq!(watch.next().await, Trigger::Changed);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "first part, second part",
            "reported while half-written"
        );
        assert_eq!(watch.version(), &Version::of(&path));
        std::fs::write(&path, "first part, second part, third").unwrap();
        assert_ne!(watch.version(), &Version::of(&path), "a write since");
        assert!(started.elapsed() >= pause + settle);
        writer.await.unwrap();
    }

    /// The other side of the settle period: a writer pausing longer than it
    /// is seen half-way (hence: write elsewhere, then rename).
    #[tokio::test(start_paused = true)]
    async fn a_writer_pausing_longer_than_the_settle_period_is_seen_half_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "a").unwrap();
        let settle = Duration::from_secs(1);
        let mut watch =
            FileWatch::new(&path, false, Duration::ZERO, "test file").settle_for(settle);
        watch.poll = Duration::from_secs(2);
        std::fs::write(&path, "first part").unwrap();
        let pause = Duration::from_secs(2) + settle + Duration::from_millis(500);
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                std::io::Write::write_all(&mut file, b", second part").unwrap();
            })
        };
        let started = tokio::time::Instant::now();
        assert_eq!(watch.next().await, Trigger::Changed);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first part");
        assert!(started.elapsed() < pause);
        writer.await.unwrap();
    }
}
