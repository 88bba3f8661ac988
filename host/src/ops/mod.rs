//! The operator toolkit's library side: what `host status`, `produce`, `groups`,
//! `dlq` and `trim` compute, as plain data (`Serialize`) that the command
//! line prints as tables or JSON and that an HTTP status API can serve.
//! Redis is reached through the typed wrappers of [`crate::stream`].

pub mod dlq;
pub mod groups;
pub mod plugin_check;
pub mod produce;
pub mod replay;
pub mod status;
pub mod thresholds;
pub mod trim;

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::config::{ConfigError, RedisConfig};
use crate::vocab::ids::{id_at_age, id_parts, ms_of};

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

/// Opens one connection to Redis for an operator command.
pub async fn connect(redis: &RedisConfig) -> Result<MultiplexedConnection, OpsError> {
    // Behind Sentinel, the master is wherever the sentinels say it is now.
    let endpoint = match &redis.sentinel {
        Some(_) => {
            let router = crate::stream::cluster::Router::new(redis)?;
            (*router.endpoint(0).await?).clone()
        }
        None => redis.endpoint()?,
    };
    Ok(endpoint
        .connect(Duration::from_secs(5), RESPONSE_TIMEOUT)
        .await?)
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
