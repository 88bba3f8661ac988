//! Routing to where the data is now: on a Redis Cluster, the node that
//! holds a slot; behind Sentinel, the current master (one "range" of every
//! slot, asked of the sentinels).
//!
//! Redis Cluster routing: which node holds a slot now. A partition's keys
//! all carry its hash tag, so each of its connections talks to one node —
//! the one [`Router`] names for the partition's slot — and every script
//! stays in one slot. The slot map is read with `CLUSTER SLOTS` from any
//! node that answers (the seed first time, then every node known) and read
//! again whenever a connection is redirected (`MOVED`) or lost (a master
//! that died is replaced by its replica): a [`Route`] is where a connection
//! goes, asked again at every reconnect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{RedisResult, Value};

use super::link::{ErrorClass, LinkHealth, RedisLink, classify};
use crate::config::{ConfigError, RedisConfig, RedisEndpoint, SentinelConfig};
use crate::vocab::backoff::Backoff;
use crate::vocab::partition::key_slot;

/// How long asking one node for the slot map may take.
const MAP_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a connection goes: the configured server, or the node that holds
/// a slot of a cluster now.
#[derive(Debug, Clone)]
pub enum Route {
    /// The server of the URL.
    Direct(Arc<RedisEndpoint>),
    /// Whichever node holds the slot.
    Slot(Arc<Router>, u16),
}

impl Route {
    /// The route of `key`'s commands: through `router` when on a cluster.
    pub fn of_key(endpoint: &Arc<RedisEndpoint>, router: Option<&Arc<Router>>, key: &str) -> Self {
        match router {
            Some(r) => Route::Slot(r.clone(), key_slot(key.as_bytes())),
            None => Route::Direct(endpoint.clone()),
        }
    }

    /// Where to connect now.
    pub async fn endpoint(&self) -> RedisResult<Arc<RedisEndpoint>> {
        match self {
            Route::Direct(e) => Ok(e.clone()),
            Route::Slot(router, slot) => router.endpoint(*slot).await,
        }
    }

    /// A command on this route failed with `err`: a redirection or a lost
    /// node makes the slot map worth reading again before the reconnect.
    pub fn failed(&self, err: &redis::RedisError) {
        if let Route::Slot(router, _) = self
            && (is_redirect(err) || classify(err) == ErrorClass::Connection)
        {
            router.invalidate();
        }
    }
}

/// Connections for commands on keys of many slots (a lease keeper's, a
/// forwarder's): one to the server, or on a cluster one per slot touched,
/// each along its slot's route.
#[derive(Debug)]
pub struct Links {
    endpoint: Arc<RedisEndpoint>,
    router: Option<Arc<Router>>,
    health: Arc<LinkHealth>,
    timeout: Duration,
    backoff: Backoff,
    by_slot: HashMap<u16, RedisLink>,
}

impl Links {
    /// Links to `endpoint`'s server (or through `router` to a cluster's
    /// nodes), whose commands time out after `timeout` and whose retries
    /// wait `backoff`'s delays.
    pub fn new(
        endpoint: Arc<RedisEndpoint>,
        router: Option<Arc<Router>>,
        health: Arc<LinkHealth>,
        timeout: Duration,
        backoff: Backoff,
    ) -> Self {
        Self {
            endpoint,
            router,
            health,
            timeout,
            backoff,
            by_slot: HashMap::new(),
        }
    }

    /// The link `key`'s commands go on.
    pub fn of(&mut self, key: &str) -> &mut RedisLink {
        let route = Route::of_key(&self.endpoint, self.router.as_ref(), key);
        let slot = match &route {
            Route::Direct(_) => 0,
            Route::Slot(_, slot) => *slot,
        };
        let (health, timeout, backoff) = (&self.health, self.timeout, &self.backoff);
        self.by_slot.entry(slot).or_insert_with(|| {
            RedisLink::routed(route, health.clone(), timeout).with_backoff(backoff.clone())
        })
    }
}

/// Plain connections for commands on keys of many slots, for callers that
/// retry by starting over (operator commands, the HTTP side's looks): one
/// to the server, or on a cluster or behind Sentinel one per node asked,
/// found through a [`Router`]. Unlike [`Links`] it does not retry; after a
/// failure [`Nodes::forget`] makes the next use read the map again.
#[derive(Debug)]
pub struct Nodes {
    config: RedisConfig,
    router: Option<Arc<Router>>,
    connect: Duration,
    response: Duration,
    open: HashMap<String, redis::aio::MultiplexedConnection>,
}

