//! Per-instance and per-call resource bounds: a memory cap over everything
//! an instance allocates (all its linear memories and tables together),
//! caps on how many instances, memories and tables it may create, and a
//! deadline enforced by epoch interruption (time blocked in host calls is
//! bounded by the caller's timer, see [`super::instance`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Engine, ResourceLimiter};

use crate::vocab::units::ByteSize;

/// How often the epoch advances; deadlines are rounded up to this.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What one table element is counted as against the memory cap (the host
/// keeps a pointer-sized reference and bookkeeping for each).
pub const TABLE_ELEMENT_BYTES: usize = 16;

/// Most core instances one component may create: generous for real
/// language runtimes (a componentized Python guest is a few dozen modules),
/// small enough that a hostile one cannot exhaust the host with them.
pub const MAX_INSTANCES: usize = 256;
/// Most tables one component may create.
pub const MAX_TABLES: usize = 256;
/// Most linear memories one component may create.
pub const MAX_MEMORIES: usize = 32;

/// The error a guest hits when its memories and tables would grow past the
/// cap; it surfaces as the trap's cause, so the failure reason names it.
#[derive(Debug, thiserror::Error)]
#[error(
    "memory limit of {limit} exceeded (--max-memory: the instance's memories and tables would take {requested} bytes)"
)]
pub struct MemoryLimitExceeded {
    /// The configured cap.
    pub limit: ByteSize,
    /// What the instance would have taken in all.
    pub requested: usize,
}

/// Caps everything one store allocates: the sum of all its linear memories
/// and tables, not each one on its own (a component may have many).
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    limit: ByteSize,
    used: usize,
    /// The growth last granted, taken back if the growth then failed.
    granted: usize,
}

impl MemoryLimiter {
    /// A limiter allowing at most `limit` bytes in all.
    pub fn new(limit: ByteSize) -> Self {
        Self {
            limit,
            used: 0,
            granted: 0,
        }
    }

    /// Bytes taken so far.
    pub fn used(&self) -> usize {
        self.used
    }

    fn grow(&mut self, by: usize) -> wasmtime::Result<bool> {
        let next = self.used.saturating_add(by);
        if next as u64 > self.limit.0 {
            // An error (rather than `Ok(false)`) traps at once with a reason
            // that names the cap, instead of letting the guest's allocator
            // abort with an opaque `unreachable`.
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.limit,
                requested: next,
            }));
        }
        self.used = next;
        self.granted = by;
        Ok(true)
    }

    fn take_back(&mut self) {
        self.used -= self.granted;
        self.granted = 0;
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.take_back();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.take_back();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Number of epoch ticks that covers `timeout` (at least one full tick more,
/// so a call is never cut short by a tick that was about to happen).
pub fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_micros() / EPOCH_TICK.as_micros()) as u64 + 2
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
#[derive(Debug)]
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine`'s epoch on a background thread.
    pub fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_covers_the_timeout() {
        assert_eq!(deadline_ticks(Duration::from_millis(0)), 2);
        assert_eq!(deadline_ticks(Duration::from_secs(5)), 502);
        assert!(deadline_ticks(Duration::from_millis(15)) * EPOCH_TICK.as_millis() as u64 >= 15);
    }

    #[test]
    fn limiter_caps_the_sum_of_memories_and_tables() {
        let mut l = MemoryLimiter::new(ByteSize(1 << 20));
        // Two memories of 400 KiB each fit; a third pushes the total over.
        assert!(l.memory_growing(0, 400 << 10, None).unwrap());
        assert!(l.memory_growing(0, 400 << 10, None).unwrap());
        let err = l.memory_growing(0, 400 << 10, None).unwrap_err();
        assert!(
            format!("{err}").contains("memory limit of 1MiB exceeded"),
            "{err}"
        );
        // Growing one of them counts only the growth.
        assert!(l.memory_growing(400 << 10, 500 << 10, None).unwrap());
        assert_eq!(l.used(), 900 << 10);
        // A growth that failed after it was granted is taken back.
        l.memory_grow_failed(wasmtime::Error::msg("no")).unwrap();
        assert_eq!(l.used(), 800 << 10);
        // Tables count too.
        let elements = (224 << 10) / TABLE_ELEMENT_BYTES;
        assert!(l.table_growing(0, elements, None).unwrap());
        assert!(l.table_growing(elements, elements + 1, None).is_err());
    }
}
