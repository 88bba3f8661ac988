//! Per-call resource bounds: a memory cap enforced by a store limiter and a
//! deadline enforced by epoch interruption.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Engine, ResourceLimiter};

use crate::units::ByteSize;

/// How often the epoch advances; deadlines are rounded up to this.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most tables/instances a plugin may create: generous for real language
/// runtimes (Python, JS), small enough to stop a runaway guest.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The error a guest hits when growing memory past its cap; it surfaces as the
/// trap's cause, so the failure reason names it.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} exceeded (guest asked for {requested} bytes)")]
pub struct MemoryLimitExceeded {
    /// The configured cap.
    pub limit: ByteSize,
    /// The size the guest tried to grow to.
    pub requested: usize,
}

/// Caps linear memory of everything in one store.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    limit: ByteSize,
}

impl MemoryLimiter {
    /// A limiter allowing at most `limit` bytes per linear memory.
    pub fn new(limit: ByteSize) -> Self {
        Self { limit }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit.0 {
            // An error (rather than `Ok(false)`) traps at once with a reason
            // that names the cap, instead of letting the guest's allocator
            // abort with an opaque `unreachable`.
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.limit,
                requested: desired,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
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
    fn limiter_allows_up_to_the_cap_and_names_it_beyond() {
        let mut l = MemoryLimiter::new(ByteSize(1 << 20));
        assert!(l.memory_growing(0, 1 << 20, None).unwrap());
        let err = l.memory_growing(0, (1 << 20) + 1, None).unwrap_err();
        assert!(
            format!("{err}").contains("memory limit of 1MiB exceeded"),
            "{err}"
        );
    }
}
