//! The reader's hot path: a minimal RESP2 connection that sends XREADGROUP
//! and decodes the reply straight into [`Entry`] values.
//!
//! The generic client parses every reply into a tree of `redis::Value`s with
//! a parser-combinator library; for 5-field entries that was over a third of
//! the host's CPU per entry, more than the plugin call. This connection
//! frames the reply with a non-allocating scan, then builds entries in one
//! pass, allocating only the id, the names and the values that the handler
//! receives anyway. Everything else (group management, claims, scripts)
//! stays on redis-rs. TLS URLs are not handled here: callers fall back to
//! the generic client for them.

use std::time::Duration;

use bytes::BytesMut;
use redis::{ConnectionAddr, ConnectionInfo, RedisError, RedisResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::commands::GroupRef;
use super::entry::{Entry, Payload};

/// Most bytes one reply may take; a larger one is a protocol error rather
/// than a reason to exhaust memory (500 entries of 1 MiB each fit).
const MAX_REPLY: usize = 1 << 30;

/// Deepest nesting an XREADGROUP reply has (streams/stream/entries/entry/fields).
const MAX_DEPTH: usize = 8;

enum Socket {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// A connection used only for XREADGROUP.
pub struct ReadConnection {
    socket: Socket,
    buf: BytesMut,
    timeout: Duration,
}

impl std::fmt::Debug for ReadConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadConnection")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

fn io_error(kind: std::io::ErrorKind, what: impl Into<String>) -> RedisError {
    RedisError::from(std::io::Error::new(kind, what.into()))
}

fn protocol_error(detail: impl Into<String>) -> RedisError {
    // The stream is out of step with the server once framing fails: treat
    // it as a broken connection so it is dropped and re-established.
    io_error(
        std::io::ErrorKind::InvalidData,
        format!("malformed reply: {}", detail.into()),
    )
}

/// A server error line (`-CODE message`) as the error redis-rs would give,
/// so `code()` and error classification work the same on both paths.
fn server_error(line: &[u8]) -> RedisError {
    let mut framed = Vec::with_capacity(line.len() + 3);
    framed.push(b'-');
    framed.extend_from_slice(line);
    framed.extend_from_slice(b"\r\n");
    match redis::parse_redis_value(&framed).and_then(|v| v.extract_error()) {
        Err(e) => e,
        Ok(_) => protocol_error(String::from_utf8_lossy(line).into_owned()),
    }
}

impl ReadConnection {
    /// Connects and authenticates like redis-rs would for `info`, within
    /// `timeout` per step. `Ok(None)` for addresses this connection does not
    /// speak (TLS).
    pub async fn connect(info: &ConnectionInfo, timeout: Duration) -> RedisResult<Option<Self>> {
        let socket = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let tcp = within(
                    timeout,
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await??;
                tcp.set_nodelay(true)?;
                Socket::Tcp(tcp)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => {
                Socket::Unix(within(timeout, tokio::net::UnixStream::connect(path)).await??)
            }
            _ => return Ok(None),
        };
        let mut conn = Self {
            socket,
            buf: BytesMut::with_capacity(256 * 1024),
            timeout,
        };
        let settings = info.redis_settings();
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
        Ok(Some(conn))
    }

    /// `XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS key >`; an empty list
    /// when BLOCK timed out. Any error leaves the connection unusable.
    pub async fn read_group(
        &mut self,
        g: &GroupRef,
        count: usize,
        block: Duration,
    ) -> RedisResult<Vec<Entry>> {
        let cmd = super::commands::read_new_cmd(g, count, block).get_packed_command();
        let limit = block + self.timeout;
        within(limit, async {
            self.write(&cmd).await?;
            let len = self.frame().await?;
            let reply = self.buf.split_to(len);
            decode_xreadgroup(&reply)
        })
        .await?
    }

    /// Sends a command whose reply must be `+OK`.
    async fn simple(&mut self, packed: &[u8]) -> RedisResult<()> {
        let limit = self.timeout;
        within(limit, async {
            self.write(packed).await?;
            let len = self.frame().await?;
            let reply = self.buf.split_to(len);
            match reply.first() {
                Some(b'+') => Ok(()),
                Some(b'-') => Err(server_error(&reply[1..reply.len() - 2])),
                _ => Err(protocol_error("expected +OK")),
            }
        })
        .await?
    }

    async fn write(&mut self, bytes: &[u8]) -> RedisResult<()> {
        match &mut self.socket {
            Socket::Tcp(s) => s.write_all(bytes).await?,
            #[cfg(unix)]
            Socket::Unix(s) => s.write_all(bytes).await?,
        }
        Ok(())
    }

    /// Reads until one whole reply is buffered; returns its length.
    async fn frame(&mut self) -> RedisResult<usize> {
        loop {
            if let Some(len) = scan(&self.buf)? {
                return Ok(len);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(protocol_error("reply larger than 1 GiB"));
            }
            if self.buf.capacity() - self.buf.len() < 64 * 1024 {
                self.buf.reserve(self.buf.len().max(64 * 1024));
            }
            let n = match &mut self.socket {
                Socket::Tcp(s) => s.read_buf(&mut self.buf).await?,
                #[cfg(unix)]
                Socket::Unix(s) => s.read_buf(&mut self.buf).await?,
            };
            if n == 0 {
                return Err(io_error(
                    std::io::ErrorKind::ConnectionReset,
                    "connection closed by server",
                ));
            }
        }
    }
}

async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> RedisResult<T> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| io_error(std::io::ErrorKind::TimedOut, "Redis did not answer in time"))
}

