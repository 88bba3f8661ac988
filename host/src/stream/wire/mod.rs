//! The hot read path's connection: a minimal RESP2 client for the commands
//! that carry entry payloads (`XREADGROUP`, and `XRANGE` of claimed
//! entries), whose replies go straight through [`decode::Decoder`] into
//! [`Entry`] values as the bytes arrive. It speaks TCP, TLS (rustls, with
//! the same roots, client certificate and server name as the redis-rs
//! connections) and Unix sockets, and authenticates as redis-rs would.

mod decode;

use std::time::Duration;

use bytes::BytesMut;
use redis::{RedisError, RedisResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub use self::decode::decode_xreadgroup;
use self::decode::{
    Decoder, MAX_FRAME_STRING, ReplyShape, find_crlf, protocol_error, server_error,
};
use super::commands::GroupRef;
use crate::config::{Address, RedisEndpoint};
use crate::vocab::entry::{Entry, EntryLimits};

enum Socket {
    Tcp(TcpStream),
    // Boxed: the TLS state is a few hundred bytes, the other sockets a handle.
    Tls(Box<TlsStream<TcpStream>>),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

fn io_error(kind: std::io::ErrorKind, what: impl Into<String>) -> RedisError {
    RedisError::from(std::io::Error::new(kind, what.into()))
}

/// A connection used only for the commands that return entries.
pub struct EntryConnection {
    socket: Socket,
    buf: BytesMut,
    timeout: Duration,
}

impl std::fmt::Debug for EntryConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryConnection")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl EntryConnection {
    /// Connects (and, over TLS, completes the handshake) and authenticates
    /// like redis-rs would for `endpoint`, within `timeout` per step.
    pub async fn connect(endpoint: &RedisEndpoint, timeout: Duration) -> RedisResult<Self> {
        let socket = match endpoint.address() {
            Address::Tcp { host, port } => {
                let tcp = within(timeout, TcpStream::connect((host.as_str(), *port))).await??;
                tcp.set_nodelay(true)?;
                match endpoint.tls() {
                    None => Socket::Tcp(tcp),
                    Some(tls) => {
                        let connector = TlsConnector::from(tls.config.clone());
                        let handshake = connector.connect(tls.server_name.clone(), tcp);
                        Socket::Tls(Box::new(within(timeout, handshake).await??))
                    }
                }
            }
            #[cfg(unix)]
            Address::Unix(path) => {
                Socket::Unix(within(timeout, tokio::net::UnixStream::connect(path)).await??)
            }
            #[cfg(not(unix))]
            Address::Unix(_) => {
                return Err(io_error(
                    std::io::ErrorKind::Unsupported,
                    "Unix sockets are not available on this platform",
                ));
            }
        };
        let mut conn = Self {
            socket,
            buf: BytesMut::with_capacity(256 * 1024),
            timeout,
        };
        let settings = endpoint.settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
            conn.simple(&auth.get_packed_command()).await?;
        }
        if settings.db() != 0 {
            conn.simple(&redis::cmd("SELECT").arg(settings.db()).get_packed_command())
                .await?;
        }
        Ok(conn)
    }

    /// `XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS key >`; an empty list
    /// when BLOCK timed out. Any error leaves the connection unusable.
    pub async fn read_group(
        &mut self,
        g: &GroupRef,
        count: usize,
        block: Duration,
        limits: EntryLimits,
    ) -> RedisResult<Vec<Entry>> {
        let cmd = super::commands::read_new_cmd(g, count, block).get_packed_command();
        self.entries(&cmd, block + self.timeout, limits).await
    }

    /// Sends `cmd`, whose reply has `XREADGROUP`'s shape, and decodes it
    /// within `limit`.
    async fn entries(
        &mut self,
        cmd: &[u8],
        limit: Duration,
        limits: EntryLimits,
    ) -> RedisResult<Vec<Entry>> {
        within(limit, async {
            self.write(cmd).await?;
            self.decode(Decoder::new(ReplyShape::ReadGroup, limits))
                .await
        })
        .await?
    }

    /// `XREADGROUP … COUNT n STREAMS key >` behind the lease check of
    /// `g`'s fence (the script [`super::scripts::READ_NEW`], sent whole: a
    /// server that lost its scripts still runs it). Never blocks; an empty
    /// list when there is nothing new; `FENCED` once the lease is not ours.
    pub async fn read_group_fenced(
        &mut self,
        g: &GroupRef,
        count: usize,
        limits: EntryLimits,
    ) -> RedisResult<Vec<Entry>> {
        let Some(fence) = &g.fence else {
            return Err(protocol_error("a fenced read needs a fence"));
        };
        let cmd = redis::cmd("EVAL")
            .arg(super::scripts::READ_NEW.fenced_code())
            .arg(2)
            .arg(&g.stream)
            .arg(&fence.key)
            .arg(&fence.token)
            .arg(&g.group)
            .arg(&g.consumer)
            .arg(count)
            .get_packed_command();
        self.entries(&cmd, self.timeout, limits).await
    }

    /// Waits up to `block` for an entry of `stream` after `after`
    /// (`XREAD COUNT 1 BLOCK ms STREAMS key after`: no group, nothing
    /// changes); the id of the first one, or `None` when BLOCK ran out.
    pub async fn wait_after(
        &mut self,
        stream: &str,
        after: &str,
        block: Duration,
    ) -> RedisResult<Option<String>> {
        let cmd = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(stream)
            .arg(after)
            .get_packed_command();
        // Only the id is wanted: a field is never kept (its limits are 0).
        let limits = EntryLimits {
            max_fields: 0,
            max_bytes: 0,
        };
        let found = self.entries(&cmd, block + self.timeout, limits).await?;
        Ok(found.into_iter().next().map(|e| e.id))
    }

    /// The payloads of `ids` (`XRANGE key id id` each, pipelined), in order;
    /// an id whose entry is gone comes back [`Payload::Trimmed`]. Delivery
    /// counts are left at 0 for the caller to fill in.
    pub async fn fetch(
        &mut self,
        stream: &str,
        ids: &[String],
        limits: EntryLimits,
    ) -> RedisResult<Vec<Entry>> {
        let mut packed = Vec::new();
        for id in ids {
            redis::cmd("XRANGE")
                .arg(stream)
                .arg(id)
                .arg(id)
                .write_packed_command(&mut packed);
        }
        let limit = self.timeout;
        within(limit, async {
            self.write(&packed).await?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let found = self.decode(Decoder::new(ReplyShape::Range, limits)).await?;
                out.push(Entry::ranged(id, found));
            }
            Ok(out)
        })
        .await?
    }

    /// Reads until `decoder` has one whole reply.
    async fn decode(&mut self, mut decoder: Decoder) -> RedisResult<Vec<Entry>> {
        loop {
            if decoder.feed(&mut self.buf)? {
                return decoder.finish();
            }
            if self.buf.capacity() - self.buf.len() < 64 * 1024 {
                self.buf.reserve(self.buf.len().max(64 * 1024));
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> RedisResult<()> {
        let n = match &mut self.socket {
            Socket::Tcp(s) => s.read_buf(&mut self.buf).await?,
            Socket::Tls(s) => s.read_buf(&mut self.buf).await?,
            #[cfg(unix)]
            Socket::Unix(s) => s.read_buf(&mut self.buf).await?,
        };
        if n == 0 {
            return Err(io_error(
                std::io::ErrorKind::ConnectionReset,
                "connection closed by server",
            ));
        }
        Ok(())
    }

    /// Sends a command whose reply must be `+OK`.
    async fn simple(&mut self, packed: &[u8]) -> RedisResult<()> {
        let limit = self.timeout;
        within(limit, async {
            self.write(packed).await?;
            let end = loop {
                if let Some(end) = find_crlf(&self.buf) {
                    break end;
                }
                if self.buf.len() > MAX_FRAME_STRING {
                    return Err(protocol_error("reply line too long"));
                }
                self.buf.reserve(4096);
                self.read_more().await?;
            };
            let line = self.buf.split_to(end + 2);
            match line.first() {
                Some(b'+') => Ok(()),
                Some(b'-') => Err(server_error(&line[1..end])),
                _ => Err(protocol_error("expected +OK")),
            }
        })
        .await?
    }

    async fn write(&mut self, bytes: &[u8]) -> RedisResult<()> {
        match &mut self.socket {
            Socket::Tcp(s) => s.write_all(bytes).await?,
            Socket::Tls(s) => {
                // rustls may keep the last records when the socket is full:
                // the command is only sent once they are flushed.
                s.write_all(bytes).await?;
                s.flush().await?;
            }
            #[cfg(unix)]
            Socket::Unix(s) => s.write_all(bytes).await?,
        }
        Ok(())
    }
}

/// What a field string adds to its entry's cost: its bytes, plus the
/// per-field overhead once per pair (counted on the name).
async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> RedisResult<T> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| io_error(std::io::ErrorKind::TimedOut, "Redis did not answer in time"))
}
