//! Reading a dead-letter stream without its payloads: pages of record
//! headers (the metadata, whether original fields are there, and whether
//! packed ones can be read back) and the count of records by kind. Both
//! run as scripts over small pages inside Redis and answer without the
//! original fields, so neither the caller nor Redis holds more than one
//! page of records, however long the DLQ and however wide its records.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Script};

#[cfg(doc)]
use super::dlq::Undecodable;
use super::dlq::{FIELD_PREFIX, META_FIELDS, PACKED_FIELDS};

/// Records read per [`headers`] call by callers that walk a DLQ.
pub const HEADER_PAGE: usize = 100;
/// Records read per [`DLQ_TALLY`] call: what Redis holds at once while
/// counting.
pub const TALLY_PAGE: usize = 100;
/// Most bytes of a record's `reason` a header carries.
pub const REASON_CAP: usize = 16 * 1024;
/// Most bytes of any other metadata value a header carries.
pub const META_CAP: usize = 1024;
/// The kind every record of an unnamed kind is counted under.
pub const OTHER_KIND: &str = "other";

/// `packed_problem(value)`: why a `packed_fields` value is not a flat RESP2
/// array of bulk strings in name/value pairs, worded as
/// [`Undecodable`] words it; `false` when it is one.
const PACKED_PROBLEM: &str = r#"
local function packed_problem(s)
  local n, pos = string.match(s, '^%*(%d+)\r\n()')
  if not n or #n > 18 then return 'no RESP array header' end
  n = tonumber(n)
  if n % 2 == 1 then return 'an odd number of values (' .. string.format('%d', n) .. ')' end
  for i = 1, n do
    local len, at = string.match(s, '^%$(%d+)\r\n()', pos)
    if not len or #len > 18 then return 'value ' .. i .. ' has no bulk-string header' end
    pos = at + tonumber(len)
    if string.sub(s, pos, pos + 1) ~= '\r\n' then return 'value ' .. i .. ' is cut short' end
    pos = pos + 2
  end
  if pos <= #s then return (#s - pos + 1) .. ' bytes after the last value' end
  return false
end
"#;

/// One page of dead-letter records without their original fields: what a
/// listing, a selection or `status` needs, at a cost to the caller that
/// does not depend on how large the records are.
/// KEYS[1] = dead-letter stream. ARGV[1] = `fwd` (oldest first) or `rev`,
/// ARGV[2] / ARGV[3] = lowest / highest id (`-`, `+`, or `(id` to leave it
/// out), ARGV[4] = most records, ARGV[5] = `1` to check packed values,
/// ARGV[6] = most bytes of `reason`, ARGV[7] = most bytes of any other
/// metadata value (a longer value is cut there and ends in `…`).
/// Returns per record `{id, {name, value, …}, inline fields, packed (0|1),
/// problem}`: the metadata fields of [`META_FIELDS`] it has
/// (the first of each name), how many `field:` fields it has, whether it
/// has `packed_fields`, and why those cannot be read back ("" when they can
/// or were not checked).
pub static DLQ_HEADERS: LazyLock<Script> = LazyLock::new(|| {
    let wanted: Vec<String> = META_FIELDS
        .iter()
        .map(|name| format!("['{name}'] = true"))
        .collect();
    Script::new(&format!(
        r#"{packed_problem}
local rows
if ARGV[1] == 'rev' then
  rows = redis.call('XREVRANGE', KEYS[1], ARGV[3], ARGV[2], 'COUNT', ARGV[4])
else
  rows = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[3], 'COUNT', ARGV[4])
end
local check = ARGV[5] == '1'
local reason_cap, meta_cap = tonumber(ARGV[6]), tonumber(ARGV[7])
local wanted = {{{wanted}}}
local plen = #'{prefix}'
local out = {{}}
for _, r in ipairs(rows) do
  local f = r[2]
  local meta, seen = {{}}, {{}}
  local inline, packed, problem = 0, 0, ''
  for i = 1, #f, 2 do
    local k = f[i]
    if k == '{packed}' then
      packed = 1
      if check then problem = packed_problem(f[i + 1]) or '' end
    elseif string.sub(k, 1, plen) == '{prefix}' then
      inline = inline + 1
    elseif wanted[k] and not seen[k] then
      seen[k] = true
      local v, cap = f[i + 1], meta_cap
      if k == 'reason' then cap = reason_cap end
      if #v > cap then v = string.sub(v, 1, cap) .. '…' end
      meta[#meta + 1] = k; meta[#meta + 1] = v
    end
  end
  out[#out + 1] = {{r[1], meta, inline, packed, problem}}
end
return out
"#,
        packed_problem = PACKED_PROBLEM,
        wanted = wanted.join(", "),
        prefix = FIELD_PREFIX,
        packed = PACKED_FIELDS,
    ))
});

/// Counts dead-letter records by kind, newest first, one page per call,
/// returning only the counts.
/// KEYS[1] = dead-letter stream. ARGV[1] = where the previous call stopped
/// ("" to start at the newest record), ARGV[2] = most records to read,
/// ARGV[3..] = the kinds counted by name.
/// Returns `{cursor, records read, {count per named kind…, count of any
/// other kind}}`; the cursor is "" once the oldest record was read.
pub static DLQ_TALLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local from = ARGV[1] ~= '' and ARGV[1] or '+'
local page = tonumber(ARGV[2])
local rows = redis.call('XREVRANGE', KEYS[1], from, '-', 'COUNT', page)
local index, counts = {}, {}
for i = 3, #ARGV do index[ARGV[i]] = i - 2 end
for i = 1, #ARGV - 1 do counts[i] = 0 end
for _, r in ipairs(rows) do
  local f, kind = r[2], nil
  for i = 1, #f, 2 do
    if f[i] == 'kind' then kind = f[i + 1]; break end
  end
  local at = (kind and index[kind]) or (#ARGV - 1)
  counts[at] = counts[at] + 1
end
local cursor = ''
if #rows == page and #rows > 0 then cursor = '(' .. rows[#rows][1] end
return {cursor, #rows, counts}
"#,
    )
});

