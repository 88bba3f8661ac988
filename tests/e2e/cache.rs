//! The compiled-plugin cache: hits on restart, and never loads an artifact
//! this host did not write.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::{Host, RedisServer, key, plugin};

const WAIT: Duration = Duration::from_secs(60);

fn start_and_stop(redis: &RedisServer, cache: &std::path::Path) -> String {
    let dir = cache.display().to_string();
    let mut host = Host::run(
        &redis.url(),
        &key("cache"),
        "g",
        &plugin("notify"),
        &["--cache-dir", &dir],
    );
    host.wait_for_log("starting", WAIT);
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0));
    host.log()
}

#[test]
fn restarts_load_the_compiled_plugin_from_the_cache_and_refuse_tampered_entries() {
    let redis = RedisServer::start();
    let cache = tempfile::tempdir().unwrap();
    assert!(start_and_stop(&redis, cache.path()).contains("cached=false"));
    assert!(start_and_stop(&redis, cache.path()).contains("cached=true"));

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(cache.path()), 0o700);
    assert_eq!(mode(&cache.path().join("key")), 0o600);

    let artifact = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cached artifact");
    let mut bytes = std::fs::read(&artifact).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&artifact, bytes).unwrap();
    let log = start_and_stop(&redis, cache.path());
    assert!(
        log.contains("ignoring a cached artifact this host did not write"),
        "{log}"
    );
    assert!(log.contains("cached=false"), "{log}");
    assert!(
        start_and_stop(&redis, cache.path()).contains("cached=true"),
        "rewritten after recompiling"
    );
}
