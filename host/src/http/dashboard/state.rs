//! The `state` event: what the page draws, rebuilt every second (and at
//! once after an action) while a page is subscribed (at most
//! [`MAX_SUBSCRIBERS`] at once), and the history
//! sampler behind the charts, which runs whether or not anyone watches so a
//! page opened later still shows the last minutes.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::super::{App, partitioned_targets, status_targets};
use super::MAX_SUBSCRIBERS;
use super::error::ApiError;
use super::history::{History, Series};
use crate::http::feed::ProducerState;
use crate::ops::partition_status::PartitionedStatus;
use crate::ops::status::{LIVE_COUNT_CAP, StatusOptions, StreamStatus};
use crate::runtime::StatsSnapshot;
use crate::runtime::port::PipelineView;
use crate::runtime::port::PluginEvent;

/// How often the history is sampled and the state sent.
const TICK: Duration = Duration::from_secs(1);
/// Pending entries listed per group (the pending-entries table).
const PENDING_ROWS: usize = 50;

/// The newest state, and the sampler's memory.
#[derive(Debug)]
pub struct LiveState {
    history: Mutex<History>,
    latest: watch::Sender<Option<Arc<str>>>,
    kick: Notify,
    /// Event streams open now (at most [`MAX_SUBSCRIBERS`]).
    subscribers: Arc<AtomicUsize>,
}

impl Default for LiveState {
    fn default() -> Self {
        Self {
            history: Mutex::new(History::default()),
            latest: watch::Sender::new(None),
            kick: Notify::new(),
            subscribers: Arc::default(),
        }
    }
}

impl LiveState {
    /// Sends a new state now (after an action).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// A place for one more event stream, kept until dropped; `None` at
    /// [`MAX_SUBSCRIBERS`].
    fn seat(&self) -> Option<Seat> {
        self.subscribers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SUBSCRIBERS).then_some(n + 1)
            })
            .ok()
            .map(|_| Seat(self.subscribers.clone()))
    }
}

/// One event stream's place among the subscribers.
#[derive(Debug)]
struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One pipeline in the state.
#[derive(Debug, Serialize)]
struct PipelineState {
    name: String,
    stream: String,
    group: String,
    consumer: String,
    dlq: String,
    plugin: PluginState,
    in_flight: u64,
    crash_next: u64,
    crashed: u64,
    claim_idle_ms: u64,
    counters: StatsSnapshot,
}

#[derive(Debug, Serialize)]
struct PluginState {
    name: String,
    version: String,
    identity: String,
    path: PathBuf,
    watched: bool,
}

/// The `state` event's data.
#[derive(Debug, Serialize)]
struct DashState {
    at_ms: u64,
    draining: bool,
    pipelines: Vec<PipelineState>,
    streams: Vec<StreamStatus>,
    partitioned: Vec<PartitionedStatus>,
    redis_error: Option<String>,
    producer: Option<ProducerState>,
    plugin_log: Vec<PluginEvent>,
    series: Series,
}

fn pipeline_state(p: &PipelineView) -> PipelineState {
    let plugin = p.plugin.current();
    PipelineState {
        name: p.name.clone(),
        stream: p.stream.clone(),
        group: p.group.clone(),
        consumer: p.config.consumer.clone(),
        dlq: p.dlq.clone(),
        plugin: PluginState {
            name: plugin.name().to_owned(),
            version: plugin.version().to_owned(),
            identity: plugin.identity(),
            path: p.config.plugin.clone(),
            watched: p.config.watch,
        },
        in_flight: p.inflight.count() as u64,
        crash_next: p.controls.armed(),
        crashed: p.controls.crashed(),
        claim_idle_ms: p.config.claim_idle.as_millis() as u64,
        counters: p.stats.snapshot(),
    }
}

