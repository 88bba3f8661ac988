//! The dashboard's actions on consumers (`docs/dashboard.md`): add one to
//! a group, remove one (the runtime's port takes both through the path of a
//! config reload), "crash next N" deliveries, and "reclaim now" (the
//! pipelines' own controls).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::super::App;
use super::actions::Answer;
use super::error::ApiError;

/// How long "reclaim now" waits for the reaper's sweep.
const RECLAIM_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    group: String,
    stream: Option<String>,
}

/// `POST /api/consumers`: another consumer of a group, a copy of its first
/// pipeline under a consumer name neither this process nor Redis knows.
pub async fn add_consumer(State(app): State<Arc<App>>, Json(body): Json<AddBody>) -> Answer {
    let name = app
        .port
        .add_consumer(&body.group, body.stream.as_deref())
        .await?;
    app.done(serde_json::json!({ "pipeline": name, "consumer": name }))
}

/// `POST /api/consumers/{pipeline}/remove`.
pub async fn remove_consumer(State(app): State<Arc<App>>, Path(name): Path<String>) -> Answer {
    app.port.remove_consumer(&name).await?;
    app.done(serde_json::json!({ "pipeline": name }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashBody {
    count: u64,
}

/// `POST /api/consumers/{pipeline}/crash`.
pub async fn crash(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Json(body): Json<CrashBody>,
) -> Answer {
    let max = crate::runtime::port::MAX_CRASH;
    if !(1..=max).contains(&body.count) {
        return Err(ApiError::bad(format!("count must be 1 to {max}")));
    }
    let p = app.pipeline(&name)?;
    let armed = p.controls.crash_next(body.count);
    tracing::info!(pipeline = %name, armed, "crash next N: deliveries will be dropped unacked");
    app.done(serde_json::json!({ "pipeline": name, "crash_next": armed }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReclaimBody {
    min_idle_ms: Option<u64>,
}

/// `POST /api/consumers/{pipeline}/reclaim`.
pub async fn reclaim(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Option<Json<ReclaimBody>>,
) -> Answer {
    let min_idle = Duration::from_millis(body.unwrap_or_default().0.min_idle_ms.unwrap_or(1_000));
    let p = app.pipeline(&name)?;
    let claimed = tokio::time::timeout(RECLAIM_WAIT, p.controls.reclaim_now(min_idle))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                "the reaper did not finish its sweep within 15s".into(),
            )
        })?
        .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
    app.done(serde_json::json!({ "pipeline": name, "claimed": claimed }))
}
