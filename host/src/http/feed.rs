//! What a face above the HTTP side may feed the dashboard with: events to
//! produce on request (`POST /api/produce`) and a steady producer
//! (`POST /api/producer`, and `producer` in the page's state). `host demo`
//! feeds its order events; a plain `host run --http` has no feed, so its
//! dashboard neither offers those routes nor shows a producer.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::RedisConfig;
use crate::ops::produce::Fields;

/// The steady producer as the page's state shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProducerState {
    /// Where it appends.
    pub stream: String,
    /// Events per second (0: paused).
    pub per_second: u32,
    /// Events appended so far.
    pub produced: u64,
    /// The last append's failure, if the last one failed.
    pub error: Option<String>,
}

/// A source of events for the dashboard.
pub trait Feed: Send + Sync + std::fmt::Debug {
    /// The kinds of event it makes (the page's produce menu); `random`
    /// asks for a mix.
    fn kinds(&self) -> Vec<String>;
    /// The next `n` events of `kind` (one of [`Feed::kinds`], or `random`);
    /// `None` for a kind it does not make.
    fn events(&self, kind: &str, n: u64) -> Option<Vec<Fields>>;
    /// The highest rate the steady producer takes.
    fn max_rate(&self) -> u32;
    /// What the steady producer does now.
    fn producer(&self) -> ProducerState;
    /// Sets the steady producer's rate and, if given, its stream.
    fn set_producer(&self, per_second: u32, stream: Option<String>);
    /// The steady producer's work, on `redis`, until `stop`.
    fn run(
        self: Arc<Self>,
        redis: Option<RedisConfig>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()>;
}
