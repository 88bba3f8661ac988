//! Shared test support: private `redis-server` processes, the real plugins
//! built from `plugins/`, and the real `host` binary as a child process.

pub mod host;
pub mod plugins;
pub mod redis_server;

use std::time::{Duration, Instant};

pub use host::Host;
pub use plugins::{plugin, scripted_plugin};
pub use redis_server::RedisServer;

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

/// A stream key unique to one test (tests share nothing, but distinct names
/// make failures easier to read).
pub fn key(test: &str) -> String {
    format!("test:{test}")
}
