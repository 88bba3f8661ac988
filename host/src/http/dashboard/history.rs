//! The dashboard's charts: one sample per second of each group's
//! throughput (entries settled: acked or dead-lettered), lag, pending
//! entries, handler latency quantiles and how long entries waited for a
//! worker, over the last five minutes.
//! Counters come from the pipelines' own atomics; lag and pending from the
//! probe's look at Redis.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use super::super::probe::RedisLook;
use crate::runtime::Stats;
use crate::runtime::port::CallTimesSnapshot;
use crate::runtime::port::PipelineView;

/// Samples kept (one per second).
pub const KEPT: usize = 300;

/// The series, as the `state` event carries them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// Sample times (ms since the epoch).
    pub t_ms: VecDeque<u64>,
    /// Per group (`stream/group` when several streams are served, else the
    /// group's name).
    pub groups: BTreeMap<String, GroupSeries>,
}

/// One group's samples, aligned with [`Series::t_ms`]; `None` where the
/// group did not exist or nothing could be measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupSeries {
    /// Entries settled per second.
    pub handled_per_s: VecDeque<Option<f64>>,
    /// Entries not yet delivered.
    pub lag: VecDeque<Option<u64>>,
    /// Entries delivered, not yet acked.
    pub pending: VecDeque<Option<u64>>,
    /// Median handler call time over the second, in µs.
    pub p50_us: VecDeque<Option<u64>>,
    /// 99th percentile handler call time over the second, in µs.
    pub p99_us: VecDeque<Option<u64>>,
    /// 99th percentile wait of the second's calls between being routed to
    /// the workers and their start, in µs: high with short calls means
    /// `--concurrency` is too low, not that the plugin is slow.
    pub wait_p99_us: VecDeque<Option<u64>>,
}

/// What a pipeline had done at the previous sample.
#[derive(Debug)]
struct PreviousSample {
    /// Which run of the pipeline (a restarted pipeline counts from zero).
    stats: Arc<Stats>,
    settled: u64,
    calls: CallTimesSnapshot,
    waits: CallTimesSnapshot,
}

/// The sampler's memory.
#[derive(Debug, Default)]
pub struct History {
    series: Series,
    seen: BTreeMap<String, PreviousSample>,
    last_ms: Option<u64>,
}

impl History {
    /// The series so far.
    pub fn series(&self) -> &Series {
        &self.series
    }

    /// Takes one sample at `now_ms` of `running`, with Redis as `look` saw it.
    pub fn sample(&mut self, now_ms: u64, running: &[PipelineView], look: Option<&RedisLook>) {
        let elapsed_s = self
            .last_ms
            .map(|last| now_ms.saturating_sub(last) as f64 / 1000.0)
            .filter(|s| *s > 0.0);
        self.last_ms = Some(now_ms);
        let several_streams = running
            .iter()
            .any(|p| running.first().is_some_and(|f| f.stream != p.stream));
        let label = |p: &PipelineView| {
            if several_streams {
                format!("{}/{}", p.stream, p.group)
            } else {
                p.group.clone()
            }
        };
        #[derive(Default)]
        struct GroupTotals {
            settled: u64,
            buckets: Vec<(f64, u64)>,
            waits: Vec<(f64, u64)>,
            stream: String,
            group: String,
        }
        let mut sums: BTreeMap<String, GroupTotals> = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for p in running {
            let snap = p.stats.snapshot();
            let settled = snap.acked + snap.dead_lettered();
            let calls = p.stats.call_times().snapshot();
            let waits = p.stats.wait_times().snapshot();
            let (before, before_calls) = match self.seen.remove(&p.name) {
                Some(s) if Arc::ptr_eq(&s.stats, &p.stats) => (s.settled, Some((s.calls, s.waits))),
                // Not here at the previous sample: it started since, from
                // zero, so all it did falls in this interval.
                _ if self.series.t_ms.back().is_some() => (0, Some((zero(&calls), zero(&waits)))),
                // The first sample: no interval to put anything in.
                _ => (settled, None),
            };
            let sum = sums.entry(label(p)).or_default();
            sum.stream.clone_from(&p.stream);
            sum.group.clone_from(&p.group);
            sum.settled += settled.saturating_sub(before);
            if let Some((prev_calls, prev_waits)) = before_calls {
                add_delta(&mut sum.buckets, &calls, &prev_calls);
                add_delta(&mut sum.waits, &waits, &prev_waits);
            }
            seen.insert(
                p.name.clone(),
                PreviousSample {
                    stats: p.stats.clone(),
                    settled,
                    calls,
                    waits,
                },
            );
        }
        self.seen = seen;
        let len = self.series.t_ms.len();
        if len == KEPT {
            self.series.t_ms.pop_front();
            for g in self.series.groups.values_mut() {
                g.pop_front();
            }
        }
        self.series.t_ms.push_back(now_ms);
        let len = self.series.t_ms.len();
        for (name, sum) in sums {
            let g = self.series.groups.entry(name).or_default();
            g.pad_to(len - 1);
            let redis = look
                .filter(|l| l.down.is_none())
                .and_then(|l| l.groups.get(&(sum.stream.clone(), sum.group.clone())))
                .and_then(Option::as_ref);
            g.handled_per_s
                .push_back(elapsed_s.map(|s| (sum.settled as f64 / s * 10.0).round() / 10.0));
            g.lag.push_back(redis.and_then(|r| r.lag));
            g.pending.push_back(redis.map(|r| r.pending));
            g.p50_us.push_back(quantile_us(&sum.buckets, 0.50));
            g.p99_us.push_back(quantile_us(&sum.buckets, 0.99));
            g.wait_p99_us.push_back(quantile_us(&sum.waits, 0.99));
        }
        // Groups no longer running keep their history, with gaps.
        for g in self.series.groups.values_mut() {
            g.pad_to(len);
        }
        self.series.groups.retain(|_, g| g.has_data());
    }
}

