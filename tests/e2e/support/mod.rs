//! Shared test support: private `redis-server` processes (plaintext or TLS,
//! with certificates made at run time), the real plugins built from
//! `plugins/`, and the real `host` binary as a child process.

pub mod cluster;
pub mod host;
pub mod http;
pub mod measured;
pub mod pki;
pub mod plugins;
pub mod proxy;
pub mod redis_server;
pub mod sentinel;

use std::time::{Duration, Instant};

pub use host::Host;
pub use pki::Pki;
pub use plugins::{plugin, plugin_dir, scripted_plugin};
pub use proxy::{LossyProxy, counting_claim};
pub use redis_server::{ClientCerts, RedisServer};

/// Fast healing for tests: reclaim after 1s idle, sweep every 100ms.
pub const FAST: [&str; 8] = [
    "--claim-idle",
    "1s",
    "--claim-interval",
    "100ms",
    "--handler-timeout",
    "900ms",
    "--retry-backoff",
    "100ms",
];

/// [`FAST`] followed by `extra` (later flags win).
pub fn fast<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    FAST.iter().copied().chain(extra.iter().copied()).collect()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// An entry's fields as a map (first occurrence of each name wins).
pub fn fields_map(fields: &[(String, String)]) -> std::collections::HashMap<&str, &str> {
    let mut map = std::collections::HashMap::new();
    for (k, v) in fields {
        map.entry(k.as_str()).or_insert(v.as_str());
    }
    map
}

/// The original fields kept in a raw DLQ record, in order: either inline
/// (`field:<name>` pairs) or packed (`packed_fields`, a RESP2 array of
/// name/value bulk strings, for entries too wide to inline).
pub fn original_fields(record: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    if let Some((_, packed)) = record.iter().find(|(k, _)| k == b"packed_fields") {
        let value = redis::parse_redis_value(packed).expect("packed_fields is RESP");
        let flat: Vec<Vec<u8>> = redis::from_redis_value(value).expect("an array of strings");
        return flat
            .chunks(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect();
    }
    record
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(b"field:")?.to_vec(), v.clone())))
        .collect()
}

/// A DLQ record's metadata field as text ("" when absent).
pub fn meta<'a>(record: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> std::borrow::Cow<'a, str> {
    record
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v))
        .unwrap_or_default()
}

/// A stream key unique to one test (tests share nothing, but distinct names
/// make failures easier to read).
pub fn key(test: &str) -> String {
    format!("test:{test}")
}

/// The host holding `group`'s lease on partition `i` of `stream` (the
/// lease key read directly: its token is `<host>#<random>`), if any.
pub fn lease_owner(redis: &RedisServer, stream: &str, i: u32, group: &str) -> Option<String> {
    let token: Option<String> = redis::cmd("GET")
        .arg(format!("{{{stream}:{i}}}:lease:{group}"))
        .query(&mut redis.conn())
        .unwrap();
    token.map(|t| t.rsplit_once('#').expect("a lease token").0.to_owned())
}
