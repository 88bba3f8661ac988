//! `POST /api/plugins/{pipeline}`: a new plugin version handed to the
//! runtime (`Port::upload`), which writes it over the pipeline's plugin
//! file and answers the watcher's verdict. The body is read only once it is
//! this upload's turn, so uploads waiting for theirs hold no bytes.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::super::App;
use super::error::ApiError;
use crate::runtime::port::{UploadError, UploadVerdict};

/// `POST /api/plugins/{pipeline}`: every pipeline using that file swaps.
pub async fn upload(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let turn = app.port.upload(&name).await.map_err(refusal)?;
    let bytes = read_body(request).await?;
    let verdict = turn.install(&bytes).await.map_err(refusal)?;
    app.dashboard.live.kick();
    let status = match verdict {
        UploadVerdict::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    Ok((status, Json(verdict)).into_response())
}

fn refusal(e: UploadError) -> ApiError {
    let status = match &e {
        UploadError::NoSuchPipeline(_) => StatusCode::NOT_FOUND,
        UploadError::NotWatched(_) => StatusCode::CONFLICT,
        UploadError::Empty => StatusCode::BAD_REQUEST,
        UploadError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        UploadError::NoVerdict => StatusCode::GATEWAY_TIMEOUT,
    };
    ApiError(status, e.to_string())
}

/// The request's body, at most [`super::MAX_UPLOAD`] bytes (the route's
/// limit; `413` beyond).
async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    match Bytes::from_request(request, &()).await {
        Ok(bytes) => Ok(bytes),
        Err(rejection) => Err(ApiError(rejection.status(), rejection.body_text())),
    }
}
