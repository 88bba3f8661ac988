//! A Redis connection that heals itself: reconnects with capped, jittered
//! backoff and logs one line per state change (lost / restored), shared by
//! every link of one process. [`RedisLink::run`] is the one way an operation
//! rides out an outage, and [`Cancelled`] the one way to say it was stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult, ServerErrorKind};
use tokio_util::sync::CancellationToken;

use super::cluster::Route;
use crate::config::RedisEndpoint;
use crate::vocab::backoff::Backoff;

/// Whether Redis is reachable, as last observed by any link; turns a storm of
/// failures from several tasks into one "lost" and one "restored" line.
#[derive(Debug)]
pub struct LinkHealth {
    up: AtomicBool,
    /// Outages seen so far; a connection opened before the latest outage is
    /// stale, and its failure is not news.
    outages: AtomicU64,
    /// Connections found dead (lost, timed out) so far, by any link: a
    /// connection opened before the latest is not trusted again — after a
    /// half-open network path (no FIN, no RST) every connection over it is
    /// as dead as the one that noticed, and would otherwise be found so
    /// only at its own timeout.
    lost: AtomicU64,
    target: String,
}

impl LinkHealth {
    /// Health for the server at `target` (host:port, never credentials).
    pub fn new(target: String) -> Arc<Self> {
        Arc::new(Self {
            up: AtomicBool::new(true),
            outages: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            target,
        })
    }

    /// Whether the last observation was a working connection.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn mark_down(&self, err: &RedisError) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            match tls_hint(err) {
                Some(hint) => {
                    tracing::warn!(redis = %self.target, error = %err, hint, "redis connection lost; retrying with backoff");
                }
                None => {
                    tracing::warn!(redis = %self.target, error = %err, "redis connection lost; retrying with backoff");
                }
            }
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(redis = %self.target, "redis connection restored");
        }
    }
}

/// How a failed command should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The connection is gone or unusable: reconnect and retry.
    Connection,
    /// The server is up but temporarily refusing (loading, failover): retry later.
    Transient,
    /// A real answer from the server; retrying the same command will not help.
    Permanent,
}

/// Classifies a redis error for retry decisions.
pub fn classify(err: &RedisError) -> ErrorClass {
    if err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
    {
        return ErrorClass::Connection;
    }
    // A cluster's failover ends blocked reads with UNBLOCKED: the node is
    // a replica now, and the connection is no use.
    if err.code() == Some("UNBLOCKED") {
        return ErrorClass::Connection;
    }
    match err.kind() {
        // The slot lives on another node now: reconnect along the route
        // (which reads the slot map again).
        redis::ErrorKind::Server(ServerErrorKind::Moved) => ErrorClass::Connection,
        // A master demoted by a failover: the next connection asks the
        // route (the sentinels, the slot map) where the master is now.
        redis::ErrorKind::Server(ServerErrorKind::ReadOnly) => ErrorClass::Connection,
        // The slot is being migrated: its keys move a few at a time, and
        // the migration ends in a MOVED.
        redis::ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::Ask,
        ) => ErrorClass::Transient,
        redis::ErrorKind::Io | redis::ErrorKind::AuthenticationFailed => ErrorClass::Connection,
        _ => ErrorClass::Permanent,
    }
}

/// What to check when `err` is a failed TLS handshake, which retrying
/// heals only once the certificates or the settings change.
fn tls_hint(err: &RedisError) -> Option<&'static str> {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<Tls>() {
            return match tls {
                Tls::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => Some(
                    "the server's certificate is not signed by a trusted CA: check the CA file (--redis-ca, [redis.tls] ca)",
                ),
                Tls::InvalidCertificate(
                    Cert::NotValidForName | Cert::NotValidForNameContext { .. },
                ) => Some(
                    "the server's certificate is not issued for the name connected to: set the name it is issued for (--redis-server-name, [redis.tls] server-name)",
                ),
                Tls::InvalidCertificate(
                    Cert::Expired
                    | Cert::ExpiredContext { .. }
                    | Cert::NotValidYet
                    | Cert::NotValidYetContext { .. },
                ) => Some("the server's certificate is outside its validity period"),
                Tls::AlertReceived(
                    Alert::CertificateRequired
                    | Alert::BadCertificate
                    | Alert::UnknownCA
                    | Alert::HandshakeFailure
                    | Alert::AccessDenied,
                ) => Some(
                    "the server refused this client's certificate, or its lack of one: check the client certificate and key (--redis-cert/--redis-key, [redis.tls] cert/key)",
                ),
                Tls::InvalidMessage(_) => Some(
                    "the server does not speak TLS on this port: is the URL's port its tls-port?",
                ),
                _ => Some("TLS with the server failed"),
            };
        }
        // redis-rs hands its I/O error out in an `Arc`, and an I/O error
        // hands its inner error out only through `get_ref`: `source` skips
        // both layers.
        type Shared = Arc<dyn std::error::Error + Send + Sync>;
        cause = if let Some(shared) = e.downcast_ref::<Shared>() {
            Some(shared.as_ref() as &(dyn std::error::Error + 'static))
        } else if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io.get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static))
        } else {
            e.source()
        };
    }
    None
}

