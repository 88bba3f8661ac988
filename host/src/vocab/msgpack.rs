//! The MessagePack subset Redis's Lua reads back with `cmsgpack.unpack`: one
//! array of unsigned integers and strings. The ack-with-emits script takes a
//! whole batch's layout and fields as one such value instead of one argument
//! per field: Redis then parses one bulk string rather than a dozen per
//! entry, and Lua gets its counts as numbers without `tonumber` (which costs
//! a `strtod` each). The README's performance section has the callgrind
//! figures.
//!
//! Strings are binary-safe: Redis's cmsgpack has no `bin` types, but its
//! `str` types carry any bytes into a Lua string.

/// Largest string one packed value may hold (the `str 32` length field).
pub const MAX_STR: usize = u32::MAX as usize;

/// Builds one top-level array, element by element.
#[derive(Debug)]
pub struct ArrayPacker {
    buf: Vec<u8>,
    items: u32,
}

impl Default for ArrayPacker {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl ArrayPacker {
    /// An empty array, with room for `bytes` of elements.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(5 + bytes);
        // `array 32`, its count patched in by `finish`: the count is not
        // known up front, and one fixed-size header keeps that a copy-free
        // overwrite.
        buf.extend_from_slice(&[0xdd, 0, 0, 0, 0]);
        Self { buf, items: 0 }
    }

