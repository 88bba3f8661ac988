//! Counters of what a run did, shared by its tasks; read for progress lines,
//! the final summary and the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::call_times::CallTimes;
use crate::vocab::outcome::DeadLetterKind;

/// Monotonic counters, updated with relaxed atomics on the hot path.
#[derive(Debug, Default)]
pub struct Stats {
    read: AtomicU64,
    handled: AtomicU64,
    acked: AtomicU64,
    emitted: AtomicU64,
    retried: AtomicU64,
    dead_permanent: AtomicU64,
    dead_max_deliveries: AtomicU64,
    dead_trimmed: AtomicU64,
    dead_invalid: AtomicU64,
    not_pending: AtomicU64,
    fenced: AtomicU64,
    forwarded: AtomicU64,
    forwarded_again: AtomicU64,
    commit_waits_short: AtomicU64,
    went_back: AtomicU64,
    commit_failures: AtomicU64,
    recovered: AtomicU64,
    reclaimed: AtomicU64,
    touched: AtomicU64,
    released: AtomicU64,
    trimmed: AtomicU64,
    retention_held_back: AtomicU64,
    plugin_swaps: AtomicU64,
    plugin_reload_failures: AtomicU64,
    read_calls: AtomicU64,
    commit_calls: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    call_times: CallTimes,
    wait_times: CallTimes,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Entries read from Redis (new and recovered).
    pub read: u64,
    /// Handler calls completed (any result).
    pub handled: u64,
    /// Entries acked after success.
    pub acked: u64,
    /// Entries appended on behalf of handlers.
    pub emitted: u64,
    /// Entries left pending after a retryable failure, trap or timeout.
    pub retried: u64,
    /// Dead-lettered: handler said permanent.
    pub dead_permanent: u64,
    /// Dead-lettered: too many deliveries.
    pub dead_max_deliveries: u64,
    /// Dead-lettered: payload trimmed before processing.
    pub dead_trimmed: u64,
    /// Dead-lettered: could not be handed to the plugin.
    pub dead_invalid: u64,
    /// Commits skipped because the entry was no longer pending for us.
    pub not_pending: u64,
    /// Commits refused because the partition's lease had passed to another
    /// host (entry left to the new owner).
    pub fenced: u64,
    /// Cross-slot emits forwarded from the outbox to their targets.
    pub forwarded: u64,
    /// Outbox entries found already forwarded (dropped by the idempotence check).
    pub forwarded_again: u64,
    /// Commit rounds whose `WAIT` saw fewer replicas than `--commit-wait` asks.
    pub commit_waits_short: u64,
    /// Times the group's position was found behind what it had delivered
    /// (a failover lost writes).
    pub went_back: u64,
    /// Commits Redis refused (entry left pending).
    pub commit_failures: u64,
    /// Own pending entries recovered at start-up.
    pub recovered: u64,
    /// Idle entries claimed by the reaper.
    pub reclaimed: u64,
    /// Keep-alive renewals of entries still in progress.
    pub touched: u64,
    /// Entries released for redelivery after a retry backoff.
    pub released: u64,
    /// Entries removed by retention.
    pub trimmed: u64,
    /// 1 while a lagging group holds retention back (a gauge).
    pub retention_held_back: u64,
    /// Plugin versions swapped in while running.
    pub plugin_swaps: u64,
    /// Plugin files that failed to load (the old version kept serving).
    pub plugin_reload_failures: u64,
    /// XREADGROUP calls that returned entries.
    pub read_calls: u64,
    /// Commit round trips (one pipeline of acks and scripts each).
    pub commit_calls: u64,
    /// Handler calls that trapped (memory cap, `unreachable`, a failed
    /// instantiation, …); each is also a retry.
    pub traps: u64,
    /// Handler calls interrupted at `--handler-timeout`; each is also a retry.
    pub timeouts: u64,
}

impl StatsSnapshot {
    /// Entries per XREADGROUP that returned any (0 before the first).
    pub fn avg_read_batch(&self) -> u64 {
        self.read.checked_div(self.read_calls).unwrap_or(0)
    }

    /// Entries settled per commit round trip (0 before the first).
    pub fn avg_commit_batch(&self) -> u64 {
        (self.acked + self.dead_lettered())
            .checked_div(self.commit_calls)
            .unwrap_or(0)
    }