/// Work stopped because its cancellation token fired: shutdown began, or a
/// time budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// Why [`RedisLink::run`] gave up on an operation.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Cancelled before Redis took the operation.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    /// Redis answered with an error that retrying the same operation will
    /// not fix ([`ErrorClass::Permanent`]); the caller decides what next.
    #[error(transparent)]
    Refused(RedisError),
}

/// One logical connection (the reader's or the committer's).
#[derive(Debug)]
pub struct RedisLink {
    /// Where each (re)connection goes: asked again every time, so a
    /// cluster's slot that moved is followed.
    route: Route,
    response_timeout: Duration,
    /// The connection, with the outage and lost-connection counts when it
    /// was opened.
    conn: Option<(MultiplexedConnection, u64, u64)>,
    health: Arc<LinkHealth>,
    backoff: Backoff,
}

impl RedisLink {
    /// A link to `endpoint` whose commands time out after `response_timeout`.
    pub fn new(
        endpoint: &RedisEndpoint,
        health: Arc<LinkHealth>,
        response_timeout: Duration,
    ) -> Self {
        Self::routed(
            Route::Direct(Arc::new(endpoint.clone())),
            health,
            response_timeout,
        )
    }

    /// A link along `route` whose commands time out after `response_timeout`.
    pub fn routed(route: Route, health: Arc<LinkHealth>, response_timeout: Duration) -> Self {
        Self {
            route,
            response_timeout,
            conn: None,
            health,
            backoff: Backoff::for_redis(),
        }
    }

    /// The same link, waiting `backoff`'s delays between failed attempts
    /// (a caller on a short budget needs them shorter than its budget).
    pub fn with_backoff(self, backoff: Backoff) -> Self {
        Self { backoff, ..self }
    }

    async fn open(&self) -> RedisResult<MultiplexedConnection> {
        let endpoint = self.route.endpoint().await?;
        let config: AsyncConnectionConfig = endpoint
            .connection_config()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(self.response_timeout));
        let client: &Client = endpoint.client();
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Drops the connection after a redirection found in a reply of its own
    /// (a pipelined round's `MOVED`): the next one goes where the slot is now.
    pub fn redirected(&mut self, err: &RedisError) {
        self.route.failed(err);
        self.conn = None;
    }

