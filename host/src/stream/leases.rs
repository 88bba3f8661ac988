//! Partition leases and the membership they are spread over, as Redis
//! keys: a lease is a string holding its owner's token with a TTL, taken
//! with `SET NX PX`, renewed and released only by the token that holds it;
//! the members of a lease group are a sorted set scored by when each
//! host's membership runs out, by the server's clock (hosts' clocks may
//! disagree; Redis's is the one every host reads).

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Script};

/// KEYS[1] = members; ARGV[1] = this host, ARGV[2] = its membership's TTL
/// in ms, ARGV[3] = `join` (or renew) | `leave`. Drops expired members and
/// returns the live ones (this host included when it joined).
static MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#,
    )
});

/// KEYS[1] = lease; ARGV[1] = token, ARGV[2] = TTL in ms. Extends the lease
/// only while the token holds it: 1, else 0 (taken by another, or run out).
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS[1] = lease; ARGV[1] = token. Deletes the lease only while the
/// token holds it: 1, else 0.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#,
    )
});

/// Renews this host's membership (or ends it: `leave`) and returns the live
/// members.
///
/// `EVALSHA <members> 1 members me ttl join|leave`
pub async fn members(
    con: &mut MultiplexedConnection,
    key: &str,
    me: &str,
    ttl: Duration,
    leave: bool,
) -> RedisResult<Vec<String>> {
    MEMBERS
        .key(key)
        .arg(me)
        .arg(ttl.as_millis() as u64)
        .arg(if leave { "leave" } else { "join" })
        .invoke_async(con)
        .await
}

/// Takes the lease if nobody holds it: `true` if taken.
///
/// `SET lease token NX PX ttl`
pub async fn acquire(
    con: &mut MultiplexedConnection,
    key: &str,
    token: &str,
    ttl: Duration,
) -> RedisResult<bool> {
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis() as u64)
        .query_async(con)
        .await?;
    Ok(set.is_some())
}

/// Extends the lease while `token` holds it: `false` once it does not.
///
/// `EVALSHA <renew> 1 lease token ttl`
pub async fn renew(
    con: &mut MultiplexedConnection,
    key: &str,
    token: &str,
    ttl: Duration,
) -> RedisResult<bool> {
    let renewed: u8 = RENEW
        .key(key)
        .arg(token)
        .arg(ttl.as_millis() as u64)
        .invoke_async(con)
        .await?;
    Ok(renewed == 1)
}

/// Gives the lease up while `token` holds it: `true` if it did.
///
/// `EVALSHA <release> 1 lease token`
pub async fn release(con: &mut MultiplexedConnection, key: &str, token: &str) -> RedisResult<bool> {
    let released: u8 = RELEASE.key(key).arg(token).invoke_async(con).await?;
    Ok(released == 1)
}

/// Who holds the lease (`None`: nobody).
///
/// `GET lease`
pub async fn holder(con: &mut MultiplexedConnection, key: &str) -> RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query_async(con).await
}

/// The members whose membership has not run out, by the server's clock,
/// without touching the set (what an operator looks at).
///
/// `TIME`, then `ZRANGEBYSCORE members (now +inf`
pub async fn live_members(con: &mut MultiplexedConnection, key: &str) -> RedisResult<Vec<String>> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(con).await?;
    let now = secs * 1000 + micros / 1000;
    redis::cmd("ZRANGEBYSCORE")
        .arg(key)
        .arg(format!("({now}"))
        .arg("+inf")
        .query_async(con)
        .await
}