    /// Appends an unsigned integer.
    pub fn uint(&mut self, v: u64) {
        self.items += 1;
        match v {
            0..=0x7f => self.buf.push(v as u8),
            0x80..=0xff => self.buf.extend_from_slice(&[0xcc, v as u8]),
            0x100..=0xffff => {
                self.buf.push(0xcd);
                self.buf.extend_from_slice(&(v as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.buf.push(0xce);
                self.buf.extend_from_slice(&(v as u32).to_be_bytes());
            }
            _ => {
                self.buf.push(0xcf);
                self.buf.extend_from_slice(&v.to_be_bytes());
            }
        }
    }

    /// Appends a string of any bytes.
    ///
    /// # Panics
    /// If `s` is longer than [`MAX_STR`]; callers bound what they pack far
    /// below it.
    pub fn str(&mut self, s: &[u8]) {
        self.items += 1;
        put_str(&mut self.buf, s);
    }

    /// Appends the name/value pairs of `fields`, already packed.
    pub fn fields(&mut self, fields: &PackedFields) {
        self.items += 2 * fields.count;
        self.buf.extend_from_slice(&fields.buf);
    }

    /// Elements appended so far.
    pub fn len(&self) -> usize {
        self.items as usize
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// The packed array.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[1..5].copy_from_slice(&self.items.to_be_bytes());
        self.buf
    }
}

/// The size of the header [`put_str`] writes for a string of `n` bytes.
fn str_header_len(n: usize) -> usize {
    match n {
        0..=31 => 1,
        32..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Appends `s` as one MessagePack string, with the smallest header.
///
/// # Panics
/// If `s` is longer than [`MAX_STR`].
fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() <= MAX_STR, "a packed string of {} bytes", s.len());
    let n = s.len();
    match n {
        0..=31 => buf.push(0xa0 | n as u8),
        32..=0xff => buf.extend_from_slice(&[0xd9, n as u8]),
        0x100..=0xffff => {
            buf.push(0xda);
            buf.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            buf.push(0xdb);
            buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    buf.extend_from_slice(s);
}

/// The name/value pairs of one emitted entry, packed as they are copied out
/// of the guest's memory: the committer appends them to its batch with one
/// copy, and nothing is allocated per field on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedFields {
    buf: Vec<u8>,
    count: u32,
}

impl PackedFields {
    /// No fields yet, with room for exactly the pairs of these name and
    /// value sizes, headers included.
    pub fn with_room_for(sizes: impl IntoIterator<Item = (usize, usize)>) -> Self {
        Self {
            buf: Vec::with_capacity(packed_size(sizes)),
            count: 0,
        }
    }

    /// Appends one pair.
    ///
    /// # Panics
    /// If either part is longer than [`MAX_STR`]; emits are bounded far below it.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        put_str(&mut self.buf, name);
        put_str(&mut self.buf, value);
        self.count += 1;
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// These pairs after `first` ones.
    pub fn after(first: &[(&[u8], &[u8])], rest: &PackedFields) -> Self {
        let mut out = Self::with_room_for(first.iter().map(|(k, v)| (k.len(), v.len())));
        for (k, v) in first {
            out.push(k, v);
        }
        out.buf.extend_from_slice(&rest.buf);
        out.count += rest.count;
        out
    }

    /// Bytes packed, headers included.
    pub fn packed_len(&self) -> usize {
        self.buf.len()
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = self.buf.as_slice();
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let name = take_str(&mut rest);
            let value = take_str(&mut rest);
            Some((name, value))
        })
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for PackedFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut fields = Self::default();
        for (k, v) in pairs {
            fields.push(k.as_ref(), v.as_ref());
        }
        fields
    }
}

/// What pairs of these name and value sizes take packed.
fn packed_size(sizes: impl IntoIterator<Item = (usize, usize)>) -> usize {
    sizes
        .into_iter()
        .map(|(k, v)| str_header_len(k) + k + str_header_len(v) + v)
        .sum()
}

/// Splits the first string off `rest`, which [`put_str`] wrote.
fn take_str<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let (head, len) = match rest[0] {
        b @ 0xa0..=0xbf => (1, usize::from(b & 0x1f)),
        0xd9 => (2, usize::from(rest[1])),
        0xda => (3, usize::from(u16::from_be_bytes([rest[1], rest[2]]))),
        _ => (
            5,
            u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize,
        ),
    };
    let (s, tail) = rest[head..].split_at(len);
    *rest = tail;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_take_the_smallest_form() {
        let mut p = ArrayPacker::default();
        for v in [0, 127, 128, 255, 256, 65_535, 65_536, 1 << 32] {
            p.uint(v);
        }
        assert_eq!(p.len(), 8);
        let mut want = vec![0xdd, 0, 0, 0, 8, 0x00, 0x7f, 0xcc, 0x80, 0xcc, 0xff];
        want.extend_from_slice(&[0xcd, 0x01, 0x00, 0xcd, 0xff, 0xff]);
        want.extend_from_slice(&[0xce, 0, 1, 0, 0]);
        want.extend_from_slice(&[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(p.finish(), want);
    }

    #[test]
    fn strings_carry_any_bytes_with_the_smallest_header() {
        let mut p = ArrayPacker::default();
        p.str(b"");
        p.str(&[0, 0xff, b'\r', b'\n']);
        p.str(&[b'x'; 32]);
        p.str(&[b'y'; 256]);
        p.str(&[b'z'; 65_536]);
        let out = p.finish();
        assert_eq!(&out[..5], &[0xdd, 0, 0, 0, 5]);
        let mut at = 5;
        let mut next = |header: &[u8], body: &[u8]| {
            assert_eq!(&out[at..at + header.len()], header);
            at += header.len();
            assert_eq!(&out[at..at + body.len()], body);
            at += body.len();
        };
        next(&[0xa0], b"");
        next(&[0xa4], &[0, 0xff, b'\r', b'\n']);
        next(&[0xd9, 32], &[b'x'; 32]);
        next(&[0xda, 0x01, 0x00], &[b'y'; 256]);
        next(&[0xdb, 0, 1, 0, 0], &[b'z'; 65_536]);
        assert_eq!(at, out.len());
    }

    #[test]
    fn packed_fields_read_back_as_written_and_append_as_their_pairs() {
        let values: [&[u8]; 4] = [b"", &[0, 0xff], &[b'v'; 300], &[b'w'; 70_000]];
        let fields: PackedFields = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("k{i}"), *v))
            .collect();
        assert_eq!(fields.len(), 4);
        let sizes = values.iter().map(|v| (2, v.len()));
        assert_eq!(fields.packed_len(), packed_size(sizes));
        let back: Vec<(&[u8], &[u8])> = fields.iter().collect();
        assert_eq!(back.len(), 4);
        for (i, (k, v)) in back.into_iter().enumerate() {
            assert_eq!(k, format!("k{i}").as_bytes());
            assert_eq!(v, values[i]);
        }
        let mut one_by_one = ArrayPacker::default();
        for (i, v) in values.iter().enumerate() {
            one_by_one.str(format!("k{i}").as_bytes());
            one_by_one.str(v);
        }
        let mut whole = ArrayPacker::default();
        whole.fields(&fields);
        assert_eq!(whole.len(), 8);
        assert_eq!(whole.finish(), one_by_one.finish());
    }

    #[test]
    fn an_empty_array_is_a_header_only() {
        let p = ArrayPacker::default();
        assert!(p.is_empty());
        assert_eq!(p.finish(), [0xdd, 0, 0, 0, 0]);
    }
}