/// Which end a page starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (`XRANGE`).
    OldestFirst,
    /// Newest first (`XREVRANGE`).
    NewestFirst,
}

/// A dead-letter record without its original fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Record id.
    pub id: String,
    /// The metadata fields it has (see [`META_FIELDS`]), values cut at
    /// [`REASON_CAP`] / [`META_CAP`] bytes.
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// How many original fields it carries inline.
    pub inline_fields: u64,
    /// Whether its original fields are packed into one value.
    pub packed: bool,
    /// Why the packed fields cannot be read back, when checked and so.
    pub undecodable: Option<String>,
}

impl RecordHeader {
    /// Whether it carries original fields at all (a `trimmed` record does not).
    pub fn has_fields(&self) -> bool {
        self.packed || self.inline_fields > 0
    }
}

/// Up to `count` record headers of `dlq` between `low` and `high` (ids,
/// `-`/`+`, or `(id` to leave that id out) in `order`; with
/// `check_packed`, packed fields are checked to be readable.
///
/// `EVALSHA <dlq_headers> 1 dlq fwd|rev low high count 0|1 reason_cap meta_cap`.
pub async fn headers(
    con: &mut MultiplexedConnection,
    dlq: &str,
    order: Order,
    (low, high): (&str, &str),
    count: usize,
    check_packed: bool,
) -> RedisResult<Vec<RecordHeader>> {
    type Row = (String, Vec<Vec<u8>>, u64, u8, String);
    let rows: Vec<Row> = DLQ_HEADERS
        .key(dlq)
        .arg(match order {
            Order::OldestFirst => "fwd",
            Order::NewestFirst => "rev",
        })
        .arg(low)
        .arg(high)
        .arg(count)
        .arg(if check_packed { "1" } else { "0" })
        .arg(REASON_CAP)
        .arg(META_CAP)
        .invoke_async(con)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, flat, inline_fields, packed, problem)| {
            let mut it = flat.into_iter();
            let mut meta = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                meta.push((k, v));
            }
            RecordHeader {
                id,
                meta,
                inline_fields,
                packed: packed == 1,
                undecodable: (!problem.is_empty()).then_some(problem),
            }
        })
        .collect())
}

/// Records of `dlq` by kind, counted newest first over at most `cap`
/// records: the named `kinds`, and any other under [`OTHER_KIND`] (kinds
/// never seen are left out). Also returns how many records were counted.
///
/// `EVALSHA <dlq_tally> 1 dlq cursor page kind…`, a page at a time.
pub async fn count_kinds(
    con: &mut MultiplexedConnection,
    dlq: &str,
    kinds: &[&str],
    cap: u64,
) -> RedisResult<(BTreeMap<String, u64>, u64)> {
    let mut totals = vec![0u64; kinds.len() + 1];
    let (mut cursor, mut scanned) = (String::new(), 0u64);
    while scanned < cap {
        let page = (cap - scanned).min(TALLY_PAGE as u64);
        let (next, read, counts): (String, u64, Vec<u64>) = DLQ_TALLY
            .key(dlq)
            .arg(&cursor)
            .arg(page)
            .arg(kinds)
            .invoke_async(con)
            .await?;
        scanned += read;
        for (total, n) in totals.iter_mut().zip(counts) {
            *total += n;
        }
        if next.is_empty() {
            break;
        }
        cursor = next;
    }
    let names = kinds.iter().copied().chain([OTHER_KIND]);
    let by_kind = names
        .zip(totals)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
    Ok((by_kind, scanned))
}
