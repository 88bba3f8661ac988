//! The RESP2 decoder of the hot read path: one pass over a reply, resuming
//! where it stopped on every socket read (so a huge reply costs linear
//! time), allocating only the id, the names and the values that the handler
//! receives anyway. The generic client builds a tree of `redis::Value`s
//! first; the README's performance section says what that cost. It enforces
//! the entry limits while reading: once an entry has more fields than
//! allowed or costs more bytes, the rest of its payload is skipped as it
//! streams past and the entry arrives [`Payload::Withheld`], so a hostile
//! entry of any size costs the host at most one limit's worth of memory.

use bytes::{Buf, BytesMut};
use redis::{RedisError, RedisResult};

use super::io_error;
use crate::vocab::entry::{Entry, EntryLimits, FIELD_OVERHEAD, Payload};

/// Longest header line (`*<n>` / `$<n>`), and longest string outside an
/// entry's fields (stream key, id) this decoder buffers.
pub(super) const MAX_FRAME_STRING: usize = 1 << 20;

/// Deepest nesting an XREADGROUP reply has (streams/stream/entries/entry/fields).
const MAX_DEPTH: usize = 8;

pub(super) fn protocol_error(detail: impl Into<String>) -> RedisError {
    // The stream is out of step with the server once framing fails: treat
    // it as a broken connection so it is dropped and re-established.
    io_error(
        std::io::ErrorKind::InvalidData,
        format!("malformed reply: {}", detail.into()),
    )
}

/// A server error line (`-CODE message`) as the error redis-rs would give,
/// so `code()` and error classification work the same on both paths.
pub(super) fn server_error(line: &[u8]) -> RedisError {
    let mut framed = Vec::with_capacity(line.len() + 3);
    framed.push(b'-');
    framed.extend_from_slice(line);
    framed.extend_from_slice(b"\r\n");
    match redis::parse_redis_value(&framed).and_then(|v| v.extract_error()) {
        Err(e) => e,
        Ok(_) => protocol_error(String::from_utf8_lossy(line).into_owned()),
    }
}

fn field_cost(is_name: bool, len: usize) -> usize {
    len + if is_name { FIELD_OVERHEAD } else { 0 }
}

pub(super) fn find_crlf(s: &[u8]) -> Option<usize> {
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
pub enum ReplyShape {
    /// `XREADGROUP`: `[[key, [entry, …]], …]` (or nil when BLOCK timed out).
    ReadGroup,
    /// `XRANGE` / `XCLAIM`: `[entry, …]`.
    Range,
}

impl ReplyShape {
    /// Depth of the entry list: inside `[key, entries]` for reads, the reply
    /// itself for ranges.
    fn entries_depth(self) -> usize {
        match self {
            ReplyShape::ReadGroup => 2,
            ReplyShape::Range => 0,
        }
    }
}

/// What a value at the current position is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
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
struct EntryInProgress {
    id: Option<String>,
    kept: KeptFields,
    trimmed: bool,
    withheld: bool,
    fields: usize,
    cost: usize,
}

/// The fields kept so far: named while every name is UTF-8 (checked once,
/// as each arrives), raw from the first that is not.
#[derive(Debug)]
enum KeptFields {
    Named(Vec<(String, Vec<u8>)>),
    Raw(Vec<(Vec<u8>, Vec<u8>)>),
}

impl Default for KeptFields {
    fn default() -> Self {
        KeptFields::Named(Vec::new())
    }
}

impl KeptFields {
    fn reserve(&mut self, n: usize) {
        match self {
            KeptFields::Named(v) => v.reserve(n),
            KeptFields::Raw(v) => v.reserve(n),
        }
    }

    fn name(&mut self, bytes: Vec<u8>) {
        match self {
            KeptFields::Named(v) => match String::from_utf8(bytes) {
                Ok(name) => v.push((name, Vec::new())),
                Err(e) => {
                    let mut raw: Vec<(Vec<u8>, Vec<u8>)> = std::mem::take(v)
                        .into_iter()
                        .map(|(k, v)| (k.into_bytes(), v))
                        .collect();
                    raw.push((e.into_bytes(), Vec::new()));
                    *self = KeptFields::Raw(raw);
                }
            },
            KeptFields::Raw(v) => v.push((bytes, Vec::new())),
        }
    }

    fn value(&mut self, bytes: Vec<u8>) -> RedisResult<()> {
        let slot = match self {
            KeptFields::Named(v) => v.last_mut().map(|(_, v)| v),
            KeptFields::Raw(v) => v.last_mut().map(|(_, v)| v),
        };
        *slot.ok_or_else(|| protocol_error("a value without a name"))? = bytes;
        Ok(())
    }
}

impl EntryInProgress {
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
                KeptFields::Named(f) => Payload::Fields(f),
                KeptFields::Raw(f) => Payload::Raw(f),
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
        self.kept = KeptFields::default();
    }
}

