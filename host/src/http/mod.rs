//! The process's optional HTTP side (`--http ADDR`), a face of the runtime:
//! Prometheus metrics at `/metrics`, liveness at `/healthz`, readiness at
//! `/readyz`, what `host status` shows, as JSON, at `/api/status`, and the
//! dashboard. `main` binds its listener before any plugin is compiled (so a
//! taken address is a start-up error) and hands it to the runtime as a
//! [`Face`], which serves it until the pipelines have drained; every answer
//! is built from the runtime's [`Port`] and, for what Redis knows, a look at
//! Redis bounded by [`probe::PROBE_BUDGET`]. Hostile by default:
//! connections are capped and timed out ([`connections`]), every request
//! but the health probes must name this listener ([`access`]), and the
//! dashboard's actions and entry payloads need the admin token.

mod access;
mod connections;
mod dashboard;
pub mod feed;
pub mod health;
pub mod metrics;
pub mod probe;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::feed::Feed;
use self::health::{HealthAnswer, PipelineState};
use self::metrics::{PipelineScrape, Scrape};
use self::probe::{CachedNodes, RedisLook, RedisProbe};
use crate::config::{Dashboard as DashboardConfig, HttpListen, RedisConfig};
use crate::ops::partition_status::{self, PartitionedStatus};
use crate::ops::status::{LIVE_COUNT_CAP, StatusOptions, StreamStatus};
use crate::runtime::StatsSnapshot;
use crate::runtime::port::{Face, PartitionedView, PipelineView, Port};

/// The HTTP side's limits, as the README and `docs/dashboard.md` list them.
pub mod limits {
    pub use super::connections::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD};
    pub use super::dashboard::{
        ACTION_BUDGET, ACTION_TIMEOUT, MAX_JSON_BODY, MAX_SUBSCRIBERS, MAX_UPLOAD,
    };
}

/// Why the HTTP side cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address cannot be listened on (taken, not local, not permitted).
    #[error("cannot listen on {addr} (--http): {source}")]
    Bind {
        /// The address as configured.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    /// The host of `--http` as configured: requests may name it.
    listen_host: String,
    dashboard: DashboardConfig,
    /// What the dashboard produces from, if anything.
    feed: Option<Arc<dyn Feed>>,
}

/// What the handlers share.
#[derive(Debug)]
struct App {
    port: Arc<Port>,
    /// The host of `--http` as configured.
    listen_host: String,
    probe: RedisProbe,
    /// The dashboard's actions' connection: they write, so they wait
    /// longer for an answer than a look does (a timed-out write may still
    /// have happened, and a retry would repeat it).
    actions: CachedNodes,
    /// The connections status looks read on: to the server, or to each
    /// node a stream or partition is on.
    status_nodes: CachedNodes,
    dashboard: dashboard::Dashboard,
    /// Fires when the listener stops: long-lived answers (the event
    /// stream) end with it.
    stop: CancellationToken,
}

impl HttpServer {
    /// Binds `listen`, to serve as `dashboard` allows until a reload says
    /// otherwise ([`Port::http`]).
    pub async fn bind(listen: &HttpListen, dashboard: DashboardConfig) -> Result<Self, HttpError> {
        let listener = TcpListener::bind((listen.host.as_str(), listen.port))
            .await
            .map_err(|source| HttpError::Bind {
                addr: listen.to_string(),
                source,
            })?;
        Ok(Self {
            listener,
            listen_host: listen.host.to_ascii_lowercase(),
            dashboard,
            feed: None,
        })
    }

