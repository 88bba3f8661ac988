//! The entries this process holds right now — queued, being handled, or
//! waiting out a retry backoff — with when each was last claimed and the
//! delivery it is at. Keep-alive re-claims the old ones so a peer's reaper
//! never steals work in progress; every reaper of this process skips what
//! any pipeline of it holds on the same group
//! ([`super::holdings::Holdings`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One held entry.
#[derive(Debug, Clone, Copy)]
struct Hold {
    /// When Redis last saw us claim it.
    since: Instant,
    /// The delivery it is at (what its pending row says).
    deliveries: u32,
}

/// Ids held by one pipeline, when Redis last saw us claim each, and the
/// delivery each is at.
#[derive(Debug, Default)]
pub struct InFlight {
    held: Mutex<HashMap<String, Hold>>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Hold>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts holding the entries not held yet and returns them; entries
    /// already held are dropped from the batch — except trimmed ones, which
    /// always go on to their record (the dead-letter move is fenced on the
    /// pending list, so a second one for the same entry writes nothing).
    pub fn hold_new(
        &self,
        entries: Vec<crate::vocab::entry::Entry>,
    ) -> Vec<crate::vocab::entry::Entry> {
        let now = Instant::now();
        let mut held = self.lock();
        entries
            .into_iter()
            .filter(|e| {
                e.payload == crate::vocab::entry::Payload::Trimmed
                    || match held.entry(e.id.clone()) {
                        std::collections::hash_map::Entry::Occupied(_) => false,
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(Hold {
                                since: now,
                                deliveries: e.delivery_count,
                            });
                            true
                        }
                    }
            })
            .collect()
    }

    /// Stops holding `ids` (settled or released).
    pub fn drop_all<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut held = self.lock();
        for id in ids {
            held.remove(id);
        }
    }

    /// How many entries are held.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Keeps the `rows` whose id is not held, under one lock.
    pub(super) fn retain_not_held<T>(&self, rows: &mut Vec<T>, id: &impl Fn(&T) -> &str) {
        let held = self.lock();
        rows.retain(|r| !held.contains_key(id(r)));
    }

    /// Every held id with the delivery it is at.
    pub(super) fn snapshot(&self) -> Vec<(String, u32)> {
        self.lock()
            .iter()
            .map(|(id, h)| (id.clone(), h.deliveries))
            .collect()
    }

    /// Ids last claimed more than `age` ago. They are not marked: a renewal
    /// counts only once Redis has taken it ([`InFlight::renewed`]), so a
    /// failed round is tried again at the next tick.
    pub fn due_for_touch(&self, age: Duration) -> Vec<String> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, h)| now.duration_since(h.since) >= age)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Marks `ids` (those still held) as claimed just now.
    pub fn renewed<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let mut held = self.lock();
        for id in ids {
            if let Some(h) = held.get_mut(id) {
                h.since = now;
            }
        }
    }

    /// Marks `id` (if still held) as claimed just now for delivery
    /// `deliveries`: an entry claimed again for its retry here.
    pub fn redelivered(&self, id: &str, deliveries: u32) {
        if let Some(h) = self.lock().get_mut(id) {
            *h = Hold {
                since: Instant::now(),
                deliveries,
            };
        }
    }
}

/// The last failure reason seen for entries still being retried, so a
/// dead-letter record for too many deliveries can say what kept failing.
/// Bounded: past the cap the oldest-inserted half is forgotten.
#[derive(Debug)]
pub struct LastFailures {
    reasons: Mutex<HashMap<String, (u64, String)>>,
    seq: std::sync::atomic::AtomicU64,
    cap: usize,
}

impl LastFailures {
    /// Remembers at most `cap` reasons.
    pub fn new(cap: usize) -> Self {
        Self {
            reasons: Mutex::default(),
            seq: Default::default(),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, String)>> {
        self.reasons.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records why `id` failed.
    pub fn record(&self, id: &str, reason: &str) {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut reasons = self.lock();
        if reasons.len() >= self.cap && !reasons.contains_key(id) {
            let mut ages: Vec<u64> = reasons.values().map(|(n, _)| *n).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            reasons.retain(|_, (n, _)| *n > cutoff);
        }
        reasons.insert(id.to_owned(), (n, reason.to_owned()));
    }

    /// The last reason recorded for `id`.
    pub fn get(&self, id: &str) -> Option<String> {
        self.lock().get(id).map(|(_, r)| r.clone())
    }

    /// Forgets `ids` (they were acked or dead-lettered).
    pub fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut reasons = self.lock();
        if reasons.is_empty() {
            return;
        }
        for id in ids {
            reasons.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_returns_only_old_holds_and_renews_them() {
        let f = InFlight::default();
        let entry = |id: &str| crate::vocab::entry::Entry {
            id: id.into(),
            payload: crate::vocab::entry::Payload::Fields(Vec::new()),
            delivery_count: 1,
        };
        assert_eq!(f.hold_new(vec![entry("1-0"), entry("2-0")]).len(), 2);
        assert_eq!(
            f.hold_new(vec![entry("2-0"), entry("3-0")]).len(),
            1,
            "2-0 is already held"
        );
        f.drop_all(["3-0"]);
        let trimmed = crate::vocab::entry::Entry {
            payload: crate::vocab::entry::Payload::Trimmed,
            ..entry("2-0")
        };
        assert_eq!(
            f.hold_new(vec![trimmed]).len(),
            1,
            "trimmed entries are never skipped"
        );
        assert!(f.due_for_touch(Duration::from_secs(60)).is_empty());
        let mut due = f.due_for_touch(Duration::ZERO);
        due.sort();
        assert_eq!(due, ["1-0", "2-0"]);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            f.due_for_touch(Duration::from_millis(10)).len(),
            2,
            "not renewed until Redis took the renewal"
        );
        f.renewed(["1-0", "2-0"]);
        assert!(
            f.due_for_touch(Duration::from_millis(10)).is_empty(),
            "renewed"
        );
        f.drop_all(["1-0"]);
        assert!(!f.contains("1-0") && f.contains("2-0"));
    }

    #[test]
    fn failures_are_bounded_and_keep_the_newest() {
        let f = LastFailures::new(4);
        for i in 0..10 {
            f.record(&format!("{i}-0"), &format!("reason {i}"));
        }
        assert_eq!(f.get("9-0").as_deref(), Some("reason 9"));
        assert_eq!(f.get("0-0"), None);
        f.forget(["9-0"]);
        assert_eq!(f.get("9-0"), None);
    }
}
