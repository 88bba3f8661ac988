//! How long handler calls take, and how long entries wait for one: a
//! fixed-bucket histogram of atomics, so a worker records a duration with
//! one bucket search and three relaxed adds (no lock), and a scrape reads it
//! at any time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets in nanoseconds (a last, unbounded one follows).
/// They start at 5 µs: a Rust handler on a warm instance takes about 2 µs,
/// a Python one about 10 µs, and those must not all share one bucket.
const BOUNDS_NS: [u64; 20] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The same bounds in seconds, as the histogram's `le` labels.
pub const BOUNDS: [f64; 20] = {
    let mut s = [0.0; 20];
    let mut i = 0;
    while i < BOUNDS_NS.len() {
        s[i] = BOUNDS_NS[i] as f64 / 1e9;
        i += 1;
    }
    s
};

/// A histogram of durations (handler calls, or waits for one).
#[derive(Debug, Default)]
pub struct CallTimes {
    /// Calls per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A point-in-time copy of [`CallTimes`].
#[derive(Debug, Clone, PartialEq)]
pub struct CallTimesSnapshot {
    /// `(upper bound in seconds, calls in that bucket)`, not cumulative; the
    /// last bound is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Total time of all calls, in seconds.
    pub sum_seconds: f64,
    /// Calls recorded.
    pub count: u64,
}

impl CallTimes {
    /// Records one call that took `took`.
    pub fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the histogram. Read while calls are recorded, the count may
    /// run one call ahead of the buckets; it is taken from the buckets, so
    /// the copy is always consistent with itself.
    pub fn snapshot(&self) -> CallTimesSnapshot {
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        CallTimesSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_the_first_bucket_that_holds_them() {
        let t = CallTimes::default();
        t.record(Duration::from_micros(2));
        t.record(Duration::from_micros(5)); // on the bound: le="0.000005"
        t.record(Duration::from_micros(50));
        t.record(Duration::from_millis(3));
        t.record(Duration::from_secs(60));
        let s = t.snapshot();
        assert_eq!(s.buckets.len(), BOUNDS.len() + 1);
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets[0], (0.000_005, 2));
        assert_eq!(s.buckets[3], (0.000_05, 1));
        assert_eq!(s.buckets[9], (0.005, 1));
        assert_eq!(s.buckets[20], (f64::INFINITY, 1));
        assert!(
            (s.sum_seconds - 60.003_057).abs() < 1e-9,
            "{}",
            s.sum_seconds
        );
    }
}