    /// Lets the dashboard produce from `feed` (`host demo`'s orders).
    pub fn with_feed(mut self, feed: Arc<dyn Feed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `port` until `stop` fires, then lets answers in progress
    /// finish.
    async fn run(self, port: Arc<Port>, stop: CancellationToken) {
        let address = self.local_addr().ok();
        if let Some(addr) = address {
            tracing::info!(address = %addr, dashboard = %format!("http://{addr}/"), admin = self.dashboard.admin.is_some(),
                endpoints = "/ /metrics /healthz /readyz /api/status /api/events", "http listening");
            if let Some(admin) = self.dashboard.admin.as_ref().filter(|a| a.announce) {
                // Generated, so nobody knows it yet; set the variable to
                // keep tokens out of the log.
                tracing::info!(link = %format!("http://{addr}/#token={}", admin.token),
                    "dashboard actions allowed with a generated admin token (set {} to choose it)", crate::config::TOKEN_ENV);
            }
        }
        let app = Arc::new(App {
            port,
            listen_host: self.listen_host,
            probe: RedisProbe::default(),
            actions: CachedNodes::new(dashboard::ACTION_TIMEOUT),
            status_nodes: CachedNodes::new(STATUS_BUDGET),
            dashboard: dashboard::Dashboard::new(self.feed),
            stop: stop.clone(),
        });
        let router = routes(app.clone());
        // Each ends only with `stop`.
        tokio::join!(
            connections::serve(self.listener, router, stop.clone()),
            dashboard::background(app.clone(), stop.clone()),
            access::announce_changes(app, address, stop),
        );
    }
}

impl Face for HttpServer {
    fn name(&self) -> &'static str {
        "http"
    }

    fn serve(self: Box<Self>, port: Arc<Port>, stop: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(self.run(port, stop))
    }
}

/// Every route: the health probes as they are; the rest behind the Host
/// check, with small bodies (the upload route reads its own).
fn routes(app: Arc<App>) -> Router {
    let checked = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/status", get(api_status))
        .merge(dashboard::routes(app.clone()))
        .layer(DefaultBodyLimit::max(dashboard::MAX_JSON_BODY))
        .layer(from_fn_with_state(app.clone(), access::check_host));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(checked)
        .with_state(app)
}

