//! The Lua scripts behind every fenced, atomic step: ack with emits, the
//! dead-letter move, claims (which also record entries whose payload is
//! gone), consumer deletion and safe retention. Each script checks the
//! pending list before it writes, so a commit retried after a lost reply, or
//! a peer that took an entry over meanwhile, never causes a second write.
//! One more only reads: counting a range without sending it ([`COUNT_RANGE`]).
//! Their argument layouts are owned by the typed wrappers in
//! [`super::claims`], [`super::commits`], [`super::retention`] and
//! [`super::count`]; nothing else builds these calls.
//!
//! Redis's Lua passes at most about 8,000 arguments to one command, so no
//! script ever appends an entry of more than [`MAX_INLINE_FIELDS`] fields in
//! one `XADD`: wider dead-letter records carry their original fields packed
//! into one value (see [`super::dlq`]).

use std::sync::LazyLock;

use redis::Script;

use super::dlq::{FIELD_PREFIX, PACKED_FIELDS};
use crate::vocab::partition::Fence;

/// The lease check put in front of a script's fenced form: the lease key
/// comes last among the keys, the holder's token first among the
/// arguments, and both are taken off before the script proper runs, which
/// then sees the layout it documents. A token that is not the key's value
/// (another owner's, or none: the lease ran out) refuses the whole call
/// with `FENCED`, before anything is written.
const FENCE_CHECK: &str = r#"
local fence_key = table.remove(KEYS)
local fence_token = table.remove(ARGV, 1)
if redis.call('GET', fence_key) ~= fence_token then
  return redis.error_reply('FENCED the lease ' .. fence_key .. ' is not held by this token')
end
"#;

/// The error code of a call refused by [`FENCE_CHECK`].
pub const FENCED: &str = "FENCED";

/// A script in two forms: as written, and behind [`FENCE_CHECK`] for a
/// partition read under a lease.
#[derive(Debug)]
pub struct Fenceable {
    plain: Script,
    fenced: Script,
    fenced_code: String,
}

impl Fenceable {
    fn new(body: &str) -> Self {
        let fenced_code = format!("{FENCE_CHECK}{body}");
        Self {
            plain: Script::new(body),
            fenced: Script::new(&fenced_code),
            fenced_code,
        }
    }

    /// The fenced form's source, for `EVAL` where `EVALSHA`'s `NOSCRIPT`
    /// round cannot be afforded.
    pub fn fenced_code(&self) -> &str {
        &self.fenced_code
    }

    /// The form a writer under `fence` (or none) must call.
    pub fn under(&self, fence: Option<&Fence>) -> &Script {
        match fence {
            Some(_) => &self.fenced,
            None => &self.plain,
        }
    }

    /// Both forms, for loading.
    pub fn forms(&self) -> [&Script; 2] {
        [&self.plain, &self.fenced]
    }
}

/// Plain acks behind the lease check: `XACK` of every id, in slices Lua's
/// `unpack` can take.
/// KEYS[1] = stream; ARGV[1] = group, ARGV[2..] = ids. Returns the count acked.
pub static ACK: LazyLock<Fenceable> = LazyLock::new(|| {
    Fenceable::new(
        r#"
local acked = 0
for i = 2, #ARGV, 4000 do
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, math.min(i + 3999, #ARGV)))
end
return acked
"#,
    )
});

/// `XREADGROUP … STREAMS stream >` (without BLOCK: scripts cannot block)
/// behind the lease check, so that a host that lost a partition's lease
/// cannot take new entries of it into its pending list.
/// KEYS[1] = stream; ARGV[1] = group, ARGV[2] = consumer, ARGV[3] = COUNT.
/// The reply is `XREADGROUP`'s.
pub static READ_NEW: LazyLock<Fenceable> = LazyLock::new(|| {
    Fenceable::new(
        r#"
return redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
"#,
    )
});

/// Adds to `cmd` (a pipeline's `EVALSHA` just begun) the form of `script`
/// a writer under `fence` calls, with the fence's key and token put where
/// [`FENCE_CHECK`] takes them from: `sha numkeys keys… [lease]` with
/// `[token]` next, the caller's arguments after.
pub fn fenced_call<'a>(
    cmd: &'a mut redis::Pipeline,
    script: &Fenceable,
    fence: Option<&Fence>,
    keys: &[&str],
) -> &'a mut redis::Pipeline {
    let form = script.under(fence);
    cmd.arg(form.get_hash())
        .arg(keys.len() + usize::from(fence.is_some()))
        .arg(keys);
    if let Some(f) = fence {
        cmd.arg(&f.key).arg(&f.token);
    }
    cmd
}

