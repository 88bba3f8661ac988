//! The dashboard's actions on streams (`docs/dashboard.md`) — replay, trim,
//! redrive — and its dead-letter list: each
//! does one thing through the same code as the operator commands
//! (`crate::ops`), answers what it did, and kicks the state so the page
//! shows the effect at once. The admin token is checked before any of them
//! runs ([`super::auth`]); the list shows entries' fields only with it.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use redis::aio::MultiplexedConnection;
use serde::Deserialize;

use super::super::App;
use super::auth;
use super::error::ApiError;
use crate::ops::dlq;
use crate::ops::{replay, trim as ops_trim};
use crate::runtime::port::PipelineView;
use crate::stream::inspect;
use crate::vocab::admission::Admission;
use crate::vocab::retention::Retention;

/// What an action answers: done, or refused.
pub(super) type Answer = Result<Response, ApiError>;

/// The most entries one replay may show.
const MAX_REPLAY: usize = 1_000;
/// The most dead letters listed or redriven by id at once.
const MAX_RECORDS: usize = 1_000;
/// The most dead letters `/api/dlq` looks at for those of a `kind`.
const MAX_DLQ_SCAN: usize = 10_000;

fn ok(body: serde_json::Value) -> Answer {
    Ok(Json(body).into_response())
}

impl App {
    pub(super) fn pipeline(&self, name: &str) -> Result<PipelineView, ApiError> {
        self.port
            .running()
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ApiError::not_found(format!("no running pipeline is named {name:?}")))
    }

    /// The pipelines consuming `stream` (default: the first pipeline's),
    /// refusing a stream no pipeline here consumes: the dashboard acts on
    /// what this process serves, never on arbitrary keys.
    pub(super) fn serving(
        &self,
        stream: Option<&str>,
    ) -> Result<(String, Vec<PipelineView>), ApiError> {
        let running = self.port.running();
        let stream = match stream {
            Some(s) => s.to_owned(),
            None => running
                .first()
                .map(|p| p.stream.clone())
                .ok_or_else(|| ApiError(StatusCode::CONFLICT, "no pipeline is running".into()))?,
        };
        let on: Vec<PipelineView> = running.into_iter().filter(|p| p.stream == stream).collect();
        if on.is_empty() {
            return Err(ApiError::not_found(format!(
                "no running pipeline consumes stream {stream:?}"
            )));
        }
        Ok((stream, on))
    }

    /// The actions' connection (see [`App::actions`]).
    /// A connection for an action on `key`: to the node that holds it.
    pub(super) async fn redis(&self, key: &str) -> Result<MultiplexedConnection, ApiError> {
        let redis = self
            .port
            .redis()
            .ok_or_else(|| ApiError::unavailable("no connection is configured"))?;
        self.actions
            .of(&redis, key)
            .await
            .map_err(|e| ApiError::unavailable(format!("redis: {e}")))
    }

    pub(super) fn done(&self, answer: serde_json::Value) -> Answer {
        self.dashboard.live.kick();
        ok(answer)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    stream: Option<String>,
    from: Option<String>,
    to: Option<String>,
    count: Option<usize>,
    pipeline: Option<String>,
}

