//! How an API request is refused: a status and `{ "error": "…" }`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::ops::OpsError;
use crate::runtime::port::ControlError;

/// A refused request: its status and why.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

/// A refusal that also says what was done before it (a partly done
/// action): `{ "error": "…", …details }`.
#[derive(Debug)]
pub struct Partial {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    /// `status` with `message`, and `details` beside the error (an object).
    pub fn with(status: StatusCode, message: String, details: serde_json::Value) -> Partial {
        let mut body = details;
        if let Some(map) = body.as_object_mut() {
            map.insert("error".into(), message.into());
        }
        Partial { status, body }
    }

    /// 400.
    pub fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, message.into())
    }

    /// 503: Redis cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self(StatusCode::SERVICE_UNAVAILABLE, message.into())
    }
}

impl IntoResponse for Partial {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::Usage(_) | OpsError::Data(_) => Self::bad(e.to_string()),
            OpsError::Redis(_) => Self::unavailable(e.to_string()),
            OpsError::Config(_) => Self(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match e {
            ControlError::NoSuchPipeline(_) | ControlError::NoSuchGroup(_) => StatusCode::NOT_FOUND,
            ControlError::Redis(_) => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Conflict(_) | ControlError::Stopping => StatusCode::CONFLICT,
            ControlError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
    }
}
