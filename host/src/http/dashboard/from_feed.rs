//! The dashboard's production from its feed (`host demo`'s orders; these
//! routes exist only with a feed): `POST /api/produce` appends events of a
//! kind, within the actions' budget, answering what it appended even when
//! it stops part-way; `POST /api/producer` sets the steady producer.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::super::App;
use super::actions::Answer;
use super::error::ApiError;
use super::{ACTION_BUDGET, MAX_PRODUCE};
use crate::http::feed::Feed;
use crate::stream::entries::add_batch;

impl App {
    /// What the dashboard produces from; refused without one.
    fn feed(&self) -> Result<&Arc<dyn Feed>, ApiError> {
        self.dashboard.feed.as_ref().ok_or_else(|| {
            ApiError(
                StatusCode::CONFLICT,
                "this process has nothing to produce from (host demo has)".into(),
            )
        })
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
pub async fn produce(State(app): State<Arc<App>>, Json(body): Json<ProduceBody>) -> Answer {
    if !(1..=MAX_PRODUCE).contains(&body.count) {
        return Err(ApiError::bad(format!("count must be 1 to {MAX_PRODUCE}")));
    }
    let feed = app.feed()?;
    if body.kind != "random" && !feed.kinds().contains(&body.kind) {
        return Err(ApiError::bad(format!(
            "unknown event type {:?}: random, {}",
            body.kind,
            feed.kinds().join(", ")
        )));
    }
    let (stream, _) = app.serving(body.stream.as_deref())?;
    let mut con = app.redis(&stream).await?;
    let mut done = Produced::default();
    let deadline = tokio::time::Instant::now() + ACTION_BUDGET;
    while done.count < body.count {
        if tokio::time::Instant::now() >= deadline {
            let why = format!(
                "the action's budget of {} ran out",
                humantime::format_duration(ACTION_BUDGET)
            );
            return Ok(done.partial(StatusCode::GATEWAY_TIMEOUT, &stream, body.count, 0, &why));
        }
        let n = (body.count - done.count).min(PRODUCE_BATCH);
        let batch = feed.events(&body.kind, n).unwrap_or_default();
        match add_batch(&mut con, &stream, None, &batch).await {
            Ok(ids) => done.add(n, &ids),
            Err(e) => {
                app.actions.forget().await;
                let why = format!("redis: {e}");
                return Ok(done.partial(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &stream,
                    body.count,
                    n,
                    &why,
                ));
            }
        }
    }
    app.done(serde_json::json!({
        "stream": stream, "count": done.count, "first_id": done.first_id, "last_id": done.last_id,
    }))
}

/// Entries one produce request appends per pipeline of XADDs.
const PRODUCE_BATCH: u64 = 500;

/// What a produce has appended so far.
#[derive(Debug, Default)]
struct Produced {
    count: u64,
    first_id: Option<String>,
    last_id: Option<String>,
}

impl Produced {
    fn add(&mut self, n: u64, ids: &[String]) {
        self.count += n;
        self.first_id = self.first_id.take().or_else(|| ids.first().cloned());
        self.last_id = ids.last().cloned().or(self.last_id.take());
    }

    /// The refusal of a produce that stopped after part of its work: what
    /// was appended, and how many of the last batch may or may not have
    /// been (Redis got them, its answer did not come), so that nobody
    /// produces the whole count again.
    fn partial(
        &self,
        status: StatusCode,
        stream: &str,
        requested: u64,
        unconfirmed: u64,
        why: &str,
    ) -> Response {
        let mut message = format!("{why}: appended {} of {requested} to {stream}", self.count);
        if unconfirmed > 0 {
            message.push_str(&format!(
                "; the next {unconfirmed} may or may not have been appended (look at the stream before producing again)"
            ));
        }
        ApiError::with(
            status,
            message,
            serde_json::json!({
                "stream": stream, "requested": requested, "count": self.count,
                "unconfirmed": unconfirmed, "first_id": self.first_id, "last_id": self.last_id,
            }),
        )
        .into_response()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerBody {
    per_second: u32,
    stream: Option<String>,
}

/// `POST /api/producer`.
pub async fn producer(State(app): State<Arc<App>>, Json(body): Json<ProducerBody>) -> Answer {
    let feed = app.feed()?;
    let max = feed.max_rate();
    if body.per_second > max {
        return Err(ApiError::bad(format!("per_second must be 0 to {max}")));
    }
    let stream = match body.stream.as_deref() {
        Some(s) => Some(app.serving(Some(s))?.0),
        None => None,
    };
    feed.set_producer(body.per_second, stream);
    app.done(serde_json::to_value(feed.producer()).unwrap_or_default())
}
