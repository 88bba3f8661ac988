//! Who may act and who may read entries: nobody unless the process allows
//! actions (`--http-admin`, `host demo`), then requests bearing the admin
//! token. Actions are refused in a layer before any extractor runs, so a
//! request without the token costs its head only, never its body. The token
//! travels in the `Authorization` header, which a page of another origin
//! cannot set without a CORS preflight this server never grants, so a link
//! or form elsewhere cannot act on the dashboard.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::super::App;
use super::error::ApiError;
use crate::config::HttpAdmin;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The bearer token `headers` carry, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Whether `token` is `admin`'s; comparing digests, so the time taken says
/// nothing about the token.
fn matches(admin: &HttpAdmin, token: &str) -> bool {
    digest(token) == digest(&admin.token)
}

/// Refuses a request that may not act (`admin`: the process's admin access).
pub fn check(admin: Option<&HttpAdmin>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(admin) = admin else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "this dashboard is read-only: start the host with --http-admin to allow actions".into(),
        ));
    };
    match bearer(headers) {
        Some(token) if matches(admin, token) => Ok(()),
        Some(_) => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong admin token".into(),
        )),
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "actions need the admin token (Authorization: Bearer TOKEN; the host prints a link with it at start-up)".into(),
        )),
    }
}

/// Whether a read may include entry payloads: only with the right token.
/// No token reads without them; a wrong one is refused, so the page asks
/// again. A read-only process has no token: payloads are never shown.
pub fn reveals(admin: Option<&HttpAdmin>, headers: &HeaderMap) -> Result<bool, ApiError> {
    match (admin, bearer(headers)) {
        (Some(admin), Some(token)) if matches(admin, token) => Ok(true),
        (Some(_), Some(_)) => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong admin token".into(),
        )),
        _ => Ok(false),
    }
}

/// The layer in front of every action: the token is checked on the head
/// alone, before the body is read.
pub(in super::super) async fn require_admin(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    match check(app.port.http().admin.as_ref(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_right_bearer_token_may_act() {
        let admin = HttpAdmin {
            token: "s3cret".into(),
            announce: false,
        };
        let admin = Some(&admin);
        assert!(check(admin, &with(Some("Bearer s3cret"))).is_ok());
        assert_eq!(check(admin, &with(Some("Bearer nope"))).unwrap_err().0, 401);
        assert_eq!(check(admin, &with(Some("s3cret"))).unwrap_err().0, 401);
        assert_eq!(check(admin, &with(None)).unwrap_err().0, 401);
        assert_eq!(
            check(None, &with(Some("Bearer s3cret"))).unwrap_err().0,
            403
        );
    }

    #[test]
    fn payloads_are_revealed_to_the_right_token_only() {
        let admin = HttpAdmin {
            token: "s3cret".into(),
            announce: false,
        };
        let admin = Some(&admin);
        assert!(reveals(admin, &with(Some("Bearer s3cret"))).unwrap());
        assert!(!reveals(admin, &with(None)).unwrap());
        assert_eq!(
            reveals(admin, &with(Some("Bearer nope"))).unwrap_err().0,
            401
        );
        assert!(!reveals(None, &with(Some("Bearer s3cret"))).unwrap());
        assert!(!reveals(None, &with(None)).unwrap());
    }
}
