//! Per-key ordering (`--order-by FIELD`): entries with the same value of the
//! field are handled one at a time, in stream order; different keys run in
//! parallel. A key is *busy* from the moment one of its entries goes to a
//! worker until that entry leaves this host's hands — acked, dead-lettered,
//! or found to be no longer ours. A retry keeps its key busy through the
//! backoff (the holder retries it here, see `holder.rs`), so a later entry
//! never overtakes an earlier one that is still to succeed.
//!
//! Entries of a busy key wait here, sorted by id, so an entry reclaimed
//! from a dead peer goes before newer entries of its key that are waiting.
//! Waiting entries hold their window slots and count as held (keep-alive
//! renews them), like queued ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::job::Job;
use crate::vocab::entry::{Entry, Payload};

/// The ordering gate of one pipeline.
#[derive(Debug)]
pub struct KeyOrder {
    field: Vec<u8>,
    keys: Mutex<HashMap<Vec<u8>, Line>>,
    waiting: AtomicUsize,
}

/// One busy key: the entry being handled (or retried), and the later ones.
#[derive(Debug)]
struct Line {
    running: String,
    waiting: BTreeMap<StreamId, Job>,
}

/// A stream id as numbers, so `10-0` sorts after `9-0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64);

impl StreamId {
    fn parse(id: &str) -> Self {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        Self(
            ms.parse().unwrap_or(u64::MAX),
            seq.parse().unwrap_or(u64::MAX),
        )
    }
}

impl KeyOrder {
    /// Orders by the value of `field`.
    pub fn new(field: &str) -> Self {
        Self {
            field: field.as_bytes().to_vec(),
            keys: Mutex::default(),
            waiting: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Line>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry's key: the value of its first field named like ours.
    /// Entries without it (or whose fields were not read) are unordered.
    pub fn key_of(&self, entry: &Entry) -> Option<Vec<u8>> {
        match &entry.payload {
            Payload::Fields(fields) => fields
                .iter()
                .find(|(name, _)| name.as_bytes() == self.field)
                .map(|(_, value)| value.clone()),
            _ => None,
        }
    }

    /// A job bound for a worker: returned if it may run now — unordered, its
    /// key idle, or it is its key's running entry coming back for a retry —
    /// else kept until the entries of its key before it are done.
    pub fn admit(&self, job: Job) -> Option<Job> {
        let Some(key) = self.key_of(&job.entry) else {
            return Some(job);
        };
        let mut keys = self.lock();
        match keys.get_mut(&key) {
            None => {
                keys.insert(
                    key,
                    Line {
                        running: job.entry.id.clone(),
                        waiting: BTreeMap::new(),
                    },
                );
                Some(job)
            }
            Some(line) if line.running == job.entry.id => Some(job),
            Some(line) => {
                line.waiting.insert(StreamId::parse(&job.entry.id), job);
                self.waiting.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Entry `id`, of `key`, left this host's hands: if it was its key's
    /// running entry, the next waiting one of the key (the oldest) is
    /// returned to run.
    pub fn finished(&self, id: &str, key: &[u8]) -> Option<Job> {
        let mut keys = self.lock();
        let line = keys.get_mut(key)?;
        if line.running != id {
            return None;
        }
        match line.waiting.pop_first() {
            Some((_, next)) => {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                line.running = next.entry.id.clone();
                Some(next)
            }
            None => {
                keys.remove(key);
                None
            }
        }
    }

    /// Entries waiting for an earlier entry of their key.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;

    fn job(id: &str, key: Option<&str>) -> Job {
        let fields = key
            .map(|k| vec![("customer".to_owned(), k.as_bytes().to_vec())])
            .unwrap_or_default();
        Job {
            entry: Entry {
                id: id.into(),
                payload: Payload::Fields(fields),
                delivery_count: 1,
            },
            permit: Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
            queued: std::time::Instant::now(),
        }
    }

    fn id(job: Option<Job>) -> Option<String> {
        job.map(|j| j.entry.id)
    }

    fn done(order: &KeyOrder, id: &str, key: &str) -> Option<String> {
        order.finished(id, key.as_bytes()).map(|j| j.entry.id)
    }

    #[test]
    fn one_entry_per_key_runs_and_the_next_goes_in_stream_order() {
        let order = KeyOrder::new("customer");
        assert_eq!(id(order.admit(job("9-0", Some("a")))), Some("9-0".into()));
        assert_eq!(id(order.admit(job("10-1", Some("a")))), None);
        assert_eq!(id(order.admit(job("10-0", Some("a")))), None);
        // Another key and an unordered entry run at once.
        assert_eq!(id(order.admit(job("11-0", Some("b")))), Some("11-0".into()));
        assert_eq!(id(order.admit(job("12-0", None))), Some("12-0".into()));
        assert_eq!(order.waiting(), 2);
        // Numeric order: 10-0 before 10-1, though 10-1 came first.
        assert_eq!(done(&order, "9-0", "a"), Some("10-0".into()));
        assert_eq!(done(&order, "10-0", "a"), Some("10-1".into()));
        assert_eq!(done(&order, "10-1", "a"), None);
        assert_eq!(order.waiting(), 0);
        // The key is idle again: its next entry runs at once.
        assert_eq!(id(order.admit(job("13-0", Some("a")))), Some("13-0".into()));
    }

    #[test]
    fn a_retry_of_the_running_entry_runs_and_others_do_not_release_the_key() {
        let order = KeyOrder::new("customer");
        assert!(order.admit(job("5-0", Some("a"))).is_some());
        assert!(order.admit(job("6-0", Some("a"))).is_none());
        // The running entry comes back after its backoff.
        assert_eq!(id(order.admit(job("5-0", Some("a")))), Some("5-0".into()));
        // An entry that is not the running one finishing changes nothing.
        assert_eq!(done(&order, "6-0", "a"), None);
        assert_eq!(order.waiting(), 1);
    }

    #[test]
    fn a_reclaimed_older_entry_goes_before_newer_waiting_ones() {
        let order = KeyOrder::new("customer");
        assert!(order.admit(job("20-0", Some("a"))).is_some());
        assert!(order.admit(job("21-0", Some("a"))).is_none());
        // Reclaimed from a dead peer: older than what waits.
        assert!(order.admit(job("3-0", Some("a"))).is_none());
        assert_eq!(done(&order, "20-0", "a"), Some("3-0".into()));
    }
}