/// An incremental decoder for one reply: fed whatever bytes have arrived,
/// it consumes them and keeps its place.
#[derive(Debug)]
pub struct Decoder {
    shape: ReplyShape,
    limits: EntryLimits,
    /// Per open array: items still to come, and the index of the next one.
    open: Vec<(i64, usize)>,
    /// Bytes of a skipped string (and its CRLF) still to discard.
    skip: usize,
    /// Whether the top-level value is complete.
    done: bool,
    entry: Option<EntryInProgress>,
    out: Vec<Entry>,
}

impl Decoder {
    /// A decoder for one reply of `shape`, keeping entries within `limits`.
    pub fn new(shape: ReplyShape, limits: EntryLimits) -> Self {
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
    fn role(&self) -> Position {
        let depth = self.open.len();
        let base = self.shape.entries_depth();
        if depth < base || (base == 2 && self.open[1].1 != 1) {
            return Position::Frame;
        }
        let index = self.open.last().map_or(0, |(_, i)| *i);
        match depth - base {
            0 => Position::Entries,
            1 => Position::Entry,
            2 if index == 0 => Position::Id,
            2 => Position::Fields,
            _ => Position::Field(index.is_multiple_of(2)),
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
                    if self.role() != Position::Frame {
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
    fn wants(&self, role: Position, len: usize) -> RedisResult<bool> {
        match (role, &self.entry) {
            (Position::Field(is_name), Some(entry)) => {
                Ok(!entry.withheld
                    && entry.cost + field_cost(is_name, len) <= self.limits.max_bytes)
            }
            (Position::Field(_), None) => Err(protocol_error("field outside an entry")),
            _ if len > MAX_FRAME_STRING => Err(protocol_error("string too long")),
            _ => Ok(true),
        }
    }

    /// Counts a consumed field string towards its entry's cost, withholding
    /// the entry's payload once it is over the byte limit.
    fn account(&mut self, role: Position, len: usize) -> RedisResult<()> {
        if let Position::Field(is_name) = role {
            let max = self.limits.max_bytes;
            let entry = self.partial()?;
            entry.cost += field_cost(is_name, len);
            if !entry.withheld && entry.cost > max {
                entry.withhold();
            }
        }
        Ok(())
    }

    fn partial(&mut self) -> RedisResult<&mut EntryInProgress> {
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
            Position::Entry => {
                if n != 2 {
                    return Err(protocol_error("entry is not [id, fields]"));
                }
                self.entry = Some(EntryInProgress::default());
            }
            Position::Fields => {
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
            Position::Entries => self.out.reserve(n.min(100_000) as usize),
            Position::Frame => {}
            Position::Id | Position::Field(_) => {
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
            Position::Fields => self.partial()?.trimmed = true,
            Position::Frame | Position::Entries => {}
            _ => return Err(protocol_error("unexpected nil")),
        }
        self.item_done()
    }

    fn string(&mut self, role: Position, bytes: Vec<u8>) -> RedisResult<()> {
        match role {
            Position::Id => {
                let id = String::from_utf8(bytes).map_err(|_| protocol_error("non-UTF-8 id"))?;
                self.partial()?.id = Some(id);
            }
            Position::Field(true) => self.partial()?.kept.name(bytes),
            Position::Field(false) => self.partial()?.kept.value(bytes)?,
            Position::Frame => {}
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
            if self.role() == Position::Entry {
                let count = if self.shape == ReplyShape::ReadGroup {
                    1
                } else {
                    0
                };
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
    let mut decoder = Decoder::new(ReplyShape::ReadGroup, limits);
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
    use crate::stream::reply::parse_xreadgroup;

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
            let mut decoder = Decoder::new(ReplyShape::ReadGroup, ANY);
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
        let mut decoder = Decoder::new(ReplyShape::ReadGroup, limits);
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
                bytes: 3 * (2 + FIELD_OVERHEAD)
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
                bytes: 4 + 500 + FIELD_OVERHEAD
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
        let mut bytes = b"*2\r\n*2\r\n".to_vec();
        bytes.extend(bulk(b"5-0"));
        bytes.extend(b"*4\r\n");
        bytes.extend(bulk(b"k"));
        bytes.extend(bulk(b"v"));
        bytes.extend(bulk(b"bin"));
        bytes.extend(bulk(b"\x00\xff\r\n"));
        bytes.extend(b"*2\r\n");
        bytes.extend(bulk(b"6-1"));
        bytes.extend(b"*2\r\n");
        bytes.extend(bulk(b"e"));
        bytes.extend(bulk(b""));
        let mut decoder = Decoder::new(ReplyShape::Range, ANY);
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(decoder.feed(&mut buf).unwrap());
        let entries = decoder.finish().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "5-0");
        assert_eq!(
            entries[0].payload,
            Payload::Fields(vec![
                ("k".into(), b"v".to_vec()),
                ("bin".into(), b"\x00\xff\r\n".to_vec())
            ]),
            "fields in order, values byte for byte"
        );
        assert_eq!(entries[1].id, "6-1");
        assert_eq!(
            entries[1].payload,
            Payload::Fields(vec![("e".into(), Vec::new())])
        );
        let mut empty = Decoder::new(ReplyShape::Range, ANY);
        assert!(empty.feed(&mut BytesMut::from(&b"*0\r\n"[..])).unwrap());
        assert!(empty.finish().unwrap().is_empty());
    }
}
