//! Who may act: nobody unless the process allows actions (`--http-admin`,
//! `host demo`), then requests bearing the admin token. The token travels
//! in the `Authorization` header, which a page of another origin cannot set
//! without a CORS preflight this server never grants, so a link or form
//! elsewhere cannot act on the dashboard.

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::config::HttpAdmin;

/// The admin check.
#[derive(Debug)]
pub struct Admin {
    /// The token's digest (`None`: read-only).
    digest: Option<[u8; 32]>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Admin {
    /// Allows actions with `admin`'s token, or none.
    pub fn new(admin: Option<HttpAdmin>) -> Self {
        Self {
            digest: admin.map(|a| digest(&a.token)),
        }
    }

    /// Whether actions are allowed at all.
    pub fn enabled(&self) -> bool {
        self.digest.is_some()
    }

    /// Refuses a request that may not act.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.digest else {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "this dashboard is read-only: start the host with --http-admin to allow actions"
                    .into(),
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Comparing digests: the time taken says nothing about the token.
        match given {
            Some(token) if digest(token.trim()) == *expected => Ok(()),
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
        let admin = Admin::new(Some(HttpAdmin {
            token: "s3cret".into(),
            announce: false,
        }));
        assert!(admin.check(&with(Some("Bearer s3cret"))).is_ok());
        assert_eq!(admin.check(&with(Some("Bearer nope"))).unwrap_err().0, 401);
        assert_eq!(admin.check(&with(Some("s3cret"))).unwrap_err().0, 401);
        assert_eq!(admin.check(&with(None)).unwrap_err().0, 401);
        let read_only = Admin::new(None);
        assert!(!read_only.enabled());
        assert_eq!(
            read_only.check(&with(Some("Bearer s3cret"))).unwrap_err().0,
            403
        );
    }
}
