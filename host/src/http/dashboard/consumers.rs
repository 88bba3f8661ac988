//! The dashboard's actions on consumers (`docs/dashboard.md`): add one to
//! a group, remove one, "crash next N" deliveries, and "reclaim now" —
//! through the pipelines' own controls and the process's control inbox.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::super::App;
use super::actions::Answer;
use super::error::ApiError;
use crate::runtime::port::Control;
use crate::stream::inspect;

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
    let running = app.port.running();
    let template = running
        .iter()
        .filter(|p| p.group == body.group && body.stream.as_ref().is_none_or(|s| *s == p.stream))
        .min_by(|a, b| a.name.cmp(&b.name))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no running pipeline consumes as group {:?}",
                body.group
            ))
        })?;
    let mut con = app.redis().await?;
    let mut taken: BTreeSet<String> = running
        .iter()
        .flat_map(|p| [p.name.clone(), p.config.consumer.clone()])
        .collect();
    let known = inspect::consumers(&mut con, &template.stream, &template.group)
        .await
        .map_err(|e| ApiError::unavailable(format!("redis: {e}")))?;
    taken.extend(known.into_iter().map(|c| c.name));
    let base = base_name(&template.config.consumer);
    let name = (1..)
        .map(|k| format!("{base}-{k}"))
        .find(|n| !taken.contains(n))
        .unwrap_or_default();
    let like = template.name.clone();
    let (pipeline, consumer) = (name.clone(), name.clone());
    app.port
        .control(|reply| Control::Add {
            like,
            name: pipeline,
            consumer,
            reply,
        })
        .await?;
    app.done(serde_json::json!({ "pipeline": name, "consumer": name }))
}

/// `notifications-2` → `notifications`: new consumers are numbered after
/// the family they join.
fn base_name(consumer: &str) -> &str {
    match consumer.rsplit_once('-') {
        Some((base, n))
            if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => consumer,
    }
}

/// `POST /api/consumers/{pipeline}/remove`.
pub async fn remove_consumer(State(app): State<Arc<App>>, Path(name): Path<String>) -> Answer {
    let pipeline = name.clone();
    app.port
        .control(|reply| Control::Remove {
            name: pipeline,
            reply,
        })
        .await?;
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

#[cfg(test)]
mod tests {
    use super::base_name;

    #[test]
    fn new_consumers_join_the_family_of_the_one_copied() {
        assert_eq!(base_name("notifications-2"), "notifications");
        assert_eq!(base_name("web-01-7"), "web-01");
        assert_eq!(base_name("notify"), "notify");
        assert_eq!(base_name("a-"), "a-");
        assert_eq!(base_name("-3"), "-3");
    }
}
