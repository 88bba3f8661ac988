//! The hot read path: a minimal RESP2 connection for the commands that carry
//! entry payloads (`XREADGROUP`, and `XRANGE` of claimed entries), decoding
//! replies straight into [`Entry`] values as the bytes arrive.
//!
//! The generic client parses every reply into a tree of `redis::Value`s;
//! for 5-field entries that was over a third of the host's CPU per entry.
//! This decoder makes one pass, resuming where it stopped on every socket
//! read (so a huge reply costs linear time), and allocates only the id, the
//! names and the values that the handler receives anyway. It also enforces
//! the entry limits while reading: once an entry has more fields than
//! allowed or costs more bytes, the rest of its payload is skipped as it
//! streams past and the entry arrives [`Payload::Withheld`] — a hostile
//! entry of any size costs the host at most one limit's worth of memory.
//! It speaks TCP, TLS (rustls, with the same roots, client certificate and
//! server name as the redis-rs connections) and Unix sockets.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use redis::{RedisError, RedisResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::commands::GroupRef;
use super::entry::{Entry, EntryLimits, Payload};
use crate::config::{Address, RedisEndpoint};

/// Longest header line (`*<n>` / `$<n>`), and longest string outside an
/// entry's fields (stream key, id) this decoder buffers.
const MAX_FRAME_STRING: usize = 1 << 20;

/// Deepest nesting an XREADGROUP reply has (streams/stream/entries/entry/fields).
const MAX_DEPTH: usize = 8;

enum Socket {
    Tcp(TcpStream),
    // Boxed: the TLS state is a few hundred bytes, the other sockets a handle.
    Tls(Box<TlsStream<TcpStream>>),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
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
        let limit = block + self.timeout;
        within(limit, async {
            self.write(&cmd).await?;
            self.decode(Decoder::new(Shape::ReadGroup, limits)).await
        })
        .await?
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
                let found = self.decode(Decoder::new(Shape::Range, limits)).await?;
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
fn field_cost(is_name: bool, len: usize) -> usize {
    len + if is_name {
        super::entry::FIELD_OVERHEAD
    } else {
        0
    }
}

async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> RedisResult<T> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| io_error(std::io::ErrorKind::TimedOut, "Redis did not answer in time"))
}

fn find_crlf(s: &[u8]) -> Option<usize> {
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

/// Which reply is being decoded: where in it the entries sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `XREADGROUP`: `[[key, [entry, …]], …]` (or nil when BLOCK timed out).
    ReadGroup,
    /// `XRANGE` / `XCLAIM`: `[entry, …]`.
    Range,
}

impl Shape {
    /// Depth of the entry list: inside `[key, entries]` for reads, the reply
    /// itself for ranges.
    fn entries_depth(self) -> usize {
        match self {
            Shape::ReadGroup => 2,
            Shape::Range => 0,
        }
    }
}

/// What a value at the current position is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Framing around the entries (stream list, stream key).
    Frame,
    /// The list of entries.
    Entries,
    /// One `[id, fields]` pair.
    Entry,
    /// An entry id.
    Id,
    /// An entry's field list.
    Fields,
    /// A field name (even index) or value (odd index).
    Field(bool),
}

/// An entry being decoded.
#[derive(Debug, Default)]
struct Partial {
    id: Option<String>,
    kept: Kept,
    trimmed: bool,
    withheld: bool,
    fields: usize,
    cost: usize,
}

/// The fields kept so far: named while every name is UTF-8 (checked once,
/// as each arrives), raw from the first that is not.
#[derive(Debug)]
enum Kept {
    Named(Vec<(String, Vec<u8>)>),
    Raw(Vec<(Vec<u8>, Vec<u8>)>),
}

impl Default for Kept {
    fn default() -> Self {
        Kept::Named(Vec::new())
    }
}

impl Kept {
    fn reserve(&mut self, n: usize) {
        match self {
            Kept::Named(v) => v.reserve(n),
            Kept::Raw(v) => v.reserve(n),
        }
    }

    fn name(&mut self, bytes: Vec<u8>) {
        match self {
            Kept::Named(v) => match String::from_utf8(bytes) {
                Ok(name) => v.push((name, Vec::new())),
                Err(e) => {
                    let mut raw: Vec<(Vec<u8>, Vec<u8>)> = std::mem::take(v)
                        .into_iter()
                        .map(|(k, v)| (k.into_bytes(), v))
                        .collect();
                    raw.push((e.into_bytes(), Vec::new()));
                    *self = Kept::Raw(raw);
                }
            },
            Kept::Raw(v) => v.push((bytes, Vec::new())),
        }
    }