/// The line starting at `at` (without CRLF) and where the next one starts.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = memchr_crlf(rest)?;
    Some((&rest[..end], at + end + 2))
}

fn memchr_crlf(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].iter().position(|&b| b == b'\r') {
        let i = from + i;
        match s.get(i + 1) {
            Some(b'\n') => return Some(i),
            Some(_) => from = i + 1,
            None => return None,
        }
    }
    None
}

fn int(digits: &[u8]) -> RedisResult<i64> {
    let bad = || protocol_error(format!("bad length {:?}", String::from_utf8_lossy(digits)));
    let (negative, body) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if body.is_empty() || body.len() > 18 {
        return Err(bad());
    }
    let mut n: i64 = 0;
    for &d in body {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Ok(if negative { -n } else { n })
}

/// Length of the first complete RESP2 value in `buf`, `None` if more bytes
/// are needed. Allocates nothing.
pub fn scan(buf: &[u8]) -> RedisResult<Option<usize>> {
    // Values still to skip at each open array level.
    let mut pending: Vec<i64> = vec![1];
    let mut at = 0;
    while let Some(left) = pending.last_mut() {
        if *left == 0 {
            pending.pop();
            continue;
        }
        *left -= 1;
        let Some((head, next)) = line(buf, at) else {
            return Ok(None);
        };
        let Some((&kind, rest)) = head.split_first() else {
            return Err(protocol_error("empty line"));
        };
        at = next;
        match kind {
            b'+' | b'-' | b':' => {}
            b'$' => {
                let n = int(rest)?;
                if n >= 0 {
                    let end = at + n as usize + 2;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    at = end;
                }
            }
            b'*' => {
                let n = int(rest)?;
                if n > 0 {
                    if pending.len() > MAX_DEPTH {
                        return Err(protocol_error("nested too deeply"));
                    }
                    pending.push(n);
                }
            }
            other => return Err(protocol_error(format!("unexpected type byte {other:#x}"))),
        }
    }
    Ok(Some(at))
}

/// A cursor over one complete, scanned reply.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

enum Item<'a> {
    Array(i64),
    Bulk(Option<&'a [u8]>),
    Error(&'a [u8]),
    Other,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> RedisResult<Item<'a>> {
        let (head, next) = line(self.buf, self.at).ok_or_else(|| protocol_error("truncated"))?;
        self.at = next;
        let (&kind, rest) = head
            .split_first()
            .ok_or_else(|| protocol_error("empty line"))?;
        Ok(match kind {
            b'*' => Item::Array(int(rest)?),
            b'$' => {
                let n = int(rest)?;
                if n < 0 {
                    Item::Bulk(None)
                } else {
                    let start = self.at;
                    let end = start + n as usize;
                    self.at = end + 2;
                    let bytes = self
                        .buf
                        .get(start..end)
                        .ok_or_else(|| protocol_error("truncated string"))?;
                    Item::Bulk(Some(bytes))
                }
            }
            b'-' => Item::Error(rest),
            _ => Item::Other,
        })
    }

    fn array(&mut self, what: &str) -> RedisResult<i64> {
        match self.next()? {
            Item::Array(n) => Ok(n),
            _ => Err(protocol_error(format!("{what} is not an array"))),
        }
    }

    fn bulk(&mut self, what: &str) -> RedisResult<&'a [u8]> {
        match self.next()? {
            Item::Bulk(Some(b)) => Ok(b),
            _ => Err(protocol_error(format!("{what} is not a string"))),
        }
    }
}