impl App {
    /// Looks at Redis for the running pipelines' groups (`None`: no
    /// connection is configured).
    async fn look(&self, running: &[PipelineView]) -> Option<RedisLook> {
        let redis = self.port.redis()?;
        let groups: Vec<(String, String)> = running
            .iter()
            .map(|p| (p.stream.clone(), p.group.clone()))
            .collect();
        Some(self.probe.look(&redis, &groups).await)
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let running = app.port.running();
    let redis = app.look(&running).await;
    let partitioned = app.port.partitioned();
    let partitions = match (app.port.redis(), &redis) {
        (Some(config), Some(look)) if look.down.is_none() => {
            app.probe.look_partitions(&config, &partitioned).await
        }
        _ => None,
    };
    let pipelines = running
        .iter()
        .map(|p| PipelineScrape {
            name: p.name.clone(),
            stream: p.stream.clone(),
            group: p.group.clone(),
            stats: p.stats.snapshot(),
            call_times: p.stats.call_times().snapshot(),
            wait_times: p.stats.wait_times().snapshot(),
            in_flight: p.inflight.count() as u64,
            plugin: p.plugin.current().identity(),
        })
        .collect();
    match metrics::render(Scrape {
        pipelines,
        redis,
        partitions,
    }) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn states(running: &[PipelineView]) -> Vec<PipelineState> {
    running
        .iter()
        .map(|p| PipelineState {
            name: p.name.clone(),
            stream: p.stream.clone(),
            group: p.group.clone(),
            failed: p.health.failure().map(|end| (end.task, end.how)),
        })
        .collect()
}

fn answer(verdict: HealthAnswer) -> Response {
    let code = if verdict.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(verdict)).into_response()
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let running = states(&app.port.running());
    answer(health::liveness(app.port.is_draining(), &running))
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let views = app.port.running();
    let redis = app.look(&views).await.unwrap_or_else(|| RedisLook {
        down: Some("no connection is configured".into()),
        ..RedisLook::default()
    });
    answer(health::readiness(
        app.port.is_draining(),
        &app.port.declared(),
        &states(&views),
        &redis,
    ))
}

/// The most `/api/status` may spend reading Redis: it reads more than a
/// scrape (consumers, oldest pending entries, the newest dead letters).
const STATUS_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

/// One running pipeline in `/api/status`.
#[derive(Debug, Serialize)]
struct PipelineStatus {
    name: String,
    stream: String,
    group: String,
    dlq: String,
    plugin: String,
    in_flight: u64,
    counters: StatsSnapshot,
}

/// The body of `/api/status`: the running pipelines with their counters,
/// each of their streams as `host status --json` shows it, and each
/// partitioned stream the configuration declares, whole, with a row per
/// partition (whoever runs it).
#[derive(Debug, Serialize)]
struct ApiStatus {
    pipelines: Vec<PipelineStatus>,
    streams: Vec<StreamStatus>,
    partitioned: Vec<PartitionedStatus>,
}

async fn api_status(State(app): State<Arc<App>>) -> Response {
    let running = app.port.running();
    let pipelines = running
        .iter()
        .map(|p| PipelineStatus {
            name: p.name.clone(),
            stream: p.stream.clone(),
            group: p.group.clone(),
            dlq: p.dlq.clone(),
            plugin: p.plugin.current().identity(),
            in_flight: p.inflight.count() as u64,
            counters: p.stats.snapshot(),
        })
        .collect();
    let Some(redis) = app.port.redis() else {
        return unavailable("no connection is configured".into());
    };
    let shape = |opts: &mut StatusOptions| opts.count_cap = LIVE_COUNT_CAP;
    let targets = status_targets(&running, shape);
    let declared = partitioned_targets(&app.port.partitioned(), shape);
    match app
        .collect_statuses(&redis, &targets, &declared, false)
        .await
    {
        Ok((streams, partitioned)) => Json(ApiStatus {
            pipelines,
            streams,
            partitioned,
        })
        .into_response(),
        Err(e) => unavailable(format!("redis: {e}")),
    }
}

/// Each declared partitioned stream, with the options to collect it with.
fn partitioned_targets(
    declared: &[PartitionedView],
    shape: impl Fn(&mut StatusOptions),
) -> Vec<(PartitionedView, StatusOptions)> {
    let mut targets: Vec<(PartitionedView, StatusOptions)> = Vec::new();
    for p in declared {
        if targets
            .iter()
            .any(|(t, _)| t.stream == p.stream && t.partitions == p.partitions)
        {
            continue;
        }
        let mut opts = StatusOptions::new(String::new());
        opts.retention = p.retention;
        shape(&mut opts);
        targets.push((p.clone(), opts));
    }
    targets
}

/// Each distinct stream (with its DLQ) of `running`, with the options to
/// collect it with: its retention, then whatever `shape` sets.
fn status_targets(
    running: &[PipelineView],
    shape: impl Fn(&mut StatusOptions),
) -> Vec<(String, StatusOptions)> {
    let mut targets: Vec<(String, StatusOptions)> = Vec::new();
    for p in running {
        if !targets
            .iter()
            .any(|(s, o)| *s == p.stream && o.dlq == p.dlq)
        {
            let mut opts = StatusOptions::new(p.dlq.clone());
            opts.retention = p.retention;
            shape(&mut opts);
            targets.push((p.stream.clone(), opts));
        }
    }
    targets
}

impl App {
    /// What `host status --json` shows of each target and each partitioned
    /// stream, read within [`STATUS_BUDGET`] on the status connections
    /// (each stream on its node). A stream that does not exist is an error
    /// unless `skip_missing`. After a failure the connections are
    /// forgotten, so the next look reopens them.
    async fn collect_statuses(
        &self,
        redis: &RedisConfig,
        targets: &[(String, StatusOptions)],
        partitioned: &[(PartitionedView, StatusOptions)],
        skip_missing: bool,
    ) -> Result<(Vec<StreamStatus>, Vec<PartitionedStatus>), String> {
        let looked = tokio::time::timeout(STATUS_BUDGET, async {
            let mut nodes = self.status_nodes.lock(redis).await?;
            let mut streams = Vec::with_capacity(targets.len());
            for (stream, opts) in targets {
                let mut con = nodes.of(stream).await.map_err(|e| e.to_string())?;
                match crate::ops::status::collect(&mut con, stream, opts).await {
                    Ok(status) => streams.push(status),
                    Err(crate::ops::OpsError::Usage(_)) if skip_missing => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            let mut whole = Vec::with_capacity(partitioned.len());
            for (p, opts) in partitioned {
                let all: Vec<u32> = (0..p.partitions).collect();
                let status =
                    partition_status::collect(&mut nodes, &p.stream, p.partitions, &all, opts)
                        .await
                        .map_err(|e| e.to_string())?;
                whole.push(status);
            }
            Ok((streams, whole))
        })
        .await;
        let failure = match looked {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(e)) => e,
            Err(_) => format!(
                "no answer within {}",
                humantime::format_duration(STATUS_BUDGET)
            ),
        };
        self.status_nodes.forget().await;
        Err(failure)
    }
}

fn unavailable(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "status": "unavailable", "reasons": [reason] })),
    )
        .into_response()
}
