//! The demo's feed of the dashboard: its order events on request, and the
//! trickle as the steady producer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::orders::{EVENT_TYPES, demo_event};
use super::trickle::{MAX_RATE, Trickle};
use crate::config::RedisConfig;
use crate::http::feed::{Feed, ProducerState};
use crate::ops::produce::Fields;
use crate::vocab::ids::now_ms;

/// The demo's feed.
#[derive(Debug)]
pub struct DemoFeed {
    trickle: Trickle,
    /// Numbers the events produced on request.
    produced: AtomicU64,
}

impl DemoFeed {
    /// A feed whose trickle appends `per_second` events to `stream`.
    pub fn new(stream: &str, per_second: u32) -> Self {
        Self {
            trickle: Trickle::new(stream, per_second),
            produced: AtomicU64::new(0),
        }
    }
}

impl Feed for DemoFeed {
    fn kinds(&self) -> Vec<String> {
        EVENT_TYPES.iter().map(|k| (*k).to_owned()).collect()
    }

    fn events(&self, kind: &str, n: u64) -> Option<Vec<Fields>> {
        if kind != "random" && !EVENT_TYPES.contains(&kind) {
            return None;
        }
        let now = now_ms();
        let events = (0..n).map(|_| {
            let seq = self.produced.fetch_add(1, Ordering::Relaxed);
            // A random mix of well-formed orders; malformed ones on request.
            let kind = match kind {
                "random" => EVENT_TYPES[rand::random_range(0..EVENT_TYPES.len() - 1)],
                k => k,
            };
            demo_event(kind, seq, now).unwrap_or_default()
        });
        Some(events.collect())
    }

    fn max_rate(&self) -> u32 {
        MAX_RATE
    }

    fn producer(&self) -> ProducerState {
        self.trickle.state()
    }

    fn set_producer(&self, per_second: u32, stream: Option<String>) {
        self.trickle.set(per_second, stream);
    }

    fn run(
        self: Arc<Self>,
        redis: Option<RedisConfig>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.trickle.run(redis, stop).await })
    }
}
