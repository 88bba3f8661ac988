//! The Redis side of a scrape or a readiness check: PING, then each
//! pipeline's group (`XINFO GROUPS`, the summary form of `XPENDING`), on a
//! connection of its own, all within a short time budget so that an answer
//! comes quickly even while Redis is down; and the cached connections the
//! HTTP side keeps, each with the timeouts of what it is used for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use crate::config::RedisConfig;
use crate::stream::cluster::Router;
use crate::stream::inspect;
use crate::stream::pending::{self, PendingQuery};
use crate::vocab::ids::{age_of, id_ms};
use crate::vocab::partition::key_slot;

/// The most one look at Redis may take.
pub const PROBE_BUDGET: Duration = Duration::from_millis(800);
/// Connect and response timeout of the probe's connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What Redis said, if it answered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisLook {
    /// Why Redis did not answer (`None`: it did).
    pub down: Option<String>,
    /// Each asked `(stream, group)`: `None` if the group does not exist.
    pub groups: BTreeMap<(String, String), Option<GroupLook>>,
}

/// One consumer group, seen from Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLook {
    /// Entries not yet delivered to the group (`None`: Redis cannot tell).
    pub lag: Option<u64>,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Age of the oldest pending entry, from its id's time (`None`: none pending).
    pub oldest_pending_age: Option<Duration>,
}

/// The probe: a cached connection with [`PROBE_TIMEOUT`]; on a cluster or
/// behind Sentinel, a connection to each node asked, found through a
/// [`Router`].
#[derive(Debug)]
pub struct RedisProbe {
    conn: CachedConnection,
    routed: Mutex<Option<Routed>>,
}

/// What a routed look keeps between looks.
#[derive(Debug)]
struct Routed {
    redis: RedisConfig,
    router: Arc<Router>,
    nodes: HashMap<String, MultiplexedConnection>,
}

impl Default for RedisProbe {
    fn default() -> Self {
        Self {
            conn: CachedConnection::new(PROBE_TIMEOUT),
            routed: Mutex::new(None),
        }
    }
}

impl RedisProbe {
    /// Looks at Redis and each of `groups` within [`PROBE_BUDGET`].
    pub async fn look(&self, redis: &RedisConfig, groups: &[(String, String)]) -> RedisLook {
        let attempt = tokio::time::timeout(PROBE_BUDGET, async {
            if redis.cluster || redis.sentinel.is_some() {
                return self.look_routed(redis, groups).await;
            }
            let mut con = self.connection(redis).await?;
            inspect::ping(&mut con).await.map_err(|e| e.to_string())?;
            let mut seen = BTreeMap::new();
            for (stream, group) in groups {
                let look = look_at(&mut con, stream, group).await?;
                seen.insert((stream.clone(), group.clone()), look);
            }
            Ok::<_, String>(seen)
        })
        .await;
        let down = match attempt {
            Ok(Ok(groups)) => {
                return RedisLook { down: None, groups };
            }
            Ok(Err(e)) => e,
            Err(_) => format!(
                "no answer within {}",
                humantime::format_duration(PROBE_BUDGET)
            ),
        };
        tracing::debug!(reason = %down, "redis did not answer a scrape or readiness check");
        self.forget().await;
        RedisLook {
            down: Some(down),
            groups: BTreeMap::new(),
        }
    }

    /// Each group on the node that holds its stream now (its slot's on a
    /// cluster, the master behind Sentinel); `PING` of the first node when
    /// there is no group yet.
    async fn look_routed(
        &self,
        redis: &RedisConfig,
        groups: &[(String, String)],
    ) -> Result<BTreeMap<(String, String), Option<GroupLook>>, String> {
        let mut guard = self.routed.lock().await;
        if guard.as_ref().is_none_or(|r| r.redis != *redis) {
            *guard = Some(Routed {
                redis: redis.clone(),
                router: Router::new(redis).map_err(|e| e.to_string())?,
                nodes: HashMap::new(),
            });
        }
        let routed = guard.as_mut().expect("set just above");
        let result = look_each(routed, groups).await;
        if result.is_err() {
            routed.router.invalidate();
            routed.nodes.clear();
        }
        result
    }

