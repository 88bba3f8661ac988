//! The compiled-plugin cache: hits on restart, and never loads an artifact
//! this host did not write for the component it is loading, nor trusts a
//! key file anyone else could have written.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{Host, RedisServer, key, plugin, scripted_plugin};

const WAIT: Duration = Duration::from_secs(60);

fn start_and_stop(redis: &RedisServer, cache: &Path, plugin_path: &Path, extra: &[&str]) -> String {
    let dir = cache.display().to_string();
    let args = [&["--cache-dir", dir.as_str()][..], extra].concat();
    let mut host = Host::run(&redis.url(), &key("cache"), "g", plugin_path, &args);
    host.wait_for_log("starting", WAIT);
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
    host.log()
}

fn artifacts(cache: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    found.sort();
    found
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn restarts_load_the_compiled_plugin_from_the_cache_and_refuse_tampered_entries() {
    let redis = RedisServer::start();
    let base = tempfile::tempdir().unwrap();
    let cache = base.path().join("cache");
    let notify = plugin("notify");
    assert!(start_and_stop(&redis, &cache, &notify, &[]).contains("cached=false"));
    assert!(start_and_stop(&redis, &cache, &notify, &[]).contains("cached=true"));
    assert_eq!(
        mode(&cache),
        0o700,
        "a directory the cache creates is private"
    );
    assert_eq!(mode(&cache.join("key")), 0o600);

    let artifact = artifacts(&cache).pop().expect("a cached artifact");
    let mut bytes = std::fs::read(&artifact).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&artifact, bytes).unwrap();
    let log = start_and_stop(&redis, &cache, &notify, &[]);
    assert!(
        log.contains("ignoring a cached artifact this host did not write"),
        "{log}"
    );
    assert!(log.contains("cached=false"), "{log}");
    assert!(
        start_and_stop(&redis, &cache, &notify, &[]).contains("cached=true"),
        "rewritten after recompiling"
    );
}

#[test]
fn one_components_artifact_cannot_stand_in_for_anothers() {
    let redis = RedisServer::start();
    let base = tempfile::tempdir().unwrap();
    let cache = base.path().join("cache");
    start_and_stop(&redis, &cache, &plugin("notify"), &[]);
    let notify_artifact = artifacts(&cache).pop().unwrap();
    start_and_stop(&redis, &cache, &plugin("noop"), &[]);
    let noop_artifact = artifacts(&cache)
        .into_iter()
        .find(|p| *p != notify_artifact)
        .unwrap();
    // Someone who can write the cache directory copies a valid artifact
    // (with its valid tag) over another component's.
    std::fs::copy(&notify_artifact, &noop_artifact).unwrap();
    let stream = key("cache");
    let id = redis.add(
        &stream,
        &[
            ("type", "order.placed"),
            ("order_id", "o-1"),
            ("customer", "c"),
            ("amount", "1"),
        ],
    );
    let dir = cache.display().to_string();
    let host = Host::run(
        &redis.url(),
        &stream,
        "g",
        &plugin("noop"),
        &["--cache-dir", &dir, "--plugin-config", "outbox=outbox"],
    );
    crate::support::eventually(WAIT, "entry read and acked", || {
        (redis.entries_read(&stream, "g") == Some(1) && redis.pending(&stream, "g") == 0)
            .then_some(())
    });
    assert!(
        redis.range("outbox").is_empty(),
        "{id} was handled by the no-op plugin, not by the notify code from the swapped artifact"
    );
    host.wait_for_log("ignoring a cached artifact this host did not write", WAIT);
    assert!(host.log().contains("cached=false"));
}

#[test]
fn a_key_file_others_can_read_or_a_symlinked_one_disables_the_cache() {
    let redis = RedisServer::start();
    let base = tempfile::tempdir().unwrap();
    let cache = base.path().join("cache");
    let noop = plugin("noop");
    start_and_stop(&redis, &cache, &noop, &[]);
    for artifact in artifacts(&cache) {
        std::fs::remove_file(artifact).unwrap();
    }
    std::fs::set_permissions(cache.join("key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = start_and_stop(&redis, &cache, &noop, &[]);
    assert!(log.contains("compiled-artifact cache disabled"), "{log}");
    assert!(
        artifacts(&cache).is_empty(),
        "nothing written under an untrusted key"
    );
    assert_eq!(mode(&cache.join("key")), 0o644, "and the key left alone");

    std::fs::set_permissions(cache.join("key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let elsewhere = base.path().join("elsewhere");
    std::fs::rename(cache.join("key"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, cache.join("key")).unwrap();
    let log = start_and_stop(&redis, &cache, &noop, &[]);
    assert!(log.contains("compiled-artifact cache disabled"), "{log}");
    assert!(artifacts(&cache).is_empty());

    std::fs::remove_file(cache.join("key")).unwrap();
    start_and_stop(&redis, &cache, &noop, &[]);
    assert_eq!(
        artifacts(&cache).len(),
        1,
        "a fresh private key: the cache works again"
    );
}

#[test]
fn a_cache_directory_the_operator_named_keeps_its_mode() {
    let redis = RedisServer::start();
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o751)).unwrap();
    start_and_stop(&redis, cache.path(), &plugin("noop"), &[]);
    assert_eq!(mode(cache.path()), 0o751);
    assert_eq!(artifacts(cache.path()).len(), 1);
}

#[test]
fn a_cold_compile_leaves_the_host_about_as_lean_as_a_cached_start() {
    // Compiling a 12 MB JavaScript component peaks at ~400 MiB; without handing
    // that back the host stayed at ~90% of its peak for the rest of its life.
    let redis = RedisServer::start();
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("cache").display().to_string();
    let enrich = scripted_plugin("js-enrich", "enrich");
    let stream = key("cold-rss");
    let mut host = Host::run(
        &redis.url(),
        &stream,
        "g",
        &enrich,
        &["--cache-dir", &dir, "--plugin-config", "output=cold:out"],
    );
    host.wait_for_log("starting", Duration::from_secs(180));
    assert!(host.log().contains("cached=false"), "{}", host.log());
    let (rss, peak) = (host.rss(), host.peak_rss());
    assert!(
        rss < peak / 2,
        "after a cold compile the host keeps {} MiB of its {} MiB peak",
        rss >> 20,
        peak >> 20
    );
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
}
