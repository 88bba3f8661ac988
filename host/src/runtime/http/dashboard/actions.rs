//! The dashboard's actions (`docs/dashboard.md`): each checks the admin
//! token, does one thing through the same code as the operator commands
//! (`crate::ops`) or the pipeline's own controls, answers what it did, and
//! kicks the state so the page shows the effect at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use redis::aio::MultiplexedConnection;
use serde::Deserialize;

use super::super::App;
use super::error::ApiError;
use super::producer::MAX_RATE;
use crate::ops::dlq;
use crate::ops::produce::{EVENT_TYPES, Fields, demo_event};
use crate::ops::{replay, trim as ops_trim};
use crate::plugin::content_hash;
use crate::runtime::Admission;
use crate::runtime::board::{Control, PipelineView};
use crate::runtime::plugin_log::ReloadOutcome;
use crate::stream::inspect;
use crate::stream::produce::add_batch;
use crate::stream::retention::Retention;

type Answer = Result<Response, ApiError>;

/// The most events one produce request may append.
const MAX_PRODUCE: u64 = 10_000;
/// The most entries one replay may show.
const MAX_REPLAY: usize = 1_000;
/// The most dead letters listed or redriven by id at once.
const MAX_RECORDS: usize = 1_000;
/// The most dead letters `/api/dlq` looks at for those of a `kind`.
const MAX_DLQ_SCAN: usize = 10_000;
/// How long an upload waits for the watcher's verdict (a large component
/// compiles for seconds).
const UPLOAD_VERDICT: Duration = Duration::from_secs(60);
/// How long "reclaim now" waits for the reaper's sweep.
const RECLAIM_WAIT: Duration = Duration::from_secs(15);

fn ok(body: serde_json::Value) -> Answer {
    Ok(Json(body).into_response())
}

