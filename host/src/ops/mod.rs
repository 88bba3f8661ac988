//! The operator toolkit's library side: what `host status`, `produce`, `groups`,
//! `dlq` and `trim` compute, as plain data (`Serialize`) that the command
//! line prints as tables or JSON and that an HTTP status API can serve.
//! Redis is reached through the typed wrappers of [`crate::stream`].

pub mod dlq;
pub mod groups;
pub mod partition_status;
pub mod plugin_check;
pub mod produce;
pub mod replay;
pub mod status;
pub mod thresholds;
pub mod trim;

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::config::{ConfigError, RedisConfig};
use crate::stream::cluster::Nodes;
use crate::vocab::ids::{id_at_age, id_parts, ms_of};
use crate::vocab::partition;

/// How long one operator command waits for a Redis reply.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an operator command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The connection settings are unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad argument: an unknown stream, a malformed id, a refused cut.
    #[error("{0}")]
    Usage(String),
    /// Input data that cannot be used (a malformed JSON line).
    #[error("{0}")]
    Data(String),
    /// Redis failed or refused a command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// How long an operator command waits to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connections of an operator command: one to the server, or one per
/// node it asks on a cluster (the node that holds each key's slot) or
/// behind Sentinel (the master).
pub fn nodes(redis: &RedisConfig) -> Result<Nodes, OpsError> {
    Ok(Nodes::new(redis, CONNECT_TIMEOUT, RESPONSE_TIMEOUT)?)
}

/// Opens one connection to Redis for an operator command: to the node
/// that holds `key` on a cluster, the master behind Sentinel.
pub async fn connect_for(
    redis: &RedisConfig,
    key: &str,
) -> Result<MultiplexedConnection, OpsError> {
    Ok(nodes(redis)?.of(key).await?)
}

/// Opens one connection to Redis for an operator command (on a cluster,
/// to the node of slot 0: use [`connect_for`] for a key's).
pub async fn connect(redis: &RedisConfig) -> Result<MultiplexedConnection, OpsError> {
    connect_for(redis, "").await
}

/// One key of what a command works on: an unpartitioned stream, or one
/// partition of a partitioned one, with its dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The partition's index (`None`: the stream is not partitioned).
    pub index: Option<u32>,
    /// Its stream key.
    pub stream: String,
    /// Its dead-letter stream.
    pub dlq: String,
}

/// The parts of `stream`: itself with `dlq`, or with `partitions` its
/// partitions `{stream:i}` with their `{stream:i}:dlq` (only `only`, when
/// given).
pub fn parts(stream: &str, dlq: &str, partitions: Option<u32>, only: Option<u32>) -> Vec<Part> {
    let Some(count) = partitions else {
        return vec![Part {
            index: None,
            stream: stream.to_owned(),
            dlq: dlq.to_owned(),
        }];
    };
    (0..count)
        .filter(|i| only.is_none_or(|o| o == *i))
        .map(|i| Part {
            index: Some(i),
            stream: partition::stream_key(stream, i),
            dlq: partition::dlq_key(stream, i),
        })
        .collect()
}

/// A stream id as given by an operator: `<ms>-<seq>`, a bare `<ms>`, or an
/// RFC 3339 time / a duration ago (`10m`, meaning that long before now),
/// turned into an id. `-` and `+` stand for the ends.
pub fn parse_position(text: &str) -> Result<String, OpsError> {
    if text == "-" || text == "+" || id_parts(text).is_some() {
        return Ok(text.to_owned());
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(format!("{}-0", ms_of(time)));
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(id_at_age(ago));
    }
    Err(OpsError::Usage(format!(
        "{text:?} is not a stream id (<ms>-<seq>), a time (2026-01-31T12:00:00Z) or a duration ago (10m)"
    )))
}

/// The missing-stream refusal every command gives.
pub fn no_such_stream(key: &str) -> OpsError {
    OpsError::Usage(format!("stream {key:?} does not exist"))
}

/// Refuses `key` unless it holds a stream.
pub async fn require_stream(con: &mut MultiplexedConnection, key: &str) -> Result<(), OpsError> {
    match crate::stream::inspect::key_type(con, key).await?.as_str() {
        "stream" => Ok(()),
        "none" => Err(no_such_stream(key)),
        other => Err(OpsError::Usage(format!(
            "key {key:?} holds a {other}, not a stream"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::ids::{id_ms, now_ms};

    #[test]
    fn a_partitioned_stream_is_its_partitions_and_their_dead_letters() {
        let plain = parts("orders", "orders:dlq", None, None);
        assert_eq!(plain.len(), 1);
        assert_eq!((plain[0].index, plain[0].stream.as_str()), (None, "orders"));
        assert_eq!(plain[0].dlq, "orders:dlq");
        let all = parts("orders", "ignored", Some(3), None);
        let keys: Vec<_> = all
            .iter()
            .map(|p| (p.stream.as_str(), p.dlq.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("{orders:0}", "{orders:0}:dlq"),
                ("{orders:1}", "{orders:1}:dlq"),
                ("{orders:2}", "{orders:2}:dlq")
            ]
        );
        let one = parts("orders", "ignored", Some(3), Some(1));
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].index, one[0].stream.as_str()),
            (Some(1), "{orders:1}")
        );
    }

    #[test]
    fn positions_are_ids_times_or_durations_ago() {
        assert_eq!(parse_position("5-1").unwrap(), "5-1");
        assert_eq!(parse_position("17").unwrap(), "17");
        assert_eq!(parse_position("+").unwrap(), "+");
        assert_eq!(
            parse_position("2026-01-01T00:00:00Z").unwrap(),
            "1767225600000-0"
        );
        let ago = id_ms(&parse_position("10m").unwrap()).unwrap();
        assert!(now_ms() - ago >= 600_000 && now_ms() - ago < 660_000);
        let bad = parse_position("yesterday-ish").unwrap_err();
        assert!(matches!(bad, OpsError::Usage(_)), "{bad}");
        assert!(bad.to_string().contains("not a stream id"), "{bad}");
    }
}
