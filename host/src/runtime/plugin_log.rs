//! The process's log of plugin reloads — versions swapped in and files
//! refused — newest last, bounded; shown by the dashboard, and waited on by
//! its upload so the uploader learns what the watcher made of the file.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::watch;

/// How many events are kept.
pub const KEPT: usize = 100;

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadOutcome {
    /// A new version serves.
    Swapped,
    /// The file was refused; the previous version serves.
    Refused,
}

/// One reload.
#[derive(Debug, Clone, Serialize)]
pub struct PluginEvent {
    /// Sequence number in this process (1, 2, …).
    pub seq: u64,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The pipeline whose watcher reloaded.
    pub pipeline: String,
    /// The plugin file.
    pub path: PathBuf,
    /// What happened.
    pub outcome: ReloadOutcome,
    /// The content hash of the file judged (`None`: it could not be read),
    /// so that an upload knows the verdict is on its own bytes.
    pub judged: Option<String>,
    /// The version serving before.
    pub from: String,
    /// The version serving now, if it changed.
    pub to: Option<String>,
    /// Why the file was refused.
    pub error: Option<String>,
}

/// The bounded log.
#[derive(Debug)]
pub struct PluginLog {
    events: Mutex<VecDeque<PluginEvent>>,
    /// The newest sequence number, for waiters.
    newest: watch::Sender<u64>,
}

impl Default for PluginLog {
    fn default() -> Self {
        Self {
            events: Mutex::new(VecDeque::new()),
            newest: watch::Sender::new(0),
        }
    }
}

impl PluginLog {
    /// Records a reload (its `seq` and `at_ms` are set here).
    pub fn record(&self, mut event: PluginEvent) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        event.seq = events.back().map_or(1, |e| e.seq + 1);
        event.at_ms = crate::vocab::ids::now_ms();
        let seq = event.seq;
        if events.len() == KEPT {
            events.pop_front();
        }
        events.push_back(event);
        drop(events);
        self.newest.send_replace(seq);
    }

    /// The events, newest first.
    pub fn newest_first(&self) -> Vec<PluginEvent> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().rev().cloned().collect()
    }

    /// The newest sequence number (0: none yet).
    pub fn newest_seq(&self) -> u64 {
        *self.newest.borrow()
    }

    /// Waits for the first event after `seq` that `matches`.
    pub async fn next_after(
        &self,
        seq: u64,
        matches: impl Fn(&PluginEvent) -> bool,
    ) -> PluginEvent {
        let mut newest = self.newest.subscribe();
        loop {
            let found = self
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|e| e.seq > seq && matches(e))
                .cloned();
            if let Some(e) = found {
                return e;
            }
            // The sender lives as long as `self`.
            let _ = newest.changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(pipeline: &str) -> PluginEvent {
        PluginEvent {
            seq: 0,
            at_ms: 0,
            pipeline: pipeline.into(),
            path: "p.wasm".into(),
            outcome: ReloadOutcome::Swapped,
            judged: None,
            from: "a".into(),
            to: Some("b".into()),
            error: None,
        }
    }

    #[test]
    fn the_log_keeps_the_newest_events_in_order() {
        let log = PluginLog::default();
        for i in 0..KEPT + 5 {
            log.record(event(&format!("p{i}")));
        }
        let shown = log.newest_first();
        assert_eq!(shown.len(), KEPT);
        assert_eq!(shown[0].seq, (KEPT + 5) as u64);
        assert_eq!(shown[0].pipeline, format!("p{}", KEPT + 4));
        assert_eq!(log.newest_seq(), (KEPT + 5) as u64);
    }

    #[tokio::test]
    async fn a_waiter_sees_only_later_matching_events() {
        let log = std::sync::Arc::new(PluginLog::default());
        log.record(event("a"));
        let after = log.newest_seq();
        let waiter = {
            let log = log.clone();
            tokio::spawn(async move { log.next_after(after, |e| e.pipeline == "b").await })
        };
        log.record(event("a"));
        log.record(event("b"));
        let got = waiter.await.unwrap();
        assert_eq!((got.pipeline.as_str(), got.seq), ("b", 3));
    }
}
