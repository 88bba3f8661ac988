//! The listener's connections, served one by one with hyper because
//! `axum::serve` offers none of the limits a hostile client needs: a
//! request head must arrive within [`HEADER_READ_TIMEOUT`] and fit in
//! [`MAX_HEAD`], and at most [`MAX_CONNECTIONS`] are open — at the cap, the connection that has
//! waited longest without a complete request gives its place to the
//! newcomer, so half-sent requests can neither exhaust the process's files
//! nor lock probes out. At stop no connection is taken any more, idle ones
//! close, and answers in progress finish.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client may take to send a request's head, the wait for the
/// next request on a kept-alive connection included.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections open at once.
pub const MAX_CONNECTIONS: usize = 128;
/// The largest request head (request line and headers); a larger one is
/// answered `431`. It also bounds what one connection buffers.
pub const MAX_HEAD: usize = 64 << 10;
/// How long accepting pauses after it failed (out of files, say), so a
/// failing accept does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `stop`, then waits for the answers
/// in progress.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken) {
    let open = Arc::new(Open::default());
    let tasks = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    loop {
        let stream = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "the http listener cannot accept a connection");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let Some(conn) = open.admit(MAX_CONNECTIONS) else {
            tracing::debug!(
                cap = MAX_CONNECTIONS,
                "connection closed at once: every open connection is being answered"
            );
            continue;
        };
        let serving = serve_one(http.clone(), stream, router.clone(), conn, stop.clone());
        let open = open.clone();
        tasks.spawn(async move {
            let id = serving.await;
            open.leave(id);
        });
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// Serves one connection until it ends, is evicted or `stop` lets its
/// answers finish; returns its id.
async fn serve_one(
    http: http1::Builder,
    stream: TcpStream,
    router: Router,
    conn: Arc<Conn>,
    stop: CancellationToken,
) -> u64 {
    let router = TowerToHyperService::new(router);
    let tracked = conn.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let answering = Answering::begin(&tracked);
        let answer = router.call(request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(Tracked {
                    body,
                    _answering: answering,
                })
            }))
        }
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        biased;
        // Dropped: the socket closes; it was answering nothing.
        () = conn.evict.cancelled() => {}
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "an http connection ended with an error while stopping");
            }
        }
        ended = connection.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "an http connection ended with an error");
            }
        }
    }
    conn.id
}

/// One open connection, as the cap sees it.
#[derive(Debug)]
struct Conn {
    /// Its number among the open ones.
    id: u64,
    /// Requests being answered now; an answer counts until its body is sent.
    answering: AtomicUsize,
    /// Since when it has had nothing to answer: accepted, or its last
    /// answer sent.
    waiting_since: Mutex<Instant>,
    /// Fires to drop it for a newcomer.
    evict: CancellationToken,
}

impl Conn {
    fn waiting_since(&self) -> Instant {
        *self.waiting_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The open connections.
#[derive(Debug, Default)]
struct Open {
    /// By id.
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// The next id.
    next: AtomicU64,
}

impl Open {
    /// A new connection, room made at `cap` by evicting the one that has
    /// waited longest without a complete request; `None` when every open
    /// connection is being answered.
    fn admit(&self, cap: usize) -> Option<Arc<Conn>> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() >= cap {
            let longest = conns
                .values()
                .filter(|c| c.answering.load(Ordering::Acquire) == 0)
                .min_by_key(|c| c.waiting_since())?
                .clone();
            longest.evict.cancel();
            conns.remove(&longest.id);
            tracing::debug!(
                cap,
                waited_ms = longest.waiting_since().elapsed().as_millis() as u64,
                "at the connection cap: dropped the connection waiting longest for a request"
            );
        }
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            answering: AtomicUsize::new(0),
            waiting_since: Mutex::new(Instant::now()),
            evict: CancellationToken::new(),
        });
        conns.insert(conn.id, conn.clone());
        Some(conn)
    }

    /// Connection `id` closed.
    fn leave(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// A request being answered on a connection, until dropped.
#[derive(Debug)]
struct Answering(Arc<Conn>);

impl Answering {
    fn begin(conn: &Arc<Conn>) -> Self {
        conn.answering.fetch_add(1, Ordering::AcqRel);
        Self(conn.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if self.0.answering.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self
                .0
                .waiting_since
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }
}

/// A response body that keeps its connection counted as answering until
/// hyper has sent it all (or dropped it), so a long answer such as an event
/// stream is never taken for a connection waiting for a request.
struct Tracked {
    /// The response body, passed through.
    body: Body,
    /// Dropped with the body.
    _answering: Answering,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_waiting_idle_connection_makes_room() {
        let open = Open::default();
        let first = open.admit(2).unwrap();
        let second = open.admit(2).unwrap();
        // The older one is busy answering: the younger idle one goes.
        let busy = Answering::begin(&first);
        let third = open.admit(2).unwrap();
        assert!(second.evict.is_cancelled());
        assert!(!first.evict.is_cancelled());
        // Both busy: a newcomer is refused and nobody is evicted.
        let also_busy = Answering::begin(&third);
        assert!(open.admit(2).is_none());
        assert!(!first.evict.is_cancelled() && !third.evict.is_cancelled());
        // An answer sent makes its connection idle again, from now.
        drop(busy);
        let fourth = open.admit(2).unwrap();
        assert!(first.evict.is_cancelled());
        drop(also_busy);
        open.leave(third.id);
        open.leave(fourth.id);
        assert!(open.admit(1).is_some());
    }
}
