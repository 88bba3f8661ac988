//! What an operator can do to one running pipeline from the dashboard:
//! drop its next N deliveries unacked, as a consumer that crashed after
//! reading would (the entries stay pending under its name until a reaper
//! claims them), and make its reaper sweep now with a chosen idle
//! threshold. Nothing here is on the hot path unless a crash is armed: the
//! dispatcher reads one atomic per delivered batch.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// The most deliveries one "crash next N" may drop.
pub const MAX_CRASH: u64 = 1_000;

/// A request to sweep the pending list now.
#[derive(Debug)]
pub struct ReclaimNow {
    /// Claim entries idle at least this long.
    pub min_idle: Duration,
    /// Told how many entries were claimed (dropped if the reaper stopped).
    pub reply: oneshot::Sender<u64>,
}

/// One pipeline's operator controls.
#[derive(Debug)]
pub struct Controls {
    crash_next: AtomicU64,
    crashed: AtomicU64,
    reclaim: mpsc::UnboundedSender<ReclaimNow>,
    /// The reaper's end, until the reaper takes it.
    requests: Mutex<Option<mpsc::UnboundedReceiver<ReclaimNow>>>,
}

impl Default for Controls {
    fn default() -> Self {
        let (reclaim, requests) = mpsc::unbounded_channel();
        Self {
            crash_next: AtomicU64::new(0),
            crashed: AtomicU64::new(0),
            reclaim,
            requests: Mutex::new(Some(requests)),
        }
    }
}

/// Why a reclaim request was not served.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline's reaper has stopped")]
pub struct ReaperGone;

impl Controls {
    /// Drops the next `n` deliveries (added to any still armed), up to
    /// [`MAX_CRASH`] in all; returns how many are now armed.
    pub fn crash_next(&self, n: u64) -> u64 {
        let mut now = self.crash_next.load(Ordering::Relaxed);
        loop {
            let want = now.saturating_add(n).min(MAX_CRASH);
            match self.crash_next.compare_exchange_weak(
                now,
                want,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return want,
                Err(seen) => now = seen,
            }
        }
    }

    /// Whether the delivery at hand is to be dropped (consumes one).
    pub fn take_crash(&self) -> bool {
        if self.crash_next.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let taken = self
            .crash_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if taken {
            self.crashed.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Deliveries still to drop.
    pub fn armed(&self) -> u64 {
        self.crash_next.load(Ordering::Relaxed)
    }

    /// Deliveries dropped so far.
    pub fn crashed(&self) -> u64 {
        self.crashed.load(Ordering::Relaxed)
    }

    /// Asks the reaper to sweep now; answers how many entries it claimed.
    pub async fn reclaim_now(&self, min_idle: Duration) -> Result<u64, ReaperGone> {
        let (reply, answer) = oneshot::channel();
        self.reclaim
            .send(ReclaimNow { min_idle, reply })
            .map_err(|_| ReaperGone)?;
        answer.await.map_err(|_| ReaperGone)
    }

    /// The reaper's inbox (once).
    pub fn take_requests(&self) -> Option<mpsc::UnboundedReceiver<ReclaimNow>> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_crash_drops_exactly_n_deliveries() {
        let c = Controls::default();
        assert!(!c.take_crash());
        assert_eq!(c.crash_next(2), 2);
        assert_eq!(c.crash_next(1), 3);
        assert!(c.take_crash() && c.take_crash() && c.take_crash());
        assert!(!c.take_crash());
        assert_eq!((c.armed(), c.crashed()), (0, 3));
        assert_eq!(c.crash_next(u64::MAX), MAX_CRASH);
    }

    #[tokio::test]
    async fn a_reclaim_request_reaches_the_reaper_and_its_answer_comes_back() {
        let c = std::sync::Arc::new(Controls::default());
        let mut inbox = c.take_requests().unwrap();
        assert!(c.take_requests().is_none());
        let reaper = tokio::spawn(async move {
            let req = inbox.recv().await.unwrap();
            assert_eq!(req.min_idle, Duration::from_millis(250));
            req.reply.send(7).unwrap();
            // Gone: later requests fail instead of hanging.
        });
        assert_eq!(c.reclaim_now(Duration::from_millis(250)).await.unwrap(), 7);
        reaper.await.unwrap();
        assert!(c.reclaim_now(Duration::ZERO).await.is_err());
    }
}