/// `POST /api/replay`: a window of the stream, and with `pipeline` what
/// its plugin would do with each entry (a dry run).
pub async fn replay(State(app): State<Arc<App>>, Json(body): Json<ReplayBody>) -> Answer {
    let count = body.count.unwrap_or(100);
    if !(1..=MAX_REPLAY).contains(&count) {
        return Err(ApiError::bad(format!("count must be 1 to {MAX_REPLAY}")));
    }
    let (stream, _) = app.serving(body.stream.as_deref())?;
    let from = crate::ops::parse_position(body.from.as_deref().unwrap_or("-"))?;
    let to = crate::ops::parse_position(body.to.as_deref().unwrap_or("+"))?;
    let judge = match &body.pipeline {
        Some(name) => Some(app.pipeline(name)?),
        None => None,
    };
    let mut con = app.redis(&stream).await?;
    let entries: Vec<replay::Sourced> = inspect::range(&mut con, &stream, &from, &to, count)
        .await
        .map_err(|e| ApiError::bad(format!("redis: {e}")))?
        .into_iter()
        .map(|e| (None, e))
        .collect();
    let rows = match judge {
        None => replay::rows(&entries),
        Some(p) => {
            let plugin = p.plugin.current();
            let admission = Admission {
                max_deliveries: p.config.max_deliveries,
                max_entry_size: p.config.max_entry_size,
                max_fields: p.config.max_fields,
            };
            let on = stream.clone();
            tokio::task::spawn_blocking(move || {
                replay::judge(plugin, admission, &on, &entries, &|| {})
            })
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        }
    };
    let totals = replay::ReplayTotals::of(&rows);
    ok(serde_json::json!({ "stream": stream, "rows": rows, "totals": totals }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrimBody {
    stream: Option<String>,
    maxlen: Option<u64>,
    max_age_ms: Option<u64>,
}

/// `POST /api/trim`: group-safe, as `host trim` without `--force`.
pub async fn trim(State(app): State<Arc<App>>, Json(body): Json<TrimBody>) -> Answer {
    let policy = Retention::of(body.maxlen, body.max_age_ms.map(Duration::from_millis))
        .ok_or_else(|| ApiError::bad("give maxlen, max_age_ms or both"))?;
    let (stream, _) = app.serving(body.stream.as_deref())?;
    let mut con = app.redis(&stream).await?;
    let outcome = ops_trim::trim(&mut con, &stream, policy, false, true).await?;
    app.done(serde_json::to_value(outcome).unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqQuery {
    stream: Option<String>,
    limit: Option<usize>,
    kind: Option<String>,
}

/// The dead-letter stream of the pipelines on `stream`.
fn dlq_of(on: &[PipelineView]) -> String {
    on.first().map(|p| p.dlq.clone()).unwrap_or_default()
}

/// `GET /api/dlq`: the newest dead letters, one whose packed fields are
/// malformed listed with `undecodable`; their entries' fields only with the
/// admin token.
pub async fn dlq_list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<DlqQuery>,
) -> Answer {
    let reveal = auth::reveals(app.port.http().admin.as_ref(), &headers)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_RECORDS).contains(&limit) {
        return Err(ApiError::bad(format!("limit must be 1 to {MAX_RECORDS}")));
    }
    let (_, on) = app.serving(q.stream.as_deref())?;
    let key = dlq_of(&on);
    let mut con = app.redis(&key).await?;
    let records = dlq::newest(&mut con, &key, limit, q.kind.as_deref(), MAX_DLQ_SCAN).await?;
    ok(
        serde_json::json!({ "dlq": key, "fields_shown": reveal, "records": shown(&records, reveal) }),
    )
}

/// `records` as JSON, without their entries' fields unless `reveal`.
fn shown(records: &[dlq::DeadLetter], reveal: bool) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|r| {
            let mut record = serde_json::to_value(r).unwrap_or_default();
            if let (false, Some(map)) = (reveal, record.as_object_mut()) {
                map.remove("fields");
            }
            record
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveBody {
    stream: Option<String>,
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
}

/// `POST /api/dlq/redrive`: each record back onto its source stream, one
/// atomic step each (as `host dlq redrive`), on connections of this
/// request's own (a `WATCH` cannot share one). The answer lists the first
/// [`MAX_RECORDS`] rows and counts every row in `totals`.
pub async fn redrive(State(app): State<Arc<App>>, Json(body): Json<RedriveBody>) -> Answer {
    let (_, on) = app.serving(body.stream.as_deref())?;
    let key = dlq_of(&on);
    let redis = app
        .port
        .redis()
        .ok_or_else(|| ApiError::unavailable("no connection is configured"))?;
    let unavailable = |e: crate::ops::OpsError| ApiError::unavailable(e.to_string());
    let mut con = crate::ops::connect_for(&redis, &key)
        .await
        .map_err(unavailable)?;
    let endpoint = app
        .actions
        .endpoint(&redis, &key)
        .await
        .map_err(ApiError::unavailable)?;
    let mut mover = dlq::redriver_at(&endpoint).await.map_err(unavailable)?;
    let report = match (&body.ids, body.all) {
        (Some(ids), false) if !ids.is_empty() && ids.len() <= MAX_RECORDS => {
            dlq::redrive_ids(&mut con, &mut mover, &key, ids, MAX_RECORDS).await?
        }
        (None, true) => {
            let all = dlq::Selection::start(&mut con, &key, dlq::Filter::default()).await?;
            dlq::redrive_selection(&mut con, &mut mover, &key, all, MAX_RECORDS).await?
        }
        _ => {
            return Err(ApiError::bad(format!(
                "give either ids (1 to {MAX_RECORDS}) or all: true"
            )));
        }
    };
    tracing::info!(dlq = %key, records = report.totals.records, moved = report.totals.of("moved"),
        "dead letters redriven from the dashboard");
    let mut answer = serde_json::to_value(report).unwrap_or_default();
    answer["dlq"] = key.into();
    app.done(answer)
}