    fn value(&mut self, bytes: Vec<u8>) -> RedisResult<()> {
        let slot = match self {
            Kept::Named(v) => v.last_mut().map(|(_, v)| v),
            Kept::Raw(v) => v.last_mut().map(|(_, v)| v),
        };
        *slot.ok_or_else(|| protocol_error("a value without a name"))? = bytes;
        Ok(())
    }
}

impl Partial {
    fn into_entry(self, delivery_count: u32) -> RedisResult<Entry> {
        let id = self.id.ok_or_else(|| protocol_error("entry without id"))?;
        let payload = if self.trimmed {
            Payload::Trimmed
        } else if self.withheld {
            Payload::Withheld {
                fields: self.fields,
                bytes: self.cost,
            }
        } else {
            match self.kept {
                Kept::Named(f) => Payload::Fields(f),
                Kept::Raw(f) => Payload::Raw(f),
            }
        };
        Ok(Entry {
            id,
            payload,
            delivery_count,
        })
    }

    /// Stops keeping this entry's payload; its size is still counted.
    fn withhold(&mut self) {
        self.withheld = true;
        self.kept = Kept::default();
    }
}

/// An incremental decoder for one reply: fed whatever bytes have arrived,
/// it consumes them and keeps its place.
#[derive(Debug)]
pub struct Decoder {
    shape: Shape,
    limits: EntryLimits,
    /// Per open array: items still to come, and the index of the next one.
    open: Vec<(i64, usize)>,
    /// Bytes of a skipped string (and its CRLF) still to discard.
    skip: usize,
    /// Whether the top-level value is complete.
    done: bool,
    entry: Option<Partial>,
    out: Vec<Entry>,
}

impl Decoder {
    /// A decoder for one reply of `shape`, keeping entries within `limits`.
    pub fn new(shape: Shape, limits: EntryLimits) -> Self {
        Self {
            shape,
            limits,
            open: Vec::with_capacity(MAX_DEPTH),
            skip: 0,
            done: false,
            entry: None,
            out: Vec::new(),
        }
    }

    /// The role of the next value, from where it sits.
    fn role(&self) -> Role {
        let depth = self.open.len();
        let base = self.shape.entries_depth();
        if depth < base || (base == 2 && self.open[1].1 != 1) {
            return Role::Frame;
        }
        let index = self.open.last().map_or(0, |(_, i)| *i);
        match depth - base {
            0 => Role::Entries,
            1 => Role::Entry,
            2 if index == 0 => Role::Id,
            2 => Role::Fields,
            _ => Role::Field(index.is_multiple_of(2)),
        }
    }

