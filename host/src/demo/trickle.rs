//! The demo's trickle: a steady producer of its order events (set from
//! `--rate`, and by "produce at a rate" on the page), appending at the
//! asked rate in batches of at most a tenth of a second, on a connection of
//! its own, until the listener stops. A failed append is logged and tried
//! again on the next tick; nothing here can stop the process.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::orders::trickle_event;
use crate::config::RedisConfig;
use crate::http::feed::ProducerState;
use crate::http::probe::CachedNodes;
use crate::ops::produce::Fields;
use crate::stream::entries::add_batch;

/// The highest rate the page may ask for.
pub const MAX_RATE: u32 = 1_000;
/// The producer's tick.
const TICK: Duration = Duration::from_millis(100);

/// How long one append may take.
const APPEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The producer.
#[derive(Debug)]
pub struct Trickle {
    stream: Mutex<String>,
    per_second: AtomicU32,
    produced: AtomicU64,
    error: Mutex<Option<String>>,
    changed: Notify,
}

impl Trickle {
    /// A producer appending `per_second` events to `stream`.
    pub fn new(stream: &str, per_second: u32) -> Self {
        Self {
            stream: Mutex::new(stream.to_owned()),
            per_second: AtomicU32::new(per_second.min(MAX_RATE)),
            produced: AtomicU64::new(0),
            error: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    /// Sets the rate (capped at [`MAX_RATE`]) and, if given, the stream.
    pub fn set(&self, per_second: u32, stream: Option<String>) {
        if let Some(s) = stream {
            *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = s;
        }
        self.per_second
            .store(per_second.min(MAX_RATE), Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Where it appends now.
    fn stream(&self) -> String {
        self.stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What it does now.
    pub fn state(&self) -> ProducerState {
        ProducerState {
            stream: self
                .stream
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            per_second: self.per_second.load(Ordering::Relaxed),
            produced: self.produced.load(Ordering::Relaxed),
            error: self.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Appends until `stop`, on a connection of its own (reopened after a
    /// failure).
    pub async fn run(&self, redis: Option<RedisConfig>, stop: CancellationToken) {
        let Some(redis) = redis else { return };
        let probe = CachedNodes::new(APPEND_TIMEOUT);
        let mut owed = 0.0f64;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let rate = self.per_second.load(Ordering::Relaxed);
            if rate == 0 {
                owed = 0.0;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    () = self.changed.notified() => continue,
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            owed += f64::from(rate) * TICK.as_secs_f64();
            let n = owed.floor() as u64;
            if n == 0 {
                continue;
            }
            owed -= n as f64;
            let first = self.produced.load(Ordering::Relaxed);
            let now = crate::vocab::ids::now_ms();
            let batch: Vec<Fields> = (first..first + n).map(|i| trickle_event(i, now)).collect();
            let stream = self.stream();
            let appended = async {
                let mut con = probe.of(&redis, &stream).await?;
                add_batch(&mut con, &stream, None, &batch)
                    .await
                    .map_err(|e| e.to_string())
            };
            let failure = match tokio::time::timeout(APPEND_TIMEOUT, appended).await {
                Ok(Ok(ids)) => {
                    self.produced.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    None
                }
                Ok(Err(e)) => Some(e),
                Err(_) => Some("no answer within 2s".to_owned()),
            };
            let newly_failing = {
                let mut error = self.error.lock().unwrap_or_else(|e| e.into_inner());
                let was_ok = error.is_none();
                *error = failure.clone();
                was_ok && failure.is_some()
            };
            if newly_failing {
                tracing::warn!(stream = %stream, error = ?failure, "the demo's trickle cannot append; retrying every tick");
                probe.forget().await;
            }
        }
    }
}
