//! The process's optional HTTP side (`--http ADDR`): Prometheus metrics at
//! `/metrics`, liveness at `/healthz`, readiness at `/readyz`. One
//! process-level task, bound before any plugin is compiled (so a taken
//! address is a start-up error), serving until the pipelines have drained;
//! every answer is built from the [`Board`] and, for what Redis knows, a
//! look at Redis bounded by [`probe::PROBE_BUDGET`].

pub mod health;
pub mod metrics;
pub mod probe;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::health::{PipelineState, Verdict};
use self::metrics::{PipelineScrape, Scrape};
use self::probe::{RedisLook, RedisProbe};
use super::board::{Board, PipelineView};
use crate::config::HttpListen;

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
    board: Arc<Board>,
}

/// What the handlers share.
#[derive(Debug)]
struct App {
    board: Arc<Board>,
    probe: RedisProbe,
}

impl HttpServer {
    /// Binds `listen`; the endpoints will answer from `board`.
    pub async fn bind(listen: &HttpListen, board: Arc<Board>) -> Result<Self, HttpError> {
        let listener = TcpListener::bind((listen.host.as_str(), listen.port))
            .await
            .map_err(|source| HttpError::Bind {
                addr: listen.to_string(),
                source,
            })?;
        Ok(Self { listener, board })
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` fires, then lets answers in progress finish.
    pub async fn run(self, stop: CancellationToken) {
        if let Ok(addr) = self.local_addr() {
            tracing::info!(address = %addr, endpoints = "/metrics /healthz /readyz", "http listening");
        }
        let app = Arc::new(App {
            board: self.board,
            probe: RedisProbe::default(),
        });
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(app);
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the http listener failed");
        }
    }
}

impl App {
    /// Looks at Redis for the running pipelines' groups (`None`: no
    /// connection is configured).
    async fn look(&self, running: &[PipelineView]) -> Option<RedisLook> {
        let redis = self.board.redis()?;
        let groups: Vec<(String, String)> = running
            .iter()
            .map(|p| (p.stream.clone(), p.group.clone()))
            .collect();
        Some(self.probe.look(&redis, &groups).await)
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let running = app.board.running();
    let redis = app.look(&running).await;
    let pipelines = running
        .iter()
        .map(|p| PipelineScrape {
            name: p.name.clone(),
            stream: p.stream.clone(),
            group: p.group.clone(),
            stats: p.stats.snapshot(),
            call_times: p.stats.call_times().snapshot(),
            in_flight: p.inflight.count() as u64,
            plugin: p.plugin.current().identity(),
        })
        .collect();
    match metrics::render(Scrape { pipelines, redis }) {
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

fn answer(verdict: Verdict) -> Response {
    let code = if verdict.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(verdict)).into_response()
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let running = states(&app.board.running());
    answer(health::liveness(app.board.is_draining(), &running))
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let views = app.board.running();
    let redis = app.look(&views).await.unwrap_or_else(|| RedisLook {
        down: Some("no connection is configured".into()),
        ..RedisLook::default()
    });
    answer(health::readiness(
        app.board.is_draining(),
        &app.board.declared(),
        &states(&views),
        &redis,
    ))
}