    /// Consumes what it can of `buf`; `true` once the reply is complete.
    pub fn feed(&mut self, buf: &mut BytesMut) -> RedisResult<bool> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(false);
                }
                self.item_done()?;
                continue;
            }
            if self.done {
                return Ok(true);
            }
            let Some(end) = find_crlf(buf) else {
                if buf.len() > MAX_FRAME_STRING {
                    return Err(protocol_error("header line too long"));
                }
                return Ok(false);
            };
            let (&kind, digits) = buf[..end]
                .split_first()
                .ok_or_else(|| protocol_error("empty line"))?;
            match kind {
                b'*' => {
                    let n = int(digits)?;
                    buf.advance(end + 2);
                    self.array(n)?;
                }
                b'$' => {
                    let n = int(digits)?;
                    if n < 0 {
                        buf.advance(end + 2);
                        self.nil()?;
                        continue;
                    }
                    let n = n as usize;
                    let role = self.role();
                    if !self.wants(role, n)? {
                        buf.advance(end + 2);
                        self.account(role, n)?;
                        self.skip = n + 2;
                        continue;
                    }
                    let total = end + 2 + n + 2;
                    if buf.len() < total {
                        if buf.capacity() < total {
                            buf.reserve(total - buf.len());
                        }
                        return Ok(false);
                    }
                    let bytes = buf[end + 2..end + 2 + n].to_vec();
                    buf.advance(total);
                    self.account(role, n)?;
                    self.string(role, bytes)?;
                }
                b'-' if self.open.is_empty() => {
                    let err = server_error(&buf[1..end]);
                    buf.advance(end + 2);
                    return Err(err);
                }
                b'+' | b':' => {
                    buf.advance(end + 2);
                    if self.role() != Role::Frame {
                        return Err(protocol_error("unexpected simple value in an entry"));
                    }
                    self.item_done()?;
                }
                other => return Err(protocol_error(format!("unexpected type byte {other:#x}"))),
            }
        }
    }

    /// Whether to buffer a string of `len` bytes in `role`. Asked again each
    /// time more bytes arrive, so it changes nothing: the cost is counted
    /// once the string is consumed ([`Decoder::account`]).
    fn wants(&self, role: Role, len: usize) -> RedisResult<bool> {
        match (role, &self.entry) {
            (Role::Field(is_name), Some(entry)) => {
                Ok(!entry.withheld
                    && entry.cost + field_cost(is_name, len) <= self.limits.max_bytes)
            }
            (Role::Field(_), None) => Err(protocol_error("field outside an entry")),
            _ if len > MAX_FRAME_STRING => Err(protocol_error("string too long")),
            _ => Ok(true),
        }
    }

    /// Counts a consumed field string towards its entry's cost, withholding
    /// the entry's payload once it is over the byte limit.
    fn account(&mut self, role: Role, len: usize) -> RedisResult<()> {
        if let Role::Field(is_name) = role {
            let max = self.limits.max_bytes;
            let entry = self.partial()?;
            entry.cost += field_cost(is_name, len);
            if !entry.withheld && entry.cost > max {
                entry.withhold();
            }
        }
        Ok(())
    }

    fn partial(&mut self) -> RedisResult<&mut Partial> {
        self.entry
            .as_mut()
            .ok_or_else(|| protocol_error("field outside an entry"))
    }

    fn array(&mut self, n: i64) -> RedisResult<()> {
        let role = self.role();
        if n < 0 {
            return self.nil();
        }
        match role {
            Role::Entry => {
                if n != 2 {
                    return Err(protocol_error("entry is not [id, fields]"));
                }
                self.entry = Some(Partial::default());
            }
            Role::Fields => {
                if n % 2 == 1 {
                    return Err(protocol_error("odd number of field/value items"));
                }
                let max = self.limits.max_fields;
                let entry = self.partial()?;
                entry.fields = (n / 2) as usize;
                if entry.fields > max {
                    entry.withhold();
                } else {
                    entry.kept.reserve(entry.fields);
                }
            }
            Role::Entries => self.out.reserve(n.min(100_000) as usize),
            Role::Frame => {}
            Role::Id | Role::Field(_) => {
                return Err(protocol_error("nested array inside an entry"));
            }
        }
        if n == 0 {
            return self.item_done();
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(protocol_error("nested too deeply"));
        }
        self.open.push((n, 0));
        Ok(())
    }

    fn nil(&mut self) -> RedisResult<()> {
        match self.role() {
            Role::Fields => self.partial()?.trimmed = true,
            Role::Frame | Role::Entries => {}
            _ => return Err(protocol_error("unexpected nil")),
        }
        self.item_done()
    }

    fn string(&mut self, role: Role, bytes: Vec<u8>) -> RedisResult<()> {
        match role {
            Role::Id => {
                let id = String::from_utf8(bytes).map_err(|_| protocol_error("non-UTF-8 id"))?;
                self.partial()?.id = Some(id);
            }
            Role::Field(true) => self.partial()?.kept.name(bytes),
            Role::Field(false) => self.partial()?.kept.value(bytes)?,
            Role::Frame => {}
            _ => return Err(protocol_error("unexpected string")),
        }
        self.item_done()
    }

    /// One value at the current position is complete.
    fn item_done(&mut self) -> RedisResult<()> {
        loop {
            let Some((left, index)) = self.open.last_mut() else {
                self.done = true;
                return Ok(());
            };
            *left -= 1;
            *index += 1;
            if *left > 0 {
                return Ok(());
            }
            self.open.pop();
            // An array just closed: if it was an entry, it is complete.
            if self.role() == Role::Entry {
                let count = if self.shape == Shape::ReadGroup { 1 } else { 0 };
                let entry = self
                    .entry
                    .take()
                    .ok_or_else(|| protocol_error("empty entry"))?;
                self.out.push(entry.into_entry(count)?);
            }
        }
    }

    /// The entries of the complete reply.
    pub fn finish(self) -> RedisResult<Vec<Entry>> {
        if !self.done {
            return Err(protocol_error("truncated reply"));
        }
        Ok(self.out)
    }
}

