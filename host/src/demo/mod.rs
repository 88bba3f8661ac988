//! `host demo`, all of it but its flags (`cli::demo`): its start
//! ([`start`]: a Redis found or started, its keys reset, its pipelines), the
//! demo's keys and how to reset them, whether anything answers at the given
//! Redis address, a private `redis-server` when nothing does
//! ([`redis_child`]), the plugins compiled into the binary ([`plugins`]),
//! the registry of what must not outlive the demo ([`leftovers`]), and what
//! the dashboard produces from: the demo's order events and its trickle.

mod feed;
pub mod leftovers;
pub mod orders;
pub mod plugins;
pub mod redis_child;
mod start;
mod trickle;

use std::io;
use std::time::Duration;

pub use self::feed::DemoFeed;
pub use self::start::{Demo, exit_code, start};
use crate::config::{Address, ConfigError, RedisConfig};
use crate::ops::{self, OpsError};
use crate::vocab::partition;

/// The stream every demo pipeline consumes and the trickle produces to.
pub const STREAM: &str = "demo:events:orders";
/// Its dead-letter stream (the pipelines' default, `<stream>:dlq`).
pub const DLQ: &str = "demo:events:orders:dlq";
/// Where the notify plugin emits notifications.
pub const OUTBOX: &str = "notifications:outbox";
/// Where the analytics plugin emits running totals.
pub const TOTALS: &str = "analytics:totals";
/// Every key the demo writes on one server; a reset deletes these and
/// nothing else.
pub const KEYS: [&str; 4] = [STREAM, DLQ, OUTBOX, TOTALS];

/// The demo's keys where it runs: [`STREAM`] and [`DLQ`] on one server; on
/// a cluster the same names in one hash tag (a stream and its DLQ must
/// share a slot), with the emits — in other slots — going through the
/// stream's outbox, and the forwarder's idempotence keys beside each
/// target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The stream.
    pub stream: String,
    /// Its dead letters.
    pub dlq: String,
    /// Every key a reset deletes.
    pub all: Vec<String>,
}

impl Keys {
    /// The keys on a cluster (`cluster`) or on one server.
    pub fn of(cluster: bool) -> Self {
        if !cluster {
            return Self {
                stream: STREAM.into(),
                dlq: DLQ.into(),
                all: KEYS.map(String::from).to_vec(),
            };
        }
        let stream = format!("{{{STREAM}}}");
        let dlq = format!("{stream}:dlq");
        let mut all = vec![stream.clone(), dlq.clone(), OUTBOX.into(), TOTALS.into()];
        all.extend(partition::outbox_key(&stream));
        all.extend(
            [OUTBOX, TOTALS]
                .iter()
                .filter_map(|t| partition::dedup_key(t)),
        );
        Self { stream, dlq, all }
    }
}
/// How long the probe of the given address may take: a local Redis answers
/// in well under a millisecond, a remote one within a round trip.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What is at the Redis address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Something accepted a connection (whether it is a usable Redis is for
    /// the runtime to find out, with its own errors and retries).
    Answers,
    /// Nothing listens there: the connection was refused (or the socket
    /// file does not exist).
    Nothing,
    /// The address could not be tried (name resolution, timeout, another
    /// network error): not proof that nothing is there.
    Unknown(String),
}

/// Tries a connection to `redis`'s address, without speaking Redis.
pub async fn probe(redis: &RedisConfig) -> Result<Probe, ConfigError> {
    let endpoint = redis.endpoint()?;
    let attempt = async {
        match endpoint.address() {
            Address::Tcp { host, port } => tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map(drop),
            Address::Unix(path) => tokio::net::UnixStream::connect(path).await.map(drop),
        }
    };
    Ok(match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(())) => Probe::Answers,
        Ok(Err(e))
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            Probe::Nothing
        }
        Ok(Err(e)) => Probe::Unknown(e.to_string()),
        Err(_) => Probe::Unknown(format!("no answer within {PROBE_TIMEOUT:?}")),
    })
}

/// Deletes the demo's own keys (`keys.all`) and nothing else, each on the
/// node that holds it; returns how many existed.
pub async fn reset(redis: &RedisConfig, keys: &Keys) -> Result<u64, OpsError> {
    let mut nodes = ops::nodes(redis)?;
    let mut deleted = 0;
    for key in &keys.all {
        let mut con = nodes.of(key).await?;
        let n: u64 = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut con)
            .await
            .map_err(OpsError::from)?;
        deleted += n;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_nothing_and_a_listener_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = RedisConfig::from_url(format!("redis://127.0.0.1:{port}"));
        assert_eq!(probe(&url).await.unwrap(), Probe::Answers);
        drop(listener);
        assert_eq!(probe(&url).await.unwrap(), Probe::Nothing);
        let socket = RedisConfig::from_url("redis+unix:///nonexistent/redis.sock");
        assert_eq!(probe(&socket).await.unwrap(), Probe::Nothing);
    }

    #[test]
    fn on_a_cluster_the_stream_and_its_dead_letters_share_a_slot_and_reset_covers_the_outbox() {
        let one = Keys::of(false);
        assert_eq!((one.stream.as_str(), one.dlq.as_str()), (STREAM, DLQ));
        assert_eq!(one.all, KEYS);
        let cluster = Keys::of(true);
        let slot = |k: &str| partition::key_slot(k.as_bytes());
        assert_eq!(slot(&cluster.stream), slot(&cluster.dlq));
        assert_eq!(cluster.stream, "{demo:events:orders}");
        for key in [
            "{demo:events:orders}:streamhost:outbox",
            "{notifications:outbox}:streamhost:dedup",
            "{analytics:totals}:streamhost:dedup",
            OUTBOX,
            TOTALS,
        ] {
            assert!(cluster.all.iter().any(|k| k == key), "{key} reset");
        }
    }
}
