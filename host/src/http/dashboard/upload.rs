//! `POST /api/plugins/{pipeline}`: a new plugin version written over the
//! pipeline's plugin file, and the watcher's verdict on it. Uploads to one
//! file take turns, from reading the body to putting the previous version
//! back after a refusal, so each waits for the verdict on its own bytes and
//! a restore puts back the version that serves; each stages its bytes in a
//! file of its own before the rename.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::super::App;
use super::error::ApiError;
use crate::plugin::content_hash;
use crate::runtime::port::ReloadOutcome;

/// How long an upload waits for the watcher's verdict (a large component
/// compiles for seconds).
const UPLOAD_VERDICT: Duration = Duration::from_secs(60);

/// The uploads in progress: one turn per plugin file.
#[derive(Debug, Default)]
pub struct Uploads {
    /// One lock per plugin file, held by the upload whose turn it is.
    turns: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Numbers the staging files.
    staged: AtomicU64,
}

impl Uploads {
    /// The turn of uploads to `path`.
    fn turn(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        turns.entry(path.to_owned()).or_default().clone()
    }

    /// A staging file beside `path` that no other upload uses.
    fn staging(&self, path: &Path) -> PathBuf {
        let n = self.staged.fetch_add(1, Ordering::Relaxed);
        path.with_extension(format!("upload-{}-{n}", std::process::id()))
    }
}

/// `POST /api/plugins/{pipeline}`: writes the uploaded file over the
/// pipeline's plugin file (atomically: a rename) and answers what the
/// watcher made of it. Every pipeline using that file swaps.
pub async fn upload(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let p = app.pipeline(&name)?;
    if !p.config.watch {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "pipeline {name:?} does not watch its plugin file (--no-watch); replace the file and send SIGHUP"
            ),
        ));
    }
    let path = p.config.plugin.clone();
    let turn = app.dashboard.uploads.turn(&path);
    let _turn = turn.lock().await;
    // Read only in turn: uploads waiting for theirs hold no body.
    let bytes = read_body(request).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad("the upload is empty"));
    }
    let current = p.plugin.current();
    let version = content_hash(&bytes);
    if version == current.version() {
        return Ok(Json(
            serde_json::json!({ "outcome": "unchanged", "to": current.identity(), "error": null }),
        )
        .into_response());
    }
    let log = app.port.plugin_log();
    let after = log.newest_seq();
    // Put back if refused, so that a restart finds the version that serves.
    let previous = tokio::fs::read(&path).await.ok();
    let staged = app.dashboard.uploads.staging(&path);
    if let Err(e) = replace_file(&staged, &path, &bytes).await {
        let _ = tokio::fs::remove_file(&staged).await;
        return Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write {}: {e}", path.display()),
        ));
    }
    tracing::info!(pipeline = %name, path = %path.display(), bytes = bytes.len(), "plugin uploaded from the dashboard");
    // The verdict of this pipeline's watcher on these bytes: a watcher may
    // still be judging what an earlier upload wrote.
    let verdict = tokio::time::timeout(
        UPLOAD_VERDICT,
        log.next_after(after, |e| {
            e.path == path && e.pipeline == name && e.judged.as_deref() == Some(&version)
        }),
    )
    .await
    .map_err(|_| {
        ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            "the file was written but the watcher gave no verdict within 60s; see the plugin log"
                .into(),
        )
    })?;
    let mut restored = false;
    let status = match verdict.outcome {
        ReloadOutcome::Swapped => StatusCode::OK,
        ReloadOutcome::Refused => {
            if let Some(previous) = previous {
                let staged = app.dashboard.uploads.staging(&path);
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

/// The request's body, at most [`super::MAX_UPLOAD`] bytes (the route's
/// limit; `413` beyond).
async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    match Bytes::from_request(request, &()).await {
        Ok(bytes) => Ok(bytes),
        Err(rejection) => Err(ApiError(rejection.status(), rejection.body_text())),
    }
}

/// Writes `bytes` to `staged`, then renames it over `path`: the watcher
/// never reads half a file.
async fn replace_file(staged: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::write(staged, bytes).await?;
    tokio::fs::rename(staged, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_upload_stages_in_a_file_of_its_own_and_one_file_has_one_turn() {
        let uploads = Uploads::default();
        let path = Path::new("/plugins/notify.wasm");
        let (a, b) = (uploads.staging(path), uploads.staging(path));
        assert_ne!(a, b);
        assert_eq!(a.parent(), path.parent());
        assert!(Arc::ptr_eq(&uploads.turn(path), &uploads.turn(path)));
        let other = Path::new("/plugins/analytics.wasm");
        assert!(!Arc::ptr_eq(&uploads.turn(path), &uploads.turn(other)));
    }
}