    /// The probe's connection (see [`CachedConnection::connection`]).
    pub async fn connection(&self, redis: &RedisConfig) -> Result<MultiplexedConnection, String> {
        self.conn.connection(redis).await
    }

    /// Forgets the connection after a failure, so the next look reopens it.
    pub async fn forget(&self) {
        self.conn.forget().await;
    }
}

/// A connection kept between requests, with a connect and response timeout
/// of its own, reopened after a failure or a change of settings.
#[derive(Debug)]
pub struct CachedConnection {
    timeout: Duration,
    conn: Mutex<Option<(RedisConfig, MultiplexedConnection)>>,
}

impl CachedConnection {
    /// None open yet; connections wait `timeout` to connect and for each answer.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            conn: Mutex::new(None),
        }
    }

    /// The cached connection, or a new one for new settings or after
    /// [`Self::forget`].
    pub async fn connection(&self, redis: &RedisConfig) -> Result<MultiplexedConnection, String> {
        let mut cached = self.conn.lock().await;
        match cached.as_ref() {
            Some((settings, con)) if settings == redis => Ok(con.clone()),
            _ => {
                let con = connect(redis, self.timeout).await?;
                *cached = Some((redis.clone(), con.clone()));
                Ok(con)
            }
        }
    }

    /// Forgets the connection after a failure, so the next use reopens it.
    pub async fn forget(&self) {
        *self.conn.lock().await = None;
    }
}

async fn connect(redis: &RedisConfig, timeout: Duration) -> Result<MultiplexedConnection, String> {
    let endpoint = redis.endpoint().map_err(|e| e.to_string())?;
    endpoint
        .connect(timeout, timeout)
        .await
        .map_err(|e| e.to_string())
}

async fn look_each(
    routed: &mut Routed,
    groups: &[(String, String)],
) -> Result<BTreeMap<(String, String), Option<GroupLook>>, String> {
    let mut seen = BTreeMap::new();
    let asked: Vec<(&str, Option<&str>)> = if groups.is_empty() {
        vec![("", None)]
    } else {
        groups
            .iter()
            .map(|(s, g)| (s.as_str(), Some(g.as_str())))
            .collect()
    };
    for (stream, group) in asked {
        let endpoint = routed
            .router
            .endpoint(key_slot(stream.as_bytes()))
            .await
            .map_err(|e| e.to_string())?;
        let mut con = match routed.nodes.get(endpoint.target()) {
            Some(con) => con.clone(),
            None => {
                let con = endpoint
                    .connect(PROBE_TIMEOUT, PROBE_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                routed
                    .nodes
                    .insert(endpoint.target().to_owned(), con.clone());
                con
            }
        };
        match group {
            None => inspect::ping(&mut con).await.map_err(|e| e.to_string())?,
            Some(group) => {
                let look = look_at(&mut con, stream, group).await?;
                seen.insert((stream.to_owned(), group.to_owned()), look);
            }
        }
    }
    Ok(seen)
}

async fn look_at(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<Option<GroupLook>, String> {
    let groups = inspect::groups(con, stream)
        .await
        .map_err(|e| e.to_string())?;
    let Some(info) = groups.into_iter().find(|g| g.name == group) else {
        return Ok(None);
    };
    // The oldest pending row, not the summary form: that lists every
    // consumer, and a group can have any number.
    let oldest = pending::rows(con, stream, group, PendingQuery::oldest(1))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(GroupLook {
        lag: info.lag,
        pending: info.pending,
        oldest_pending_age: oldest
            .first()
            .and_then(|p| id_ms(&p.id))
            .map(|ms| age_of(ms, SystemTime::now())),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_redis_nobody_answers_for_is_reported_down_quickly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let redis = RedisConfig::from_url(format!("redis://127.0.0.1:{port}"));
        let started = std::time::Instant::now();
        let look = RedisProbe::default()
            .look(&redis, &[("s".into(), "g".into())])
            .await;
        assert!(look.down.is_some());
        assert!(look.groups.is_empty());
        assert!(started.elapsed() <= PROBE_BUDGET + Duration::from_millis(200));
    }
}