impl App {
    fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.dashboard.admin.check(headers)
    }

    fn pipeline(&self, name: &str) -> Result<PipelineView, ApiError> {
        self.board
            .running()
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ApiError::not_found(format!("no running pipeline is named {name:?}")))
    }

    /// The pipelines consuming `stream` (default: the first pipeline's),
    /// refusing a stream no pipeline here consumes: the dashboard acts on
    /// what this process serves, never on arbitrary keys.
    fn serving(&self, stream: Option<&str>) -> Result<(String, Vec<PipelineView>), ApiError> {
        let running = self.board.running();
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

    async fn redis(&self) -> Result<MultiplexedConnection, ApiError> {
        let redis = self
            .board
            .redis()
            .ok_or_else(|| ApiError::unavailable("no connection is configured"))?;
        match self.probe.connection(&redis).await {
            Ok(con) => Ok(con),
            Err(e) => {
                self.probe.forget().await;
                Err(ApiError::unavailable(format!("redis: {e}")))
            }
        }
    }

    fn done(&self, answer: serde_json::Value) -> Answer {
        self.dashboard.hub.kick();
        ok(answer)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceBody {
    stream: Option<String>,
    count: u64,
    #[serde(rename = "type")]
    kind: String,
}

/// `POST /api/produce`.
pub async fn produce(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<ProduceBody>,
) -> Answer {
    app.admin(&headers)?;
    if !(1..=MAX_PRODUCE).contains(&body.count) {
        return Err(ApiError::bad(format!("count must be 1 to {MAX_PRODUCE}")));
    }
    if body.kind != "random" && !EVENT_TYPES.contains(&body.kind.as_str()) {
        return Err(ApiError::bad(format!(
            "unknown event type {:?}: random, {}",
            body.kind,
            EVENT_TYPES.join(", ")
        )));
    }
    let (stream, _) = app.serving(body.stream.as_deref())?;
    let mut con = app.redis().await?;
    let (mut first_id, mut last_id) = (None, None);
    let mut left = body.count;
    while left > 0 {
        let n = left.min(500);
        left -= n;
        let now = crate::ops::now_ms();
        let batch: Vec<Fields> = (0..n)
            .map(|_| {
                let seq = app.dashboard.produced.fetch_add(1, Ordering::Relaxed);
                let kind = match body.kind.as_str() {
                    "random" => EVENT_TYPES[rand::random_range(0..EVENT_TYPES.len() - 1)],
                    k => k,
                };
                demo_event(kind, seq, now).unwrap_or_default()
            })
            .collect();
        let ids = add_batch(&mut con, &stream, None, &batch)
            .await
            .map_err(|e| ApiError::unavailable(format!("redis: {e}")))?;
        first_id = first_id.or_else(|| ids.first().cloned());
        last_id = ids.last().cloned().or(last_id);
    }
    app.done(serde_json::json!({
        "stream": stream, "count": body.count, "first_id": first_id, "last_id": last_id,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerBody {
    per_second: u32,
    stream: Option<String>,
}

/// `POST /api/producer`.
pub async fn producer(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<ProducerBody>,
) -> Answer {
    app.admin(&headers)?;
    let Some(producer) = &app.dashboard.producer else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "this process has no steady producer (host demo has one)".into(),
        ));
    };
    if body.per_second > MAX_RATE {
        return Err(ApiError::bad(format!("per_second must be 0 to {MAX_RATE}")));
    }
    let stream = match body.stream.as_deref() {
        Some(s) => Some(app.serving(Some(s))?.0),
        None => None,
    };
    producer.set(body.per_second, stream);
    app.done(serde_json::to_value(producer.state()).unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    group: String,
    stream: Option<String>,
}

/// `POST /api/consumers`: another consumer of a group, a copy of its first
/// pipeline under a consumer name neither this process nor Redis knows.
pub async fn add_consumer(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<AddBody>,
) -> Answer {
    app.admin(&headers)?;
    let running = app.board.running();
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
    app.board
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
pub async fn remove_consumer(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    app.admin(&headers)?;
    let pipeline = name.clone();
    app.board
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
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(body): Json<CrashBody>,
) -> Answer {
    app.admin(&headers)?;
    let max = crate::runtime::controls::MAX_CRASH;
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
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Option<Json<ReclaimBody>>,
) -> Answer {
    app.admin(&headers)?;
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
pub async fn replay(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<ReplayBody>,
) -> Answer {
    app.admin(&headers)?;
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
    let mut con = app.redis().await?;
    let entries = inspect::range(&mut con, &stream, &from, &to, count)
        .await
        .map_err(|e| ApiError::bad(format!("redis: {e}")))?;
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
pub async fn trim(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<TrimBody>,
) -> Answer {
    app.admin(&headers)?;
    let policy = Retention::of(body.maxlen, body.max_age_ms.map(Duration::from_millis))
        .ok_or_else(|| ApiError::bad("give maxlen, max_age_ms or both"))?;
    let (stream, _) = app.serving(body.stream.as_deref())?;
    let mut con = app.redis().await?;
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

/// `GET /api/dlq`: the newest dead letters (read-only: no token needed);
/// one whose packed fields are malformed is listed with `undecodable`.
pub async fn dlq_list(State(app): State<Arc<App>>, Query(q): Query<DlqQuery>) -> Answer {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_RECORDS).contains(&limit) {
        return Err(ApiError::bad(format!("limit must be 1 to {MAX_RECORDS}")));
    }
    let (_, on) = app.serving(q.stream.as_deref())?;
    let key = dlq_of(&on);
    let mut con = app.redis().await?;
    let records = dlq::newest(&mut con, &key, limit, q.kind.as_deref(), MAX_DLQ_SCAN).await?;
    ok(serde_json::json!({ "dlq": key, "records": records }))
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
pub async fn redrive(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<RedriveBody>,
) -> Answer {
    app.admin(&headers)?;
    let (_, on) = app.serving(body.stream.as_deref())?;
    let key = dlq_of(&on);
    let redis = app
        .board
        .redis()
        .ok_or_else(|| ApiError::unavailable("no connection is configured"))?;
    let unavailable = |e: crate::ops::OpsError| ApiError::unavailable(e.to_string());
    let mut con = crate::ops::connect(&redis).await.map_err(unavailable)?;
    let mut mover = dlq::redriver(&redis).await.map_err(unavailable)?;
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

/// `POST /api/plugins/{pipeline}`: writes the uploaded file over the
/// pipeline's plugin file (atomically: a rename) and answers what the
/// watcher made of it. Every pipeline using that file swaps.
pub async fn upload(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Answer {
    app.admin(&headers)?;
    let p = app.pipeline(&name)?;
    if !p.config.watch {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "pipeline {name:?} does not watch its plugin file (--no-watch); replace the file and send SIGHUP"
            ),
        ));
    }
    if bytes.is_empty() {
        return Err(ApiError::bad("the upload is empty"));
    }
    let current = p.plugin.current();
    if content_hash(&bytes) == current.version() {
        return ok(
            serde_json::json!({ "outcome": "unchanged", "to": current.identity(), "error": null }),
        );
    }
    let log = app.board.plugin_log();
    let after = log.newest_seq();
    let path = p.config.plugin.clone();
    // Put back if refused, so that a restart finds the version that serves.
    let previous = tokio::fs::read(&path).await.ok();
    let staged = path.with_extension(format!("upload-{}", std::process::id()));
    if let Err(e) = replace_file(&staged, &path, &bytes).await {
        let _ = tokio::fs::remove_file(&staged).await;
        return Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write {}: {e}", path.display()),
        ));
    }
    tracing::info!(pipeline = %name, path = %path.display(), bytes = bytes.len(), "plugin uploaded from the dashboard");
    let verdict = tokio::time::timeout(UPLOAD_VERDICT, log.next_after(after, |e| e.path == path))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                "the file was written but the watcher gave no verdict within 60s; see the plugin log".into(),
            )
        })?;
    let mut restored = false;
    let status = match verdict.outcome {
        ReloadOutcome::Swapped => StatusCode::OK,
        ReloadOutcome::Refused => {
            if let Some(previous) = previous {
                restored = replace_file(&staged, &path, &previous).await.is_ok();
            }
            StatusCode::UNPROCESSABLE_ENTITY
        }
    };
    app.dashboard.hub.kick();
    Ok((
        status,
        Json(serde_json::json!({
            "outcome": verdict.outcome, "from": verdict.from, "to": verdict.to,
            "error": verdict.error, "restored": restored,
        })),
    )
        .into_response())
}

/// Writes `bytes` to `staged`, then renames it over `path`: the watcher
/// never reads half a file.
async fn replace_file(
    staged: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    tokio::fs::write(staged, bytes).await?;
    tokio::fs::rename(staged, path).await
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