impl Nodes {
    /// Connections to `config`'s server or nodes, opened when first asked
    /// for, each waiting `connect` to connect and `response` for an answer.
    pub fn new(
        config: &RedisConfig,
        connect: Duration,
        response: Duration,
    ) -> Result<Self, ConfigError> {
        let router = match config.cluster || config.sentinel.is_some() {
            true => Some(Router::new(config)?),
            false => {
                config.endpoint()?;
                None
            }
        };
        Ok(Self {
            config: config.clone(),
            router,
            connect,
            response,
            open: HashMap::new(),
        })
    }

    /// The settings these connections were opened with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Where `key`'s commands go now.
    pub async fn endpoint(&self, key: &str) -> RedisResult<Arc<RedisEndpoint>> {
        match &self.router {
            Some(router) => router.endpoint(key_slot(key.as_bytes())).await,
            None => self.config.endpoint().map(Arc::new).map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Client, "redis", e.to_string()))
            }),
        }
    }

    /// A connection to the node that holds `key`.
    pub async fn of(&mut self, key: &str) -> RedisResult<redis::aio::MultiplexedConnection> {
        let endpoint = self.endpoint(key).await?;
        if let Some(con) = self.open.get(endpoint.target()) {
            return Ok(con.clone());
        }
        let con = endpoint.connect(self.connect, self.response).await?;
        self.open.insert(endpoint.target().to_owned(), con.clone());
        Ok(con)
    }

    /// Whether these connections follow a cluster's slot map or Sentinel.
    pub fn routed(&self) -> bool {
        self.router.is_some()
    }

    /// Drops every connection and reads the map again before the next use
    /// (after a failure: the node may have moved, died or been replaced).
    pub fn forget(&mut self) {
        self.open.clear();
        if let Some(router) = &self.router {
            router.invalidate();
        }
    }
}

/// Whether `err` says the slot lives elsewhere now (`MOVED`) or is moving
/// (`ASK`).
pub fn is_redirect(err: &redis::RedisError) -> bool {
    matches!(err.code(), Some("MOVED" | "ASK"))
}

/// A node's address.
type Node = (String, u16);
/// Slots `first..=last` and the master serving them.
type SlotRange = (u16, u16, Node);

/// The slot map of one cluster, shared by every connection of a process.
#[derive(Debug)]
pub struct Router {
    config: RedisConfig,
    seed: Arc<RedisEndpoint>,
    state: Mutex<Map>,
    /// One refresh at a time: after a failover every connection asks at
    /// once, and one answer serves them all.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Map {
    /// The ranges as `CLUSTER SLOTS` gives them.
    ranges: Vec<SlotRange>,
    /// Every node met, by address.
    nodes: HashMap<Node, Arc<RedisEndpoint>>,
    /// Read again before the next answer.
    stale: bool,
    /// Times the map was read.
    generation: u64,
}

impl Router {
    /// A router for the cluster `config`'s URL is a seed node of; reads
    /// nothing yet.
    pub fn new(config: &RedisConfig) -> Result<Arc<Self>, ConfigError> {
        let seed = Arc::new(config.endpoint()?);
        Ok(Arc::new(Self {
            config: config.clone(),
            seed,
            state: Mutex::new(Map {
                stale: true,
                ..Map::default()
            }),
            refreshing: tokio::sync::Mutex::new(()),
        }))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, Map> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the map as worth reading again.
    pub fn invalidate(&self) {
        self.map().stale = true;
    }

    /// The node that holds `slot`, reading the map first if it is stale.
    pub async fn endpoint(&self, slot: u16) -> RedisResult<Arc<RedisEndpoint>> {
        let (stale, generation) = {
            let map = self.map();
            (map.stale, map.generation)
        };
        if stale {
            self.refresh(generation).await?;
        }
        let map = self.map();
        let node = map
            .ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, node)| node.clone());
        match node.and_then(|n| map.nodes.get(&n).cloned()) {
            Some(endpoint) => Ok(endpoint),
            None => Err(redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                "no node serves the slot",
                format!("slot {slot} is not assigned in the cluster's slot map"),
            ))),
        }
    }

    /// Reads the slot map from the first node that answers, unless another
    /// task did since `seen` (the generation its caller saw stale).
    async fn refresh(&self, seen: u64) -> RedisResult<()> {
        let _one = self.refreshing.lock().await;
        let candidates: Vec<Arc<RedisEndpoint>> = {
            let map = self.map();
            if map.generation != seen && !map.stale {
                return Ok(());
            }
            std::iter::once(self.seed.clone())
                .chain(map.nodes.values().cloned())
                .collect()
        };
        if let Some(sentinel) = &self.config.sentinel {
            let master = master_of(sentinel).await?;
            return self.install(vec![(0, 16383, master)]);
        }
        let mut last = None;
        for node in candidates {
            match slots_of(&node).await {
                Ok(ranges) => return self.install(ranges),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Io, "no cluster node answered"))
        }))
    }
}

