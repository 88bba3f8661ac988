//! The live dashboard served on the HTTP listener (`host demo`, `host run
//! --http`): the page and its assets (compiled in), a `state` event stream
//! (server-sent events) built from the [`Board`] and a look at Redis, the
//! charts' history, and the operator actions of `docs/dashboard.md` —
//! refused unless the process allows them (`--http-admin`) and the request
//! carries the admin token.

mod actions;
mod assets;
mod auth;
mod error;
pub mod history;
pub mod producer;
mod state;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use self::auth::Admin;
use self::producer::Producer;
use self::state::Hub;
use super::App;
use crate::config::Dashboard as DashboardConfig;

/// The largest plugin file the page may upload.
pub const MAX_UPLOAD: usize = 64 << 20;

/// The dashboard's own state beside the board.
#[derive(Debug)]
pub struct Dashboard {
    admin: Admin,
    producer: Option<Producer>,
    hub: Hub,
    /// Numbers the events produced from the page.
    produced: AtomicU64,
}

impl Dashboard {
    /// A dashboard as `config` allows.
    pub fn new(config: &DashboardConfig) -> Self {
        Self {
            admin: Admin::new(config.admin.clone()),
            producer: config.trickle.as_ref().map(Producer::new),
            hub: Hub::default(),
            produced: AtomicU64::new(0),
        }
    }
}

/// The dashboard's routes.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/app.js", get(assets::script))
        .route("/assets/app.css", get(assets::style))
        .route("/api/info", get(state::info))
        .route("/api/events", get(state::events))
        .route("/api/dlq", get(actions::dlq_list))
        .route("/api/produce", post(actions::produce))
        .route("/api/producer", post(actions::producer))
        .route("/api/consumers", post(actions::add_consumer))
        .route(
            "/api/consumers/{pipeline}/remove",
            post(actions::remove_consumer),
        )
        .route("/api/consumers/{pipeline}/crash", post(actions::crash))
        .route("/api/consumers/{pipeline}/reclaim", post(actions::reclaim))
        .route("/api/replay", post(actions::replay))
        .route("/api/trim", post(actions::trim))
        .route("/api/dlq/redrive", post(actions::redrive))
        .route(
            "/api/plugins/{pipeline}",
            post(actions::upload).layer(DefaultBodyLimit::max(MAX_UPLOAD)),
        )
}

/// The dashboard's background work — the history sampler and state
/// builder, and the producer — until `stop`.
pub(super) async fn background(app: Arc<App>, stop: CancellationToken) {
    let producer = async {
        if let Some(p) = &app.dashboard.producer {
            p.run(app.board.redis(), &app.probe, stop.clone()).await;
        }
    };
    tokio::join!(state::run(&app, stop.clone()), producer);
}
