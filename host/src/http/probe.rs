//! The Redis side of a scrape or a readiness check: PING, then each
//! pipeline's group (`XINFO GROUPS`, the summary form of `XPENDING`), on
//! connections of its own, all within a short time budget so that an answer
//! comes quickly even while Redis is down; and the cached connections the
//! HTTP side keeps, each with the timeouts of what it is used for and each
//! key asked of the node that holds it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::config::{RedisConfig, RedisEndpoint};
use crate::runtime::port::PartitionedView;
use crate::stream::cluster::Nodes;
use crate::stream::pending::{self, PendingQuery};
use crate::stream::{inspect, leases};
use crate::vocab::ids::{age_of, id_ms};
use crate::vocab::partition;

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

/// The probe: connections with [`PROBE_TIMEOUT`], to the server or, on a
/// cluster or behind Sentinel, to each node asked.
#[derive(Debug)]
pub struct RedisProbe {
    nodes: CachedNodes,
}

impl Default for RedisProbe {
    fn default() -> Self {
        Self {
            nodes: CachedNodes::new(PROBE_TIMEOUT),
        }
    }
}

impl RedisProbe {
    /// Looks at Redis and each of `groups` within [`PROBE_BUDGET`]: each
    /// group on the node that holds its stream now (its slot's on a
    /// cluster, the master behind Sentinel); `PING` when there is no group.
    pub async fn look(&self, redis: &RedisConfig, groups: &[(String, String)]) -> RedisLook {
        let attempt = tokio::time::timeout(PROBE_BUDGET, async {
            let mut nodes = self.nodes.lock(redis).await?;
            if groups.is_empty() {
                let mut con = nodes.of("").await.map_err(|e| e.to_string())?;
                inspect::ping(&mut con).await.map_err(|e| e.to_string())?;
            }
            let mut seen = BTreeMap::new();
            for (stream, group) in groups {
                let mut con = nodes.of(stream).await.map_err(|e| e.to_string())?;
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
        self.nodes.forget().await;
        RedisLook {
            down: Some(down),
            groups: BTreeMap::new(),
        }
    }
}

/// One partition of a partitioned stream a configuration declares, as a
/// scrape sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLook {
    /// The logical stream.
    pub stream: String,
    /// The partition's index, as a label value.
    pub partition: String,
    /// The group reading it.
    pub group: String,
    /// Who holds the group's lease on it (`None`: nobody).
    pub owner: Option<String>,
    /// Entries not yet delivered to the group (`None`: Redis cannot tell,
    /// or the group does not exist yet).
    pub lag: Option<u64>,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// Records in its dead-letter stream.
    pub dead_letters: u64,
}

impl RedisProbe {
    /// Each partition of `streams` — its group's lag and pending entries,
    /// the lease holder, its dead letters — within [`PROBE_BUDGET`], each
    /// on its node; `None` when Redis did not answer in time.
    pub async fn look_partitions(
        &self,
        redis: &RedisConfig,
        streams: &[PartitionedView],
    ) -> Option<Vec<PartitionLook>> {
        if streams.is_empty() {
            return Some(Vec::new());
        }
        let attempt = tokio::time::timeout(PROBE_BUDGET, async {
            let mut nodes = self.nodes.lock(redis).await?;
            let mut out = Vec::new();
            for s in streams {
                for i in 0..s.partitions {
                    let key = partition::stream_key(&s.stream, i);
                    let mut con = nodes.of(&key).await.map_err(|e| e.to_string())?;
                    out.push(
                        look_partition(&mut con, s, i, &key)
                            .await
                            .map_err(|e| e.to_string())?,
                    );
                }
            }
            Ok::<_, String>(out)
        })
        .await;
        match attempt {
            Ok(Ok(found)) => Some(found),
            Ok(Err(why)) => {
                tracing::debug!(reason = %why, "redis did not answer a look at the partitions");
                self.nodes.forget().await;
                None
            }
            Err(_) => {
                self.nodes.forget().await;
                None
            }
        }
    }
}

async fn look_partition(
    con: &mut MultiplexedConnection,
    s: &PartitionedView,
    index: u32,
    key: &str,
) -> redis::RedisResult<PartitionLook> {
    let group = inspect::groups(con, key)
        .await?
        .into_iter()
        .find(|g| g.name == s.group);
    let token = leases::holder(con, &partition::lease_key(&s.stream, index, &s.group)).await?;
    let dlq = partition::dlq_key(&s.stream, index);
    let dead_letters: u64 = redis::cmd("XLEN").arg(&dlq).query_async(con).await?;
    Ok(PartitionLook {
        stream: s.stream.clone(),
        partition: index.to_string(),
        group: s.group.clone(),
        owner: token.map(|t| partition::lease_owner(&t).to_owned()),
        lag: group.as_ref().and_then(|g| g.lag),
        pending: group.map_or(0, |g| g.pending),
        dead_letters,
    })
}

/// Connections kept between requests, with a connect and response timeout
/// of their own — to the server, or to each node of a cluster (the master
/// behind Sentinel) a key was asked of — reopened after a failure or a
/// change of settings.
#[derive(Debug)]
pub struct CachedNodes {
    timeout: Duration,
    nodes: Mutex<Option<Nodes>>,
}

impl CachedNodes {
    /// None open yet; connections wait `timeout` to connect and for each answer.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            nodes: Mutex::new(None),
        }
    }

    /// The connections for `redis`, held for the caller's use (others wait).
    pub async fn lock(&self, redis: &RedisConfig) -> Result<MappedMutexGuard<'_, Nodes>, String> {
        let mut guard = self.nodes.lock().await;
        if guard.as_ref().is_none_or(|n| n.config() != redis) {
            *guard =
                Some(Nodes::new(redis, self.timeout, self.timeout).map_err(|e| e.to_string())?);
        }
        Ok(MutexGuard::map(guard, |n| {
            n.as_mut().expect("set just above")
        }))
    }

    /// A connection to the node that holds `key`.
    pub async fn of(
        &self,
        redis: &RedisConfig,
        key: &str,
    ) -> Result<MultiplexedConnection, String> {
        let mut nodes = self.lock(redis).await?;
        nodes.of(key).await.map_err(|e| e.to_string())
    }

    /// Where `key`'s commands go now.
    pub async fn endpoint(
        &self,
        redis: &RedisConfig,
        key: &str,
    ) -> Result<std::sync::Arc<RedisEndpoint>, String> {
        let nodes = self.lock(redis).await?;
        nodes.endpoint(key).await.map_err(|e| e.to_string())
    }

    /// Forgets every connection after a failure, so the next use reopens
    /// them (and reads a cluster's slot map again).
    pub async fn forget(&self) {
        if let Some(nodes) = self.nodes.lock().await.as_mut() {
            nodes.forget();
        }
    }
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
