//! Capped exponential backoff with full jitter, for reconnecting to Redis and
//! retrying commits without hammering a server that is down.

use std::time::Duration;

use rand::Rng;

/// Delays grow `base · 2^n` up to `cap`; each delay is drawn uniformly from
/// `[delay/2, delay]` so many hosts restarting together do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The delays used for Redis connections: 50 ms doubling up to 5 s.
    pub fn for_redis() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// The next delay to wait; each call doubles the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = self.base.saturating_mul(1 << exp).min(self.cap);
        let low = ceiling / 2;
        let jitter = rand::rng().random_range(0..=(ceiling - low).as_micros() as u64);
        low + Duration::from_micros(jitter)
    }

    /// Forget past failures after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_jitter_inside_bounds() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let expected_ceilings = [10, 20, 40, 80, 100, 100, 100];
        for ceiling in expected_ceilings {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                d <= ceiling && d >= ceiling / 2,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        assert_eq!(b.attempts(), 7);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }
}