async fn build(app: &App) -> DashState {
    // Everything below was read at or after this time.
    let at_ms = crate::vocab::ids::now_ms();
    let running = app.port.running();
    let (streams, partitioned, redis_error) = match app.port.redis() {
        None => (
            Vec::new(),
            Vec::new(),
            Some("no connection is configured".to_owned()),
        ),
        Some(redis) => {
            let shape = |opts: &mut StatusOptions| {
                opts.oldest_pending = PENDING_ROWS;
                opts.newest_dead_letters = 5;
                opts.dlq_scan = 1_000;
                opts.count_cap = LIVE_COUNT_CAP;
            };
            let targets = status_targets(&running, shape);
            // Partition rows list no pending entries: the table of the
            // partitions this process runs does.
            let declared = partitioned_targets(&app.port.partitioned(), |opts| {
                shape(opts);
                opts.oldest_pending = 0;
            });
            // A stream not created yet (the reader makes it with MKSTREAM)
            // is left out.
            match app
                .collect_statuses(&redis, &targets, &declared, true)
                .await
            {
                Ok((streams, partitioned)) => (streams, partitioned, None),
                Err(e) => (Vec::new(), Vec::new(), Some(e)),
            }
        }
    };
    let series = app
        .dashboard
        .live
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .series()
        .clone();
    DashState {
        at_ms,
        draining: app.port.is_draining(),
        pipelines: running.iter().map(pipeline_state).collect(),
        streams,
        partitioned,
        redis_error,
        producer: app.dashboard.feed.as_ref().map(|f| f.producer()),
        plugin_log: app.port.plugin_log().newest_first(),
        series,
    }
}

/// Samples every second and, while a page is subscribed, sends the state
/// then and after every kick; until `stop`.
pub async fn run(app: &App, stop: CancellationToken) {
    let live = &app.dashboard.live;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let sample = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => true,
            () = live.kick.notified() => false,
        };
        if sample {
            let running = app.port.running();
            let look = app.look(&running).await;
            live.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sample(crate::vocab::ids::now_ms(), &running, look.as_ref());
        }
        if live.latest.receiver_count() > 0 {
            let state = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                s = build(app) => s,
            };
            match serde_json::to_string(&state) {
                Ok(json) => {
                    live.latest.send_replace(Some(json.into()));
                }
                Err(e) => tracing::error!(error = %e, "cannot encode the dashboard state"),
            }
        }
    }
}

/// `GET /api/info`.
pub async fn info(State(app): State<Arc<App>>) -> Response {
    let mut streams: Vec<String> = Vec::new();
    for p in app.port.running() {
        if !streams.contains(&p.stream) {
            streams.push(p.stream);
        }
    }
    Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "admin": app.port.http().admin.is_some(),
        "demo": app.dashboard.feed.is_some(),
        "streams": streams,
        "event_types": app.dashboard.feed.as_ref().map(|f| f.kinds()).unwrap_or_default(),
    }))
    .into_response()
}

/// `GET /api/events`: the state now, then each new one, until the page
/// goes or the listener stops; `503` while [`MAX_SUBSCRIBERS`] streams
/// are open.
pub async fn events(
    State(app): State<Arc<App>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let seat = app.dashboard.live.seat().ok_or_else(|| {
        ApiError::unavailable(format!(
            "{MAX_SUBSCRIBERS} pages already watch this dashboard: close one and reload"
        ))
    })?;
    let mut latest = app.dashboard.live.latest.subscribe();
    // Whatever is there is sent at once; a fresh one follows.
    latest.mark_changed();
    app.dashboard.live.kick();
    let stop = app.stop.clone();
    let updates = stream::unfold(
        (latest, stop, seat),
        |(mut latest, stop, seat)| async move {
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return None,
                    changed = latest.changed() => changed.ok()?,
                }
                let data = latest.borrow_and_update().clone();
                if let Some(data) = data {
                    let event = Event::default().event("state").data(&*data);
                    return Some((Ok(event), (latest, stop, seat)));
                }
            }
        },
    );
    Ok(Sse::new(updates).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_a_seat_up_to_the_cap_and_leaving_frees_it() {
        let live = LiveState::default();
        let mut seats: Vec<Seat> = (0..MAX_SUBSCRIBERS).map(|_| live.seat().unwrap()).collect();
        assert!(live.seat().is_none());
        seats.pop();
        assert!(live.seat().is_some());
    }
}
