//! Lua scripts for the atomic, fenced steps: ack + emits (batched), and
//! dead-letter moves. Each first checks that the entry is still pending for this
//! consumer, so a retried commit (after a lost reply) or a peer that took the
//! entry over never causes a second append.

use std::sync::LazyLock;

use redis::Script;

/// Acks a batch of entries together with what their handlers emitted.
/// KEYS[1] = source stream, KEYS[2..] = emit targets.
/// ARGV[1] = group, ARGV[2] = consumer, ARGV[3]/ARGV[4] = lowest/highest
/// entry id of the batch, ARGV[5] = rows to fetch from that range, then per
/// entry: id, emit count m, then per emit: target key index, field count n,
/// n field/value pairs.
/// Returns one result per entry: 1 if acked (its emits appended), 0 if it
/// was no longer pending for this consumer (nothing written), or the error
/// of the XADD that failed (the entry is then left pending, unacked).
/// The successful entries are acked together at the end (one XACK): XADD
/// errors are caught per entry (pcall), so nothing between an entry's emits
/// and that XACK can abort the script, and a script's writes reach replicas
/// and the AOF as one transaction. An entry whose XADD fails is left
/// unacked for redelivery; emits it made before the failing one stay, as
/// they would with a script per entry. Ownership is
/// read for the whole batch with one ranged XPENDING (a per-entry XPENDING
/// was a third of Redis's time per emitting entry); an entry missing from
/// that answer (the range held more of our entries than were fetched) is
/// checked on its own before it counts as no longer ours.
pub static ACK_WITH_EMITS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local owned = {}
for _, row in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[2])) do
  owned[row[1]] = true
end
local out = {}
local acked = {}
local i = 6
while i <= #ARGV do
  local id = ARGV[i]
  local m = tonumber(ARGV[i + 1])
  i = i + 2
  local failed = false
  if not owned[id] and #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2]) == 0 then
    failed = 0
  end
  for _ = 1, m do
    local n = tonumber(ARGV[i + 1])
    if not failed then
      local args = {KEYS[tonumber(ARGV[i])], '*'}
      for j = 1, 2 * n do args[j + 2] = ARGV[i + 1 + j] end
      local r = redis.pcall('XADD', unpack(args))
      if type(r) == 'table' and r.err then failed = r.err end
    end
    i = i + 2 + 2 * n
  end
  if failed then
    out[#out + 1] = failed
  else
    acked[#acked + 1] = id
    out[#out + 1] = 1
  end
end
if #acked > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(acked)) end
return out
"#,
    )
});

/// KEYS[1] = source stream, KEYS[2] = dead-letter stream.
/// ARGV[1] = group, ARGV[2] = consumer, ARGV[3] = entry id,
/// ARGV[4] = "1" to require the entry to be pending for this consumer
/// ("0" for entries Redis already dropped from the PEL because they were
/// trimmed), ARGV[5..] = the DLQ record's field/value pairs.
/// The XADD comes first: if it fails (e.g. OOM) the script aborts before the
/// XACK and the entry stays pending. Returns 1 if moved, 0 if not pending.
pub static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if ARGV[4] == '1' then
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
  if #pending == 0 then return 0 end
end
local args = {KEYS[2], '*'}
for j = 5, #ARGV do args[j - 2] = ARGV[j] end
redis.call('XADD', unpack(args))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
"#,
    )
});

/// KEYS[1] = stream. ARGV[1] = group, ARGV[2] = owner, ARGV[3] = target
/// consumer, ARGV[4] = idle ms to set ("" to leave it at zero), ARGV[5..] = ids.
/// Re-claims (`XCLAIM … JUSTID`, which does not count a delivery) those ids
/// still pending for `owner` — renewing them (keep-alive), releasing them to
/// any reaper (idle set to claim-idle), or handing them to a peer — and never
/// touches an id a peer has taken meanwhile. Returns how many were claimed.
pub static CLAIM_OWNED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local owned = {}
for i = 5, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p > 0 then owned[#owned + 1] = ARGV[i] end
end
if #owned == 0 then return 0 end
local args = {KEYS[1], ARGV[1], ARGV[3], 0}
for _, id in ipairs(owned) do args[#args + 1] = id end
if ARGV[4] ~= '' then
  args[#args + 1] = 'IDLE'
  args[#args + 1] = ARGV[4]
end
args[#args + 1] = 'JUSTID'
redis.call('XCLAIM', unpack(args))
return #owned
"#,
    )
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

/// KEYS[1] = stream. ARGV[1] = maxlen ("" for none), ARGV[2] = age cutoff id
/// ("" for none). Applies retention without ever removing an entry that a
/// group of the stream has not yet delivered or still has pending: the floor
/// is, over all groups, the oldest pending id or else the first entry after
/// `last-delivered-id`. `MAXLEN ~ n` is used only when every needed entry is
/// among the newest n (checked here, atomically with the trim); otherwise the
/// trim stops at the floor. Returns {trimmed, holder group or "", floor or ""}
/// where a holder is named when it kept the policy from being met.
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
local floor, holder, max_lag = nil, '', 0
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
  if type(f['lag']) == 'number' then
    if f['lag'] > max_lag then max_lag = f['lag'] end
  else
    max_lag = math.huge
  end
  if need and (floor == nil or lt(need, floor)) then floor, holder = need, f['name'] end
end
local trimmed, held = 0, false
if ARGV[1] ~= '' then
  local n = tonumber(ARGV[1])
  if redis.call('XLEN', key) > n then
    local safe = floor == nil
    if not safe and max_lag <= n then
      local count, start = 0, floor
      while count <= n do
        local page = redis.call('XRANGE', key, start, '+', 'COUNT', math.min(1000, n + 1 - count))
        if #page == 0 then break end
        count = count + #page
        start = '(' .. page[#page][1]
      end
      safe = count <= n
    end
    if safe then
      trimmed = trimmed + redis.call('XTRIM', key, 'MAXLEN', '~', n)
    else
      held = true
      trimmed = trimmed + redis.call('XTRIM', key, 'MINID', '~', floor)
    end
  end
end
if ARGV[2] ~= '' then
  local target = ARGV[2]
  if floor and lt(floor, target) then
    target, held = floor, true
  end
  trimmed = trimmed + redis.call('XTRIM', key, 'MINID', '~', target)
end
if not held then holder = '' end
return {trimmed, holder, floor or ''}
"#,
    )
});