    /// A working connection, reconnecting (with backoff) as long as needed.
    pub async fn connection(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<MultiplexedConnection, Cancelled> {
        loop {
            match &self.conn {
                // Another link found a connection dead since this one was
                // opened: reconnect now rather than at this one's timeout.
                Some((_, _, lost)) if *lost < self.health.lost() => {
                    tracing::debug!(redis = %self.health.target, "another connection was found dead: reconnecting");
                    self.conn = None;
                }
                Some((conn, _, _)) => return Ok(conn.clone()),
                None => {}
            }
            if self.backoff.attempts() > 0 {
                let delay = self.backoff.next_delay();
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
            } else {
                self.backoff.next_delay();
            }
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Cancelled),
                r = self.open() => r,
            };
            match result {
                // "Restored" is only said once a command succeeds: a server
                // still loading its AOF accepts connections but not commands.
                Ok(conn) => {
                    self.conn = Some((conn, self.health.outages(), self.health.lost()));
                }
                Err(e) => {
                    self.route.failed(&e);
                    self.health.mark_down(&e);
                }
            }
        }
    }

    /// Runs `op` until Redis takes it: through lost connections (reconnecting
    /// with backoff) and transient refusals (retried after a pause). A
    /// permanent refusal comes back as [`LinkError::Refused`].
    ///
    /// `op` gets its own handle on the connection and may run more than
    /// once, so it borrows only shared state, and what it sends must be safe
    /// to repeat — as every command the host sends is: after a lost reply
    /// nobody knows whether it took effect.
    pub async fn run<T, F, Fut>(
        &mut self,
        cancel: &CancellationToken,
        mut op: F,
    ) -> Result<T, LinkError>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        loop {
            let con = self.connection(cancel).await?;
            match op(con).await {
                Ok(value) => {
                    self.succeeded();
                    return Ok(value);
                }
                Err(e) => {
                    self.recover(e, cancel).await?;
                }
            }
        }
    }

    /// Deals with one failed command the way [`RedisLink::run`] does, for a
    /// caller that must know how it failed before trying again: a lost
    /// connection is dropped (the next [`RedisLink::connection`] reconnects),
    /// a transient refusal is waited out; `Ok` with the class means try again.
    pub async fn recover(
        &mut self,
        err: RedisError,
        cancel: &CancellationToken,
    ) -> Result<ErrorClass, LinkError> {
        match self.failed(&err) {
            ErrorClass::Connection => Ok(ErrorClass::Connection),
            ErrorClass::Transient => {
                self.pause(cancel).await?;
                Ok(ErrorClass::Transient)
            }
            ErrorClass::Permanent => Err(LinkError::Refused(err)),
        }
    }

    /// Records a failed command: connection-class errors drop the connection
    /// so the next [`RedisLink::connection`] reconnects.
    fn failed(&mut self, err: &RedisError) -> ErrorClass {
        let class = classify(err);
        self.route.failed(err);
        // A connection from before an outage another link already reported
        // (and maybe recovered from) dies quietly: it is old news.
        let stale = self
            .conn
            .as_ref()
            .is_some_and(|(_, opened_at, _)| *opened_at < self.health.outages());
        if class != ErrorClass::Permanent && !stale {
            self.health.mark_down(err);
        }
        if class == ErrorClass::Connection {
            // Found dead: the others' older connections go the same way.
            if let Some((_, _, lost)) = self.conn.take()
                && lost == self.health.lost()
            {
                self.health.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        class
    }

    /// Records a successful command.
    pub fn succeeded(&mut self) {
        self.health.mark_up();
        self.backoff.reset();
    }

    /// Waits out one backoff step (after an error retrying may fix).
    pub async fn pause(&mut self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let delay = self.backoff.next_delay();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Cancelled),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisConfig;

    /// A link to a port nobody listens on: every connection attempt fails.
    fn unreachable_link() -> RedisLink {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let endpoint = RedisConfig::from_url(format!("redis://127.0.0.1:{port}"))
            .endpoint()
            .expect("a valid url");
        let health = LinkHealth::new(endpoint.target().to_owned());
        RedisLink::new(&endpoint, health, Duration::from_secs(1))
    }

    #[tokio::test]
    async fn run_keeps_reconnecting_until_cancelled() {
        let mut link = unreachable_link();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        });
        let mut ran = false;
        let result = link
            .run(&cancel, |_| {
                ran = true;
                std::future::ready(Ok(()))
            })
            .await;
        assert!(!ran, "no connection, so the operation never ran");
        assert!(matches!(result, Err(LinkError::Cancelled(Cancelled))));
        assert!(!link.health.is_up(), "the outage was noticed");
        assert!(link.backoff.attempts() > 1, "it kept trying meanwhile");
    }

    #[test]
    fn failed_handshakes_say_what_to_check() {
        let tls = |e: rustls::Error| {
            RedisError::from(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        let unknown = tls(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(tls_hint(&unknown).is_some_and(|h| h.contains("--redis-ca")));
        let refused = tls(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        assert!(tls_hint(&refused).is_some_and(|h| h.contains("--redis-cert")));
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(tls_hint(&reset), None);
    }

    #[tokio::test]
    async fn recover_retries_what_may_heal_and_hands_back_refusals() {
        let mut link = unreachable_link();
        let live = CancellationToken::new();
        let lost = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(
            link.recover(lost, &live).await.ok(),
            Some(ErrorClass::Connection)
        );
        let refused = RedisError::from((redis::ErrorKind::Parse, "bad reply"));
        assert!(matches!(
            link.recover(refused, &live).await,
            Err(LinkError::Refused(e)) if e.kind() == redis::ErrorKind::Parse
        ));
        let busy = || {
            RedisError::from((
                redis::ErrorKind::Server(ServerErrorKind::BusyLoading),
                "loading",
            ))
        };
        assert_eq!(
            link.recover(busy(), &live).await.ok(),
            Some(ErrorClass::Transient)
        );
        let stopped = CancellationToken::new();
        stopped.cancel();
        assert!(matches!(
            link.recover(busy(), &stopped).await,
            Err(LinkError::Cancelled(Cancelled))
        ));
    }
}
