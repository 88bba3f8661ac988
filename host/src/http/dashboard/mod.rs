//! The live dashboard served on the HTTP listener (`host demo`, `host run
//! --http`): the page and its assets (compiled in), a `state` event stream
//! (server-sent events) built from the [`Port`] and a look at Redis, the
//! charts' history, and the operator actions of `docs/dashboard.md` —
//! refused unless the process allows them (`--http-admin`) and the request
//! carries the admin token, which entry payloads need too.

mod actions;
mod assets;
mod auth;
mod consumers;
mod error;
mod from_feed;
pub mod history;
mod state;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

pub use self::error::ApiError;
use self::state::LiveState;
use super::App;
use crate::http::feed::Feed;

/// The largest plugin file the page may upload.
pub const MAX_UPLOAD: usize = 64 << 20;
/// The most events one produce request may append.
pub const MAX_PRODUCE: u64 = 10_000;
/// The largest JSON body an action may send.
pub const MAX_JSON_BODY: usize = 64 << 10;
/// The most event streams (`/api/events`, one per open page) at once.
pub const MAX_SUBSCRIBERS: usize = 16;
/// How long an action waits for each answer from Redis (to connect, too).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The most an action that writes in steps (produce) spends before it
/// answers with what it has done so far.
pub const ACTION_BUDGET: Duration = Duration::from_secs(30);

/// The dashboard's own state beside the port.
#[derive(Debug)]
pub struct Dashboard {
    /// What it produces from, if anything (`host demo`'s orders).
    feed: Option<Arc<dyn Feed>>,
    live: LiveState,
}

impl Dashboard {
    /// A dashboard producing from `feed`, if any.
    pub fn new(feed: Option<Arc<dyn Feed>>) -> Self {
        Self {
            feed,
            live: LiveState::default(),
        }
    }
}

/// The dashboard's routes: the page and its reads, then the actions, each
/// behind the admin token.
pub(super) fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let production = match app.dashboard.feed {
        Some(_) => Router::new()
            .route("/api/produce", post(from_feed::produce))
            .route("/api/producer", post(from_feed::producer)),
        None => Router::new(),
    };
    let actions = production
        .route("/api/consumers", post(consumers::add_consumer))
        .route(
            "/api/consumers/{pipeline}/remove",
            post(consumers::remove_consumer),
        )
        .route("/api/consumers/{pipeline}/crash", post(consumers::crash))
        .route(
            "/api/consumers/{pipeline}/reclaim",
            post(consumers::reclaim),
        )
        .route("/api/replay", post(actions::replay))
        .route("/api/trim", post(actions::trim))
        .route("/api/dlq/redrive", post(actions::redrive))
        .route(
            "/api/plugins/{pipeline}",
            post(upload::upload).layer(DefaultBodyLimit::max(MAX_UPLOAD)),
        )
        .route_layer(from_fn_with_state(app, auth::require_admin));
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/app.js", get(assets::script))
        .route("/assets/app.css", get(assets::style))
        .route("/api/info", get(state::info))
        .route("/api/events", get(state::events))
        .route("/api/dlq", get(actions::dlq_list))
        .merge(actions)
}

/// The dashboard's background work — the history sampler and state
/// builder, and the feed's steady producer — until `stop`.
pub(super) async fn background(app: Arc<App>, stop: CancellationToken) {
    let producer = async {
        if let Some(feed) = &app.dashboard.feed {
            feed.clone().run(app.port.redis(), stop.clone()).await;
        }
    };
    tokio::join!(state::run(&app, stop.clone()), producer);
}