impl GroupSeries {
    fn pop_front(&mut self) {
        self.handled_per_s.pop_front();
        self.lag.pop_front();
        self.pending.pop_front();
        self.p50_us.pop_front();
        self.p99_us.pop_front();
        self.wait_p99_us.pop_front();
    }

    fn pad_to(&mut self, len: usize) {
        while self.handled_per_s.len() < len {
            self.handled_per_s.push_back(None);
            self.lag.push_back(None);
            self.pending.push_back(None);
            self.p50_us.push_back(None);
            self.p99_us.push_back(None);
            self.wait_p99_us.push_back(None);
        }
    }

    fn has_data(&self) -> bool {
        self.handled_per_s.iter().any(Option::is_some)
            || self.lag.iter().any(Option::is_some)
            || self.p50_us.iter().any(Option::is_some)
    }
}

/// A histogram with `like`'s buckets and no calls.
fn zero(like: &CallTimesSnapshot) -> CallTimesSnapshot {
    CallTimesSnapshot {
        buckets: like.buckets.iter().map(|(le, _)| (*le, 0)).collect(),
        sum_seconds: 0.0,
        count: 0,
    }
}

/// Adds the calls of `now` not in `before`, bucket by bucket, to `into`.
fn add_delta(into: &mut Vec<(f64, u64)>, now: &CallTimesSnapshot, before: &CallTimesSnapshot) {
    if into.is_empty() {
        into.extend(now.buckets.iter().map(|(le, _)| (*le, 0)));
    }
    for ((slot, (_, n)), (_, b)) in into.iter_mut().zip(&now.buckets).zip(&before.buckets) {
        slot.1 += n.saturating_sub(*b);
    }
}

/// The `q` quantile of calls in `buckets` (non-cumulative, upper bounds in
/// seconds), interpolated linearly inside its bucket; `None` without calls.
fn quantile_us(buckets: &[(f64, u64)], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0);
    let mut below = 0u64;
    let mut lower = 0.0;
    for (le, n) in buckets {
        if *n > 0 && (below + n) as f64 >= rank {
            // The last bucket has no upper bound: report its lower one.
            let upper = if le.is_finite() { *le } else { lower };
            let within = (rank - below as f64) / *n as f64;
            return Some(((lower + (upper - lower) * within) * 1e6).round() as u64);
        }
        below += n;
        lower = *le;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_that_holds_them() {
        let b = vec![
            (0.000_010, 0),
            (0.000_100, 100),
            (0.001, 0),
            (f64::INFINITY, 0),
        ];
        assert_eq!(quantile_us(&b, 0.5), Some(55));
        assert_eq!(quantile_us(&b, 0.99), Some(99));
        let tail = vec![(0.000_100, 99), (0.001, 1)];
        assert_eq!(quantile_us(&tail, 0.99), Some(100));
        assert_eq!(quantile_us(&tail, 1.0), Some(1000));
        assert_eq!(quantile_us(&[(0.1, 0)], 0.5), None);
        let beyond = vec![(10.0, 0), (f64::INFINITY, 3)];
        assert_eq!(quantile_us(&beyond, 0.5), Some(10_000_000));
    }
}