/// Decodes one complete XREADGROUP reply (RESP2 bytes) into entries, each
/// with a delivery count of 1 (`>` only returns never-delivered entries).
/// Public for the benchmarks and tests.
pub fn decode_xreadgroup(reply: &[u8], limits: EntryLimits) -> RedisResult<Vec<Entry>> {
    let mut buf = BytesMut::from(reply);
    let mut decoder = Decoder::new(Shape::ReadGroup, limits);
    if !decoder.feed(&mut buf)? {
        return Err(protocol_error("truncated reply"));
    }
    if !buf.is_empty() {
        return Err(protocol_error("trailing bytes after the reply"));
    }
    decoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::entry::parse_xreadgroup;

    const ANY: EntryLimits = EntryLimits {
        max_fields: usize::MAX,
        max_bytes: usize::MAX,
    };

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
        let fast = decode_xreadgroup(&bytes, ANY).unwrap();
        let value = redis::parse_redis_value(&bytes).unwrap();
        assert_eq!(fast, parse_xreadgroup(value, 1).unwrap());
        assert_eq!(fast[1].payload, Payload::Trimmed);
        assert!(matches!(fast[2].payload, Payload::Raw(_)));
    }

    #[test]
    fn gives_the_same_entries_whatever_the_bytes_arrive_in() {
        let bytes = sample();
        let whole = decode_xreadgroup(&bytes, ANY).unwrap();
        for chunk in [1, 2, 3, 7, 64] {
            let mut decoder = Decoder::new(Shape::ReadGroup, ANY);
            let mut buf = BytesMut::new();
            let mut done = false;
            for piece in bytes.chunks(chunk) {
                assert!(!done, "complete before the last byte (chunk {chunk})");
                buf.extend_from_slice(piece);
                done = decoder.feed(&mut buf).unwrap();
            }
            assert!(done && buf.is_empty(), "chunk {chunk}");
            assert_eq!(decoder.finish().unwrap(), whole, "chunk {chunk}");
        }
    }

    #[test]
    fn withholds_entries_over_the_limits_but_keeps_their_neighbours() {
        let wide: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b"2"), (b"c", b"3")];
        let big: Vec<(&[u8], &[u8])> = vec![(b"blob", &[7u8; 500])];
        let bytes = reply(&[
            ("1-0", Some(wide)),
            ("2-0", Some(vec![(b"k", b"v")])),
            ("3-0", Some(big)),
        ]);
        let limits = EntryLimits {
            max_fields: 2,
            max_bytes: 200,
        };
        // Fed a byte at a time: a skipped payload never needs buffering.
        let mut decoder = Decoder::new(Shape::ReadGroup, limits);
        let mut buf = BytesMut::new();
        for b in &bytes {
            buf.extend_from_slice(&[*b]);
            decoder.feed(&mut buf).unwrap();
            assert!(buf.len() < 64, "buffered {} bytes", buf.len());
        }
        let entries = decoder.finish().unwrap();
        assert_eq!(
            entries[0].payload,
            Payload::Withheld {
                fields: 3,
                bytes: 3 * (2 + super::super::entry::FIELD_OVERHEAD)
            }
        );
        assert_eq!(
            entries[1].payload,
            Payload::Fields(vec![("k".into(), b"v".to_vec())])
        );
        assert_eq!(
            entries[2].payload,
            Payload::Withheld {
                fields: 1,
                bytes: 4 + 500 + super::super::entry::FIELD_OVERHEAD
            }
        );
    }

    #[test]
    fn nil_errors_and_garbage() {
        assert!(decode_xreadgroup(b"*-1\r\n", ANY).unwrap().is_empty());
        let err = decode_xreadgroup(b"-NOGROUP No such key 'x' or consumer group 'g'\r\n", ANY)
            .unwrap_err();
        assert_eq!(err.code(), Some("NOGROUP"));
        for bad in [
            &b"?what\r\n"[..],
            b"$x1\r\n",
            b"*99999999999999999999\r\n",
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*1\r\n$1\r\nk\r\n",
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*3\r\n",
        ] {
            assert!(decode_xreadgroup(bad, ANY).is_err(), "{bad:?}");
        }
        assert_eq!(int(b"-1").unwrap(), -1);
        assert_eq!(int(b"1234").unwrap(), 1234);
        assert!(int(b"").is_err() && int(b"-").is_err() && int(b"1a").is_err());
    }

    #[test]
    fn decodes_ranges() {
        let mut bytes = b"*1\r\n*2\r\n".to_vec();
        bytes.extend(bulk(b"5-0"));
        bytes.extend(b"*2\r\n");
        bytes.extend(bulk(b"k"));
        bytes.extend(bulk(b"v"));
        let mut decoder = Decoder::new(Shape::Range, ANY);
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(decoder.feed(&mut buf).unwrap());
        let entries = decoder.finish().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, "5-0");
        let mut empty = Decoder::new(Shape::Range, ANY);
        assert!(empty.feed(&mut BytesMut::from(&b"*0\r\n"[..])).unwrap());
        assert!(empty.finish().unwrap().is_empty());
    }
}
