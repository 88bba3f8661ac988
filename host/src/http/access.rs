//! Whom the listener answers: a request must name this listener in its
//! `Host` — an IP address, `localhost`, the `--http` host, or a name the
//! operator allowed — so that a page of another site, whose name its owner
//! points at this address (DNS rebinding), gets nothing. A browser sends the
//! name of the page's site, and only a DNS name can be rebound: an IP
//! address or `localhost` names this machine whatever a DNS server says.
//! The health probes are exempt (platforms probe with whatever `Host` they
//! like, and the answers carry a verdict only). Also: telling the log when a
//! reload changes who may act.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

use super::App;
use super::dashboard::ApiError;
use crate::config::Dashboard;

/// Refuses a request that does not name this listener (`421`), or names
/// nothing (`400`), before anything else looks at it.
pub(super) async fn check_host(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    let named = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            let host = request.headers().get(header::HOST)?;
            host.to_str().ok().map(str::to_owned)
        });
    let Some(named) = named else {
        return ApiError::bad("a Host header is required").into_response();
    };
    if allowed(&named, &app.listen_host, &app.port.http().allowed_hosts) {
        return next.run(request).await;
    }
    tracing::debug!(host = %named, path = %request.uri().path(), "request refused: its Host is not this listener");
    ApiError(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "this listener does not answer to {named:?}: name it by IP address, localhost, or a name allowed with --http-allowed-host ([http] allowed-hosts)"
        ),
    )
    .into_response()
}

/// Whether a request naming `host` (`name[:port]`, `[v6]:port`) is for a
/// listener on `listen_host` that also answers to `names` (lowercase).
pub fn allowed(host: &str, listen_host: &str, names: &[String]) -> bool {
    let host = host.trim();
    if host.starts_with('[') {
        // An IPv6 literal, with or without port.
        return host.parse::<SocketAddr>().is_ok()
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<IpAddr>().is_ok());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return false,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.eq_ignore_ascii_case(listen_host)
        || names.contains(&name)
}

/// Logs each change a reload makes to who may act and which names are
/// answered, with the link to the dashboard when a token was generated for
/// it, until `stop`.
pub(super) async fn announce_changes(
    app: Arc<App>,
    address: Option<SocketAddr>,
    stop: CancellationToken,
) {
    let mut changes = app.port.watch_http();
    let mut before = changes.borrow_and_update().clone();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let now = changes.borrow_and_update().clone();
        announce(&before, &now, address);
        before = now;
    }
}

fn announce(before: &Dashboard, now: &Dashboard, address: Option<SocketAddr>) {
    match (&before.admin, &now.admin) {
        (Some(_), None) => {
            tracing::info!("dashboard actions are refused from now on ([http] admin = false)");
        }
        (None, Some(admin)) => {
            tracing::info!(
                "dashboard actions are allowed from now on, with the admin token ([http] admin = true)"
            );
            if let (true, Some(addr)) = (admin.announce, address) {
                tracing::info!(link = %format!("http://{addr}/#token={}", admin.token),
                    "dashboard actions allowed with a generated admin token (set {} to choose it)", crate::config::TOKEN_ENV);
            }
        }
        _ => {}
    }
    if before.allowed_hosts != now.allowed_hosts {
        tracing::info!(allowed_hosts = %now.allowed_hosts.join(","), "the listener answers to these names from now on ([http] allowed-hosts)");
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn only_names_that_cannot_be_rebound_or_were_allowed_pass() {
        let names = vec!["dash.example.com".to_owned()];
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9090",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:9090",
            "localhost",
            "LOCALHOST:9090",
            "localhost.:9090",
            "dash.example.com",
            "Dash.Example.COM.:443",
            "myhost:9090",
        ] {
            assert!(allowed(ok, "myhost", &names), "{ok:?} refused");
        }
        for bad in [
            "attacker.example",
            "attacker.example:9090",
            "127.0.0.1.nip.io",
            "localhost.attacker.example",
            "dash.example.com.attacker.example",
            "sub.dash.example.com",
            "",
            ":9090",
            "[::1",
            "[attacker.example]:80",
            "localhost:http",
            "127.1",
        ] {
            assert!(!allowed(bad, "myhost", &names), "{bad:?} allowed");
        }
    }
}
