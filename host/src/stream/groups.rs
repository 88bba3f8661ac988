//! Consumer groups: create, destroy and move them (operators, and the
//! reader's first creation), and put back a group that vanished under a
//! running host ([`restore`]).

use std::sync::LazyLock;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Script};

use super::commands::GroupRef;

/// `XGROUP CREATE stream group start [MKSTREAM]` — `false` if the group
/// already exists (BUSYGROUP).
pub async fn create(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    start: &str,
    mkstream: bool,
) -> RedisResult<bool> {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE").arg(stream).arg(group).arg(start);
    if mkstream {
        cmd.arg("MKSTREAM");
    }
    match cmd.query_async::<()>(con).await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(e),
    }
}

/// `XGROUP DESTROY stream group` — `true` if it existed.
pub async fn destroy(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> RedisResult<bool> {
    let n: u64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    Ok(n > 0)
}

/// `XGROUP SETID stream group id`.
pub async fn set_id(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    id: &str,
) -> RedisResult<()> {
    redis::cmd("XGROUP")
        .arg("SETID")
        .arg(stream)
        .arg(group)
        .arg(id)
        .query_async(con)
        .await
}

/// An entry a pipeline holds (queued, being handled, or waiting out a retry
/// backoff), whose pending row [`restore`] gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEntry {
    /// The consumer that holds it.
    pub consumer: String,
    /// Entry id.
    pub id: String,
    /// The delivery it is at.
    pub deliveries: u32,
}

/// How [`restore`] found the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regroup {
    /// It was gone: created at the position asked for.
    Created,
    /// The stream key itself was gone (and every entry with it): created
    /// with the stream, at the fresh-start position.
    Fresh,
    /// Someone had recreated it behind the position (at `from`): moved forward.
    Raised {
        /// Where it was.
        from: String,
    },
    /// Someone had recreated it at or past the position (`at`): left there.
    Kept {
        /// Where it is.
        at: String,
    },
    /// Someone had recreated it behind the position (at `at`), and Redis
    /// refused to move it (`why`: say the user may not `XGROUP SETID`).
    Behind {
        /// Where it is.
        at: String,
        /// Redis's refusal.
        why: String,
    },
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// How the group was found.
    pub how: Regroup,
    /// Held entries given their pending row back.
    pub rows: u64,
}

/// Puts back a group that vanished (`XGROUP DESTROY`, or the stream key
/// deleted) where it had got to, in one atomic step, so that neither a
/// read nor a commit sees it half done. KEYS[1] = stream; ARGV[1] = group,
/// ARGV[2] = the position (an id; anything else is only used to create),
/// ARGV[3] = this consumer, ARGV[4] = where to start if the stream key is
/// gone, then per held entry its id, consumer and delivery.
///
/// If the stream key is gone, nothing it held can be delivered again: the
/// group is created with the stream at the fresh-start position (`TYPE`,
/// then `XGROUP CREATE … MKSTREAM`). Otherwise it creates the group at the
/// position; if it exists already (a
/// peer recreated it first) and is behind the position, moves it forward
/// (`SETID`; a refusal of it is reported, not fatal), never back.
/// Registers the consumer. Then every held entry with
/// no pending row (it vanished with the group) gets one again, owned by its
/// consumer at its delivery (`XCLAIM … 0 id RETRYCOUNT n FORCE JUSTID`;
/// an entry whose payload is gone is skipped by Redis), so its ack, emits or
/// dead-letter move, all fenced on that row, still commit. An entry already
/// pending for someone is left alone. Returns `{how, where it was, rows,
/// why SETID was refused}`.
static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local stream, group, at, me, fresh = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then return false end
  if am ~= bm then
    if #am ~= #bm then return #am < #bm end
    return am < bm
  end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local how, seen, why = 'created', '', ''
if redis.call('TYPE', stream)['ok'] == 'none' then
  how, at = 'fresh', fresh
end
local made = redis.pcall('XGROUP', 'CREATE', stream, group, at, 'MKSTREAM')
if type(made) == 'table' and made.err then
  if string.sub(made.err, 1, 9) ~= 'BUSYGROUP' then return redis.error_reply(made.err) end
  how = 'kept'
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then seen = last end
  end
  if older(seen, at) then
    local moved = redis.pcall('XGROUP', 'SETID', stream, group, at)
    if type(moved) == 'table' and moved.err then
      how, why = 'behind', moved.err
    else
      how = 'raised'
    end
  end
end
redis.call('XGROUP', 'CREATECONSUMER', stream, group, me)
local rows = 0
for i = 5, #ARGV, 3 do
  local id = ARGV[i]
  if #redis.call('XPENDING', stream, group, id, id, 1) == 0 then
    rows = rows + #redis.call('XCLAIM', stream, group, ARGV[i + 1], 0, id,
      'RETRYCOUNT', ARGV[i + 2], 'FORCE', 'JUSTID')
  end
end
return {how, seen, rows, why}
"#,
    )
});

/// Runs [`RESTORE`] for `g` at position `at` (`fresh` if the stream key
/// is gone) with the entries `held` here.
///
/// `EVALSHA <restore> 1 stream group at consumer fresh (id consumer deliveries)…`
pub async fn restore(
    con: &mut MultiplexedConnection,
    g: &GroupRef,
    at: &str,
    fresh: &str,
    held: &[HeldEntry],
) -> RedisResult<Restored> {
    let mut call = RESTORE.key(&g.stream);
    call.arg(&g.group).arg(at).arg(&g.consumer).arg(fresh);
    for h in held {
        call.arg(&h.id).arg(&h.consumer).arg(h.deliveries);
    }
    let (how, seen, rows, why): (String, String, u64, String) = call.invoke_async(con).await?;
    let how = match how.as_str() {
        "created" => Regroup::Created,
        "fresh" => Regroup::Fresh,
        "raised" => Regroup::Raised { from: seen },
        "kept" => Regroup::Kept { at: seen },
        "behind" => Regroup::Behind { at: seen, why },
        other => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "unexpected reply",
                format!("restoring a group: {other:?}"),
            )));
        }
    };
    Ok(Restored { how, rows })
}
