//! Lua scripts for the atomic, fenced steps: ack + emits, and dead-letter
//! moves. Each first checks that the entry is still pending for this
//! consumer, so a retried commit (after a lost reply) or a peer that took the
//! entry over never causes a second append.

use std::sync::LazyLock;

use redis::Script;

/// KEYS[1] = source stream, KEYS[2..] = emit targets.
/// ARGV[1] = group, ARGV[2] = consumer, ARGV[3] = entry id, then per emit:
/// target key index, field count n, n field/value pairs.
/// Returns 1 if acked (emits appended), 0 if the entry was no longer pending.
pub static ACK_WITH_EMITS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #pending == 0 then return 0 end
local i = 4
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i])]
  local n = tonumber(ARGV[i + 1])
  local args = {key, '*'}
  for j = 1, 2 * n do args[j + 2] = ARGV[i + 1 + j] end
  redis.call('XADD', unpack(args))
  i = i + 2 + 2 * n
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
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