/// Decodes one complete XREADGROUP reply (RESP2 bytes, as framed by the
/// connection) into entries, each with a delivery count of 1 (`>` only
/// returns never-delivered entries). Public for the benchmarks.
pub fn decode_xreadgroup(reply: &[u8]) -> RedisResult<Vec<Entry>> {
    let mut c = Cursor { buf: reply, at: 0 };
    let streams = match c.next()? {
        Item::Array(n) if n < 0 => return Ok(Vec::new()),
        Item::Array(n) => n,
        Item::Bulk(None) => return Ok(Vec::new()),
        Item::Error(line) => return Err(server_error(line)),
        _ => return Err(protocol_error("XREADGROUP reply is not an array")),
    };
    let mut out = Vec::new();
    for _ in 0..streams {
        if c.array("stream element")? != 2 {
            return Err(protocol_error("stream element is not [key, entries]"));
        }
        c.bulk("stream key")?;
        let n = c.array("entry list")?;
        out.reserve(n.max(0) as usize);
        for _ in 0..n {
            if c.array("entry")? != 2 {
                return Err(protocol_error("entry is not [id, fields]"));
            }
            let id = std::str::from_utf8(c.bulk("entry id")?)
                .map_err(|_| protocol_error("non-UTF-8 entry id"))?
                .to_owned();
            let payload = match c.next()? {
                Item::Array(k) if k < 0 => Payload::Trimmed,
                Item::Bulk(None) => Payload::Trimmed,
                Item::Array(k) if k % 2 == 1 => {
                    return Err(protocol_error("odd number of field/value items"));
                }
                Item::Array(k) => fields(&mut c, (k / 2) as usize)?,
                _ => return Err(protocol_error("entry fields are not an array")),
            };
            out.push(Entry {
                id,
                payload,
                delivery_count: 1,
            });
        }
    }
    if c.at != reply.len() {
        return Err(protocol_error("trailing bytes after the reply"));
    }
    Ok(out)
}

fn fields(c: &mut Cursor<'_>, pairs: usize) -> RedisResult<Payload> {
    let mut named = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let k = c.bulk("field name")?;
        let v = c.bulk("field value")?;
        match std::str::from_utf8(k) {
            Ok(k) => named.push((k.to_owned(), v.to_vec())),
            Err(_) => {
                // Rare: keep everything as bytes for the dead-letter record.
                let mut raw: Vec<(Vec<u8>, Vec<u8>)> = named
                    .into_iter()
                    .map(|(k, v): (String, Vec<u8>)| (k.into_bytes(), v))
                    .collect();
                raw.push((k.to_vec(), v.to_vec()));
                for _ in i + 1..pairs {
                    raw.push((
                        c.bulk("field name")?.to_vec(),
                        c.bulk("field value")?.to_vec(),
                    ));
                }
                return Ok(Payload::Raw(raw));
            }
        }
    }
    Ok(Payload::Fields(named))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::entry::parse_xreadgroup;

    fn bulk(s: &[u8]) -> Vec<u8> {
        let mut v = format!("${}\r\n", s.len()).into_bytes();
        v.extend_from_slice(s);
        v.extend_from_slice(b"\r\n");
        v
    }

    /// An entry id with its field pairs (`None`: trimmed).
    type TestEntry<'a> = (&'a str, Option<Vec<(&'a [u8], &'a [u8])>>);

    fn reply(entries: &[TestEntry<'_>]) -> Vec<u8> {
        let mut v = b"*1\r\n*2\r\n".to_vec();
        v.extend(bulk(b"orders"));
        v.extend(format!("*{}\r\n", entries.len()).into_bytes());
        for (id, fields) in entries {
            v.extend(b"*2\r\n");
            v.extend(bulk(id.as_bytes()));
            match fields {
                None => v.extend(b"*-1\r\n"),
                Some(f) => {
                    v.extend(format!("*{}\r\n", f.len() * 2).into_bytes());
                    for (k, val) in f {
                        v.extend(bulk(k));
                        v.extend(bulk(val));
                    }
                }
            }
        }
        v
    }

    fn sample() -> Vec<u8> {
        reply(&[
            (
                "1-0",
                Some(vec![(b"type", b"paid"), (b"amount", b"12\r\n5")]),
            ),
            ("2-0", None),
            ("3-0", Some(vec![(b"ok", b""), (b"\xff", b"x")])),
            ("4-0", Some(vec![])),
        ])
    }

    #[test]
    fn decodes_like_the_generic_parser() {
        let bytes = sample();
        assert_eq!(scan(&bytes).unwrap(), Some(bytes.len()));
        let fast = decode_xreadgroup(&bytes).unwrap();
        let value = redis::parse_redis_value(&bytes).unwrap();
        assert_eq!(fast, parse_xreadgroup(value, 1).unwrap());
        assert_eq!(fast[1].payload, Payload::Trimmed);
        assert!(matches!(fast[2].payload, Payload::Raw(_)));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert_eq!(scan(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(b"+OK\r\n");
        assert_eq!(
            scan(&two).unwrap(),
            Some(bytes.len()),
            "stops after one reply"
        );
    }

    #[test]
    fn nil_and_errors() {
        assert!(decode_xreadgroup(b"*-1\r\n").unwrap().is_empty());
        let err =
            decode_xreadgroup(b"-NOGROUP No such key 'x' or consumer group 'g'\r\n").unwrap_err();
        assert_eq!(err.code(), Some("NOGROUP"));
        assert!(scan(b"?what\r\n").is_err());
        assert!(scan(b"$x1\r\n").is_err());
        assert!(scan(b"*99999999999999999999\r\n").is_err());
        assert_eq!(int(b"-1").unwrap(), -1);
        assert_eq!(int(b"1234").unwrap(), 1234);
        assert!(int(b"").is_err() && int(b"-").is_err() && int(b"1a").is_err());
        assert!(
            decode_xreadgroup(b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*1\r\n$1\r\nk\r\n")
                .is_err()
        );
    }
}