    /// All dead-lettered entries.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_permanent + self.dead_max_deliveries + self.dead_trimmed + self.dead_invalid
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    /// Entries read by one XREADGROUP (an empty read, a BLOCK that timed
    /// out, does not count as a call: it would skew the average batch).
    pub fn read(&self, n: u64) {
        if n > 0 {
            add(&self.read, n);
            add(&self.read_calls, 1);
        }
    }
    /// One commit round trip completed.
    pub fn committed(&self) {
        add(&self.commit_calls, 1);
    }
    /// Handler calls completed.
    pub fn handled(&self, n: u64) {
        add(&self.handled, n);
    }
    /// Entries acked and how many entries they emitted.
    pub fn acked(&self, n: u64, emitted: u64) {
        add(&self.acked, n);
        add(&self.emitted, emitted);
    }
    /// Entries left pending for retry.
    pub fn retried(&self, n: u64) {
        add(&self.retried, n);
    }
    /// One entry dead-lettered.
    pub fn dead_lettered(&self, kind: DeadLetterKind) {
        let c = match kind {
            DeadLetterKind::Permanent => &self.dead_permanent,
            DeadLetterKind::MaxDeliveries => &self.dead_max_deliveries,
            DeadLetterKind::Trimmed => &self.dead_trimmed,
            DeadLetterKind::Invalid => &self.dead_invalid,
        };
        add(c, 1);
    }
    /// Commits skipped because the entry was not pending.
    pub fn not_pending(&self, n: u64) {
        add(&self.not_pending, n);
    }
    /// Commits refused by the lease check.
    pub fn fenced(&self, n: u64) {
        add(&self.fenced, n);
    }
    /// Cross-slot emits forwarded.
    pub fn forwarded(&self, n: u64) {
        add(&self.forwarded, n);
    }
    /// Outbox entries the idempotence check dropped.
    pub fn forwarded_again(&self, n: u64) {
        add(&self.forwarded_again, n);
    }
    /// Commit rounds short of their replicas.
    pub fn commit_wait_short(&self, n: u64) {
        add(&self.commit_waits_short, n);
    }
    /// A group found behind what it delivered.
    pub fn went_back(&self, n: u64) {
        add(&self.went_back, n);
    }
    /// Commits refused by Redis.
    pub fn commit_failed(&self, n: u64) {
        add(&self.commit_failures, n);
    }
    /// Own pending entries recovered.
    pub fn recovered(&self, n: u64) {
        add(&self.recovered, n);
    }

    /// Idle entries reclaimed.
    pub fn reclaimed(&self, n: u64) {
        add(&self.reclaimed, n);
    }
    /// Keep-alive renewals.
    pub fn touched(&self, n: u64) {
        add(&self.touched, n);
    }
    /// Entries released after a retry backoff.
    pub fn released(&self, n: u64) {
        add(&self.released, n);
    }
    /// One retention pass.
    pub fn trimmed(&self, n: u64, held_back: bool) {
        add(&self.trimmed, n);
        self.retention_held_back
            .store(u64::from(held_back), Ordering::Relaxed);
    }

    /// A new plugin version went into service.
    pub fn swapped(&self) {
        add(&self.plugin_swaps, 1);
    }
    /// A plugin file could not be loaded.
    pub fn reload_failed(&self) {
        add(&self.plugin_reload_failures, 1);
    }

    /// A handler call trapped.
    pub fn trapped(&self) {
        add(&self.traps, 1);
    }
    /// A handler call ran out of time.
    pub fn timed_out(&self) {
        add(&self.timeouts, 1);
    }
    /// How long handler calls take.
    pub fn call_times(&self) -> &CallTimes {
        &self.call_times
    }
    /// How long entries wait for their handler call once routed to the
    /// workers.
    pub fn wait_times(&self) -> &CallTimes {
        &self.wait_times
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            read: g(&self.read),
            handled: g(&self.handled),
            acked: g(&self.acked),
            emitted: g(&self.emitted),
            retried: g(&self.retried),
            dead_permanent: g(&self.dead_permanent),
            dead_max_deliveries: g(&self.dead_max_deliveries),
            dead_trimmed: g(&self.dead_trimmed),
            dead_invalid: g(&self.dead_invalid),
            not_pending: g(&self.not_pending),
            fenced: g(&self.fenced),
            forwarded: g(&self.forwarded),
            forwarded_again: g(&self.forwarded_again),
            commit_waits_short: g(&self.commit_waits_short),
            went_back: g(&self.went_back),
            commit_failures: g(&self.commit_failures),
            recovered: g(&self.recovered),
            reclaimed: g(&self.reclaimed),
            touched: g(&self.touched),
            released: g(&self.released),
            trimmed: g(&self.trimmed),
            retention_held_back: g(&self.retention_held_back),
            plugin_swaps: g(&self.plugin_swaps),
            plugin_reload_failures: g(&self.plugin_reload_failures),
            read_calls: g(&self.read_calls),
            commit_calls: g(&self.commit_calls),
            traps: g(&self.traps),
            timeouts: g(&self.timeouts),
        }
    }
}