impl Router {
    /// Takes `ranges` as the map, with an endpoint for each new node.
    fn install(&self, ranges: Vec<SlotRange>) -> RedisResult<()> {
        let mut map = self.map();
        for (_, _, node) in &ranges {
            if let std::collections::hash_map::Entry::Vacant(slot) = map.nodes.entry(node.clone()) {
                let endpoint =
                    RedisEndpoint::at_node(&self.config, &node.0, node.1).map_err(|e| {
                        redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "redis node",
                            e.to_string(),
                        ))
                    })?;
                slot.insert(Arc::new(endpoint));
            }
        }
        map.ranges = ranges;
        map.stale = false;
        map.generation += 1;
        Ok(())
    }
}

/// The master's address, from the first sentinel that knows it
/// (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
async fn master_of(sentinel: &SentinelConfig) -> RedisResult<Node> {
    let mut last = None;
    for (host, port) in &sentinel.nodes {
        let asked = async {
            let client = redis::Client::open(format!("redis://{host}:{port}"))?;
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(MAP_TIMEOUT))
                .set_response_timeout(Some(MAP_TIMEOUT));
            let mut con = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&sentinel.master)
                .query_async(&mut con)
                .await?;
            addr.ok_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown),
                    "the sentinel knows no such master",
                    sentinel.master.clone(),
                ))
            })
        };
        match asked.await {
            Ok(node) => return Ok(node),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no sentinel"))))
}

/// `CLUSTER SLOTS` of one node: each range's first and last slot and its
/// master's address (a master announced without a host is the node asked).
async fn slots_of(node: &RedisEndpoint) -> RedisResult<Vec<SlotRange>> {
    let mut con = node.connect(MAP_TIMEOUT, MAP_TIMEOUT).await?;
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut con)
        .await?;
    let asked = match node.address() {
        crate::config::Address::Tcp { host, .. } => host.clone(),
        crate::config::Address::Unix(_) => String::new(),
    };
    parse_slots(&reply, &asked)
}

fn parse_slots(reply: &Value, asked: &str) -> RedisResult<Vec<SlotRange>> {
    let bad = |what: &str| {
        redis::RedisError::from((
            redis::ErrorKind::Parse,
            "unexpected CLUSTER SLOTS reply",
            what.to_owned(),
        ))
    };
    let Value::Array(ranges) = reply else {
        return Err(bad("not an array"));
    };
    let int = |v: &Value| match v {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(items) = range else {
            return Err(bad("a range is not an array"));
        };
        let (Some(first), Some(last)) = (items.first().and_then(int), items.get(1).and_then(int))
        else {
            return Err(bad("a range without its slots"));
        };
        let Some(Value::Array(master)) = items.get(2) else {
            return Err(bad("a range without its master"));
        };
        let host = master.first().and_then(text).unwrap_or_default();
        let host = if host.is_empty() || host == "?" {
            asked.to_owned()
        } else {
            host
        };
        let Some(port) = master.get(1).and_then(int) else {
            return Err(bad("a master without its port"));
        };
        out.push((first, last, (host, port)));
    }
    if out.is_empty() {
        return Err(bad("no slot is assigned"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_slot_map_names_each_ranges_master() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("10.0.0.1"), Value::Int(7000), bulk("id1")]),
                Value::Array(vec![bulk("10.0.0.4"), Value::Int(7003), bulk("id4")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7001), bulk("id2")]),
            ]),
        ]);
        let ranges = parse_slots(&reply, "seed.local").unwrap();
        assert_eq!(
            ranges,
            [
                (0, 5460, ("10.0.0.1".to_owned(), 7000)),
                (5461, 16383, ("seed.local".to_owned(), 7001))
            ]
        );
        assert!(parse_slots(&Value::Array(vec![]), "x").is_err());
        assert!(parse_slots(&Value::Int(1), "x").is_err());
    }
}