/// Most original fields a dead-letter record carries inline (Redis's Lua
/// refuses to unpack more than about 8,000 values into one call).
pub const MAX_INLINE_FIELDS: usize = crate::vocab::limits::MAX_FIELDS_CEILING;

/// `dead_letter(dlq, maxlen, meta, id, deliveries, src, from, to, note)`:
/// appends one DLQ record. `meta` is a flat list of name/value pairs; an empty
/// `source_id` or `deliveries` value is filled in from `id` / `deliveries`,
/// and `note` (if any) is appended to `reason`. The original fields are
/// `src[from..to]` (name, value, …) or absent (`src` nil); too many for one
/// `XADD` and they are packed into one RESP2 array value.
fn dead_letter_fn() -> String {
    format!(
        r#"
local function resp_array(src, from, to)
  local parts = {{'*' .. (to - from + 1) .. '\r\n'}}
  for i = from, to do
    local s = src[i]
    parts[#parts + 1] = '$' .. #s .. '\r\n'
    parts[#parts + 1] = s
    parts[#parts + 1] = '\r\n'
  end
  return table.concat(parts)
end
local function dead_letter(dlq, maxlen, meta, id, deliveries, src, from, to, note)
  local args = {{dlq}}
  if maxlen ~= '' then
    args[#args + 1] = 'MAXLEN'; args[#args + 1] = '~'; args[#args + 1] = maxlen
  end
  args[#args + 1] = '*'
  for i = 1, #meta, 2 do
    local k, v = meta[i], meta[i + 1]
    if v == '' and k == 'source_id' then v = id end
    if v == '' and k == 'deliveries' then v = deliveries end
    if k == 'reason' and note then v = v .. note end
    args[#args + 1] = k; args[#args + 1] = v
  end
  if src and to - from + 1 > {inline} * 2 then
    args[#args + 1] = '{packed}'; args[#args + 1] = resp_array(src, from, to)
  elseif src then
    for i = from, to, 2 do
      args[#args + 1] = '{prefix}' .. src[i]; args[#args + 1] = src[i + 1]
    end
  end
  return redis.call('XADD', unpack(args))
end
"#,
        inline = MAX_INLINE_FIELDS,
        packed = PACKED_FIELDS,
        prefix = FIELD_PREFIX,
    )
}

/// Acks a batch of entries, each together with what its handler emitted.
/// KEYS[1] = source stream, KEYS[2..] = emit targets.
/// ARGV[1] = group, ARGV[2] = consumer, ARGV[3]/ARGV[4] = lowest/highest
/// entry id of the batch, ARGV[5] = rows to fetch from that range, ARGV[6] =
/// the batch as one MessagePack array (see [`crate::vocab::msgpack`]): per entry
/// its id and emit count m, then per emit the target's key index, its field
/// count n and n name/value pairs.
///
/// Returns one result per entry: 1 if acked with all its emits, 0 if it was
/// no longer pending for this consumer (nothing written), or why its emits
/// could not be appended (nothing of it written; it stays pending). Each
/// entry is all-or-nothing and independent of its neighbours: every target
/// is checked to take a stream entry before the first `XADD`, and should an
/// `XADD` fail anyway the entry's earlier emits are deleted again. The
/// successful entries are acked together at the end (one `XACK`).
/// Ownership is read for the whole batch with one ranged `XPENDING`; an
/// entry missing from that answer (the range held more of our entries than
/// were fetched) is checked on its own before it counts as no longer ours.
///
/// Each entry is walked twice over the unpacked array (check, then write)
/// instead of collecting its emits into tables first: per-entry tables were
/// a tenth of the script's cost.
pub static ACK_WITH_EMITS: LazyLock<Fenceable> = LazyLock::new(|| {
    Fenceable::new(
        r#"
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local owned = {}
for _, row in ipairs(redis.call('XPENDING', stream, group, ARGV[3], ARGV[4], ARGV[5], consumer)) do
  owned[row[1]] = true
end
local a = cmsgpack.unpack(ARGV[6])
local kinds = {}
local out, acked = {}, {}
local i, count = 1, #a
while i <= count do
  local id, m = a[i], a[i + 1]
  local first = i + 2
  local result = 1
  if not owned[id] and #redis.call('XPENDING', stream, group, id, id, 1, consumer) == 0 then
    result = 0
  end
  local j = first
  for _ = 1, m do
    local key = KEYS[a[j]]
    if result == 1 then
      local t = kinds[key]
      if t == nil then
        t = redis.call('TYPE', key)['ok']
        kinds[key] = t
      end
      if t ~= 'stream' and t ~= 'none' then
        result = 'WRONGTYPE emit target ' .. key .. ' holds a ' .. t .. ', not a stream'
      end
    end
    j = j + 2 + 2 * a[j + 1]
  end
  i = j
  if result == 1 then
    local added
    j = first
    for e = 1, m do
      local key = KEYS[a[j]]
      local last = j + 1 + 2 * a[j + 1]
      local r = redis.pcall('XADD', key, '*', unpack(a, j + 2, last))
      if type(r) == 'table' and r.err then
        if added then
          for x = 1, #added, 2 do redis.call('XDEL', added[x], added[x + 1]) end
        end
        result = 'emit to ' .. key .. ' failed: ' .. r.err
        break
      end
      kinds[key] = 'stream'
      if e < m then
        added = added or {}
        added[#added + 1] = key
        added[#added + 1] = r
      end
      j = last + 1
    end
  end
  if result == 1 then acked[#acked + 1] = id end
  out[#out + 1] = result
end
if #acked > 0 then redis.call('XACK', stream, group, unpack(acked)) end
return out
"#,
    )
});

/// Moves one entry to the dead-letter stream: DLQ `XADD` first, then `XACK`,
/// only if the entry is still pending for this consumer.
/// KEYS[1] = source stream, KEYS[2] = dead-letter stream.
/// ARGV[1] = group, ARGV[2] = consumer, ARGV[3] = entry id, ARGV[4] = where
/// the original fields come from: `inline` (the rest of ARGV), `copy` (read
/// from the source stream here, for entries the host did not keep because
/// they were over its limits) or `none` (trimmed), ARGV[5] = DLQ `MAXLEN ~`
/// ("" for none), ARGV[6] = number m of metadata pairs, ARGV[7..6+2m] = the
/// metadata, then the fields for `inline`.
/// If the `XADD` fails (e.g. OOM) the script stops before the `XACK` and the
/// entry stays pending. Returns 1 if moved, 0 if not pending for us.
pub static DEAD_LETTER: LazyLock<Fenceable> = LazyLock::new(|| {
    Fenceable::new(&format!(
        r#"{dead_letter}
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2]) == 0 then return 0 end
local m = tonumber(ARGV[6])
local meta = {{}}
for i = 7, 6 + 2 * m do meta[#meta + 1] = ARGV[i] end
local src, from, to, note = nil, 1, 0, nil
if ARGV[4] == 'inline' then
  src, from, to = ARGV, 7 + 2 * m, #ARGV
elseif ARGV[4] == 'copy' then
  local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
  if #e == 1 and type(e[1][2]) == 'table' then
    src, from, to = e[1][2], 1, #e[1][2]
  else
    note = ' (its payload was trimmed before it could be copied)'
  end
end
dead_letter(KEYS[2], ARGV[5], meta, ARGV[3], '', src, from, to, note)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
"#,
        dead_letter = dead_letter_fn()
    ))
});

/// Claims pending entries, and records those whose payload is gone.
/// KEYS[1] = stream, KEYS[2] = dead-letter stream.
/// ARGV[1] = group, ARGV[2] = the consumer they must still belong to ("" for
/// any), ARGV[3] = the idle ms they must have at least, ARGV[4] = the
/// consumer to claim them to, ARGV[5] = the idle ms to leave them with (""
/// for 0), ARGV[6] = "1" to count this claim as a delivery, ARGV[7] = DLQ
/// `MAXLEN ~` ("" for none), ARGV[8] = "1" if this call repeats one whose
/// reply was lost, ARGV[9] = number m of metadata pairs of a `trimmed`
/// record, ARGV[10..9+2m] = that metadata, then per entry its id and the
/// delivery count it must still have ("" for any).
///
/// Each id is checked against the pending list first (owner, idle time,
/// delivery count) and skipped if it no longer qualifies, so a claim never
/// takes an entry a peer has taken meanwhile, nor acts on a delivery that
/// another claim has since replaced. A repeated counting claim also takes an
/// entry that is already the target's with exactly one delivery more than
/// expected, without counting another: the lost call took it, and skipping
/// it would leave a delivery counted that nobody handles. `XCLAIM … JUSTID RETRYCOUNT` sets the delivery count
/// explicitly (persisted, unlike a re-read of the pending list). An `XCLAIM`
/// of an entry whose payload was trimmed drops it from the pending list and
/// returns nothing: such an entry gets its `trimmed` record right here, in
/// the same atomic step, so it can neither vanish nor be recorded twice.
/// Returns `{{id, deliveries, …}, {trimmed id, …}}`.
pub static CLAIM: LazyLock<Fenceable> = LazyLock::new(|| {
    Fenceable::new(&format!(
        r#"{dead_letter}
local m = tonumber(ARGV[9])
local meta = {{}}
for i = 10, 9 + 2 * m do meta[#meta + 1] = ARGV[i] end
local min_idle = tonumber(ARGV[3])
local counting, repeated = ARGV[6] == '1', ARGV[8] == '1'
local claimed, trimmed = {{}}, {{}}
for i = 10 + 2 * m, #ARGV, 2 do
  local id, expected = ARGV[i], tonumber(ARGV[i + 1])
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)[1]
  local count = nil
  if row and (ARGV[2] == '' or row[2] == ARGV[2]) and row[3] >= min_idle
      and (expected == nil or row[4] == expected) then
    count = row[4]
    if counting then count = count + 1 end
  elseif row and repeated and counting and expected ~= nil
      and row[2] == ARGV[4] and row[4] == expected + 1 then
    count = row[4]
  end
  if count then
    local args = {{KEYS[1], ARGV[1], ARGV[4], 0, id, 'RETRYCOUNT', count, 'JUSTID'}}
    if ARGV[5] ~= '' then
      args[#args + 1] = 'IDLE'; args[#args + 1] = ARGV[5]
    end
    if #redis.call('XCLAIM', unpack(args)) == 1 then
      claimed[#claimed + 1] = id; claimed[#claimed + 1] = count
    else
      dead_letter(KEYS[2], ARGV[7], meta, id, tostring(row[4]), nil, 1, 0, nil)
      trimmed[#trimmed + 1] = id
    end
  end
end
return {{claimed, trimmed}}
"#,
        dead_letter = dead_letter_fn()
    ))
});

/// KEYS[1] = stream. ARGV[1] = group, ARGV[2] = consumer.
/// Deletes the consumer only if it has no pending entries (XGROUP DELCONSUMER
/// would silently drop them). Returns 1 if deleted, 0 if it still owns entries.
pub static DELETE_CONSUMER_IF_EMPTY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// Applies retention without ever removing an entry that a group of the
/// stream has not yet delivered or still has pending, and with bounded work
/// per call.
/// KEYS[1] = stream. ARGV[1] = maxlen N ("" for none), ARGV[2] = age cutoff
/// id ("" for none), ARGV[3] = most entries to read in this call, ARGV[4] =
/// where a scan for the N-th newest entry resumes ("" to start at the end),
/// ARGV[5] = entries that scan has counted so far, ARGV[6] = a hint: an id
/// known to have at least N entries from it on ("" if none).
///
/// The floor is, over all groups, the oldest pending id or else the first
/// entry after `last-delivered-id`. For `MAXLEN` the trim target is the
/// older of the floor and the N-th newest entry: `MAXLEN ~ N` when at most N
/// entries are at or after the floor (one bounded read from the floor
/// tells, which covers the usual recent floor), else `MINID ~` of whichever
/// is older — found with the hint, or by counting back from the end a
/// bounded page per call (`scanning`: call again with the returned cursor
/// and count). `MINID` trims (the age cutoff, too) never pass the floor.
/// `ARGV[7]` `=` trims exactly instead (an operator's one-off trim of a
/// small stream, where whole nodes would remove nothing).
/// Returns {trimmed, holder group or "", floor or "", "done" | "scanning",
/// cursor, counted, hint} where a holder is named when it kept the policy
/// from being met.
pub static TRIM_SAFELY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local key = KEYS[1]
local function lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local mode = ARGV[7] == '=' and '=' or '~'
local floor, holder = nil, ''
for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local need = nil
  if f['pending'] > 0 then
    need = redis.call('XPENDING', key, f['name'])[2]
  else
    local nxt = redis.call('XRANGE', key, '(' .. f['last-delivered-id'], '+', 'COUNT', 1)
    if #nxt > 0 then need = nxt[1][1] end
  end
  if need and (floor == nil or lt(need, floor)) then floor, holder = need, f['name'] end
end
local trimmed, held = 0, false
local state, cursor, counted, hint = 'done', '', 0, ARGV[6]
local function to_floor()
  held = true
  trimmed = trimmed + redis.call('XTRIM', key, 'MINID', mode, floor)
end
if ARGV[1] ~= '' then
  local n, budget = tonumber(ARGV[1]), tonumber(ARGV[3])
  if redis.call('XLEN', key) > n then
    if floor == nil then
      trimmed = trimmed + redis.call('XTRIM', key, 'MAXLEN', mode, n)
    elseif hint ~= '' and lt(floor, hint) then
      to_floor()
    else
      local k = math.min(n, budget)
      local page = redis.call('XRANGE', key, floor, '+', 'COUNT', k + 1)
      if #page <= k then
        trimmed = trimmed + redis.call('XTRIM', key, 'MAXLEN', mode, n)
      elseif n <= budget then
        to_floor()
      else
        counted = tonumber(ARGV[5])
        local from = ARGV[4] ~= '' and ARGV[4] or '+'
        local want = math.min(budget, n - counted)
        local back = redis.call('XREVRANGE', key, from, '-', 'COUNT', want)
        counted = counted + #back
        if #back > 0 and counted >= n then
          hint = back[#back][1]
          if lt(floor, hint) then
            to_floor()
          else
            trimmed = trimmed + redis.call('XTRIM', key, 'MINID', mode, hint)
          end
        elseif #back == want then
          state, cursor = 'scanning', '(' .. back[#back][1]
        end
      end
    end
  end
end
if ARGV[2] ~= '' then
  local target = ARGV[2]
  if floor and lt(floor, target) then
    target, held = floor, true
  end
  trimmed = trimmed + redis.call('XTRIM', key, 'MINID', mode, target)
end
if not held then holder = '' end
return {trimmed, holder, floor or '', state, cursor, counted, hint}
"#,
    )
});

/// Puts one dead letter back: reads the record, rebuilds the original entry
/// from its `field:` fields byte for byte, appends it to the target stream
/// and deletes the record, in one atomic step — so a redrive stopped at any
/// point has moved each record exactly once or not at all.
/// KEYS[1] = dead-letter stream, KEYS[2] = target stream. ARGV[1] = record id.
/// Returns `{1, new id}` when moved, `{0, ""}` when the record is gone
/// (moved or purged meanwhile), `{2, ""}` when its fields are packed (too
/// wide for one scripted `XADD`: see [`super::redrive`]), `{3, ""}` when it
/// carries no fields (a `trimmed` record), `{4, type}` when the target holds
/// something other than a stream. Nothing is written unless it returns 1.
pub static REDRIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"
local rec = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #rec == 0 then return {{0, ''}} end
local f = rec[1][2]
local args = {{KEYS[2], '*'}}
local plen = #'{prefix}'
for i = 1, #f, 2 do
  if f[i] == '{packed}' then return {{2, ''}} end
  if string.sub(f[i], 1, plen) == '{prefix}' then
    args[#args + 1] = string.sub(f[i], plen + 1); args[#args + 1] = f[i + 1]
  end
end
if #args == 2 then return {{3, ''}} end
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'stream' and t ~= 'none' then return {{4, t}} end
local id = redis.call('XADD', unpack(args))
redis.call('XDEL', KEYS[1], ARGV[1])
return {{1, id}}
"#,
        prefix = FIELD_PREFIX,
        packed = PACKED_FIELDS,
    ))
});

/// Counts the entries of a range without sending them: walks it with
/// `XRANGE` (or `XREVRANGE`) in pages of a few entries, keeping only the
/// count and the last id, so neither the reply nor Lua's heap ever holds
/// more than one small page however large the range or its entries are.
/// Flagged `no-writes`: it runs on a replica and while Redis is out of memory.
/// KEYS[1] = stream. ARGV[1] = where the walk starts, ARGV[2] = where it
/// ends (`XRANGE` syntax: an id, `(id` exclusive, `-` or `+`; from the end
/// backwards, ARGV[1] is the newer bound), ARGV[3] = `rev` to walk from the
/// newest end back, ARGV[4] = most entries to count in this call (at least
/// 1), ARGV[5] = entries per page.
/// Returns `{counted, last id or "", "done" | "more"}`: `more` when the
/// budget ran out and at least one entry follows the last one counted (a
/// peek of one id); a walk goes on from `(last`, with the other bound as it was.
pub static COUNT_RANGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"#!lua flags=no-writes
local key, from, to = KEYS[1], ARGV[1], ARGV[2]
local rev = ARGV[3] == 'rev'
local budget, page = tonumber(ARGV[4]), tonumber(ARGV[5])
local top = '18446744073709551615-18446744073709551615'
local function read(n)
  if rev then return redis.call('XREVRANGE', key, from, to, 'COUNT', n) end
  return redis.call('XRANGE', key, from, to, 'COUNT', n)
end
local counted, last = 0, ''
while counted < budget do
  local want = math.min(page, budget - counted)
  local rows = read(want)
  local n = #rows
  if n > 0 then
    counted = counted + n
    last = rows[n][1]
  end
  -- No id follows the largest one: an exclusive bound past it is an error.
  if n < want or (not rev and last == top) then return {counted, last, 'done'} end
  from = '(' .. last
end
if #read(1) == 0 then return {counted, last, 'done'} end
return {counted, last, 'more'}
"#,
    )
});

/// The first consumers of a group (`XINFO CONSUMERS`, in name order), at
/// most a given number: a group with a hostile number of consumers costs the
/// caller no more than that many rows.
/// KEYS[1] = stream. ARGV[1] = group, ARGV[2] = most rows returned.
/// Returns the rows as `XINFO CONSUMERS` gives them (flat name/value lists).
pub static FIRST_CONSUMERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"#!lua flags=no-writes
local rows = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
local out = {}
for i = 1, math.min(#rows, tonumber(ARGV[2])) do out[i] = rows[i] end
return out
"#,
    )
});

/// Runs inside the `MULTI` of a packed record's redrive (see
/// [`super::redrive`]), just before the `XADD` of its fields onto the
/// target: deletes the record exactly when that `XADD` will succeed, so a
/// target that is not a stream keeps both the record and the key as they
/// were. Sent with `EVAL` (never `EVALSHA`, which could fail inside the
/// transaction for a script Redis does not know yet).
/// KEYS[1] = dead-letter stream, KEYS[2] = target. ARGV[1] = record id.
/// Returns `{1, records deleted}`, or `{4, type}` (nothing deleted) when
/// the target holds something other than a stream.
pub const REDRIVE_GUARD: &str = r#"
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'stream' and t ~= 'none' then return {4, t} end
return {1, redis.call('XDEL', KEYS[1], ARGV[1])}
"#;
