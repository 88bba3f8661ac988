//! Emits to another cluster slot, effectively once: the commit appends
//! them to the partition's outbox (same slot, in the same script as the
//! ack); the forwarder appends each to its target with [`FORWARD`], which
//! checks its idempotence key in a sorted set in the *target's* slot
//! ([`crate::vocab::partition::dedup_key`]) and skips one already appended
//! within the window — so an outbox entry forwarded twice (a forwarder that
//! died before deleting it, a commit redone after a failover lost it) lands
//! once. Redis 8.6's `XADD … IDMP` is the same check built in; this is the
//! backend for servers without it.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Script};

use super::inspect::{self, RawEntry};

/// The outbox entry's field naming its target stream.
pub const TARGET: &str = "streamhost:target";
/// The outbox entry's field holding the emit's idempotence key.
pub const IDEM: &str = "streamhost:idem";

/// KEYS[1] = target, KEYS[2] = its dedup set; ARGV[1] = idempotence key,
/// ARGV[2] = window in ms, ARGV[3..] = the fields. Appends unless the key
/// was seen within the window: 1 appended, 0 already there.
static FORWARD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], window * 2)
return 1
"#,
    )
});

/// One outbox entry, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parcel {
    /// Its id in the outbox.
    pub id: String,
    /// Where it goes.
    pub target: String,
    /// Its idempotence key.
    pub idem: String,
    /// The emitted fields, in order.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Parcel {
    /// Reads an outbox entry; `Err` with the entry's id for one without
    /// its headers (written by something else).
    pub fn of(entry: RawEntry) -> Result<Self, String> {
        let (id, mut fields) = entry;
        let header = |fields: &[(Vec<u8>, Vec<u8>)], i: usize, name: &str| {
            fields
                .get(i)
                .filter(|(k, _)| k == name.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        match (header(&fields, 0, TARGET), header(&fields, 1, IDEM)) {
            (Some(target), Some(idem)) => {
                fields.drain(..2);
                Ok(Self {
                    id,
                    target,
                    idem,
                    fields,
                })
            }
            _ => Err(id),
        }
    }
}

/// The oldest `count` entries of the outbox.
pub async fn oldest(
    con: &mut MultiplexedConnection,
    outbox: &str,
    count: usize,
) -> RedisResult<Vec<RawEntry>> {
    inspect::range(con, outbox, "-", "+", count).await
}

/// Waits up to `block` for an outbox entry after `after` (`XREAD BLOCK`):
/// whether one came.
pub async fn wait_after(
    con: &mut MultiplexedConnection,
    outbox: &str,
    after: &str,
    block: Duration,
) -> RedisResult<bool> {
    let reply: redis::Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(block.as_millis().max(1) as u64)
        .arg("STREAMS")
        .arg(outbox)
        .arg(after)
        .query_async(con)
        .await?;
    Ok(!matches!(reply, redis::Value::Nil))
}

/// Appends `parcel` to its target unless its key was seen within `window`:
/// `true` if appended now.
///
/// `EVALSHA <forward> 2 target dedup idem window fields…`
pub async fn forward(
    con: &mut MultiplexedConnection,
    parcel: &Parcel,
    dedup: &str,
    window: Duration,
) -> RedisResult<bool> {
    let mut call = FORWARD.key(&parcel.target);
    call.key(dedup)
        .arg(&parcel.idem)
        .arg(window.as_millis() as u64);
    for (k, v) in &parcel.fields {
        call.arg(k).arg(v);
    }
    let appended: u8 = call.invoke_async(con).await?;
    Ok(appended == 1)
}

/// Deletes forwarded entries from the outbox.
///
/// `XDEL outbox id…`
pub async fn remove(
    con: &mut MultiplexedConnection,
    outbox: &str,
    ids: &[String],
) -> RedisResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let _: u64 = redis::cmd("XDEL")
        .arg(outbox)
        .arg(ids)
        .query_async(con)
        .await?;
    Ok(())
}
