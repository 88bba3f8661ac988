//! The config file against the real binary: several pipelines in one process,
//! refusals with exit 64, live reload under load with nothing lost or acked
//! twice, and a failing task in one pipeline stopping the whole process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Host, RedisServer, eventually, fields_map, key, plugin, plugin_dir};

const WAIT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A pipeline of the misbehaving plugin that emits each entry's id to `out`.
pub(crate) fn emitting(name: &str, stream: &str, out: &str, extra: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"{name}\"\nstream = \"{stream}\"\ngroup = \"{name}\"\nplugin = \"{plugin}\"\nblock = \"200ms\"\nshutdown-grace = \"5s\"\nstats-interval = \"0s\"\n{extra}\n",
        plugin = plugin("misbehave").display()
    )
    .replace("\n\n", "\n")
        + &format!("[pipeline.plugin-config]\nemit_to = \"{out}\"\n")
}

fn write_config(path: &Path, redis: &RedisServer, pipelines: &[String]) {
    let text = format!(
        "[redis]\nurl = \"{}\"\n\n{}",
        redis.url(),
        pipelines.join("\n")
    );
    // Written whole, then renamed over the old file: what deploy tools do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Source ids emitted to `out`, with how often each was emitted.
fn emitted(redis: &RedisServer, out: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for (_, fields) in redis.range(out) {
        *seen
            .entry(fields_map(&fields)["source_id"].to_owned())
            .or_insert(0) += 1;
    }
    seen
}

#[test]
fn the_orders_example_runs_both_groups_in_one_process() {
    let redis = RedisServer::start();
    let stream = "demo:events:orders";
    let kinds = [
        "order.placed",
        "order.paid",
        "order.shipped",
        "order.cancelled",
    ];
    for i in 0..40 {
        let amount = if i == 7 {
            "twelve".to_owned()
        } else {
            format!("{}.50", 10 + i)
        };
        redis.add(
            stream,
            &[
                ("type", kinds[i % 4]),
                ("order_id", &format!("o-{i}")),
                ("customer", "alice"),
                ("amount", &amount),
            ],
        );
    }
    let example = workspace().join("examples/orders.toml");
    let dir = plugin_dir().display().to_string();
    let env = [("REDIS_URL", redis.url()), ("PLUGIN_DIR", dir)];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut host = Host::spawn_env(
        &["run".as_ref(), "--config".as_ref(), example.as_os_str()],
        &env,
    );
    for group in ["notifications", "analytics"] {
        eventually(WAIT, &format!("group {group} read everything"), || {
            (redis.entries_read(stream, group) == Some(40) && redis.pending(stream, group) == 0)
                .then_some(())
        });
    }
    assert_eq!(redis.consumers(stream, "notifications"), ["notify-1"]);
    assert_eq!(redis.consumers(stream, "analytics"), ["analytics-1"]);
    assert!(!redis.range("notifications:outbox").is_empty());
    assert!(!redis.range("analytics:totals").is_empty());
    let dead: Vec<_> = redis.range("demo:events:orders:dlq");
    assert!(
        dead.iter()
            .any(|(_, f)| fields_map(f).get("group") == Some(&"notifications")),
        "the malformed order is dead-lettered by notifications: {dead:?}"
    );
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
}

#[test]
fn a_bad_file_is_refused_with_its_place_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p.wasm\"\nmax-deliveries = \"many\"\n",
    )
    .unwrap();
    let file = path.display().to_string();
    for args in [
        vec!["run", "--config", &file],
        vec!["run", "--config", &file, "--check"],
        vec!["config", "check", &file],
    ] {
        let (status, stderr) = Host::output(&args);
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{file}:5:18: `max-deliveries` must be a whole number"
            )),
            "{args:?}: {stderr}"
        );
    }
    let (status, stderr) = Host::output(&["run", "--config", &file, "--batch", "5"]);
    assert_eq!(status.code(), Some(64));
    assert!(
        stderr.contains("--batch cannot be combined with --config"),
        "{stderr}"
    );
}

#[test]
fn config_check_prints_the_effective_configuration_without_secrets() {
    let example = workspace().join("examples/orders.toml");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "hunter2\n").unwrap();
    let text = std::fs::read_to_string(&example).unwrap().replace(
        "# password-env = \"REDIS_PASSWORD\"",
        &format!("password-file = \"{}\"", secret.display()),
    );
    let path = dir.path().join("orders.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["config", "check"])
        .arg(&path)
        .env("REDIS_URL", "redis://app:pa55@127.0.0.1:1")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !shown.contains("hunter2") && !shown.contains("pa55"),
        "{shown}"
    );
    assert!(
        shown.contains("url = \"redis://app:***@127.0.0.1:1\""),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("password-file = \"{}\"", secret.display())),
        "{shown}"
    );
    assert!(shown.contains("name = \"notifications\"") && shown.contains("name = \"analytics\""));
    assert!(
        shown.contains("max-deliveries = 3"),
        "defaults applied: {shown}"
    );
}

/// Producing at a steady rate while the file changes three times: a pipeline
/// removed, one changed, one added, then a broken file. Every entry a
/// pipeline read is emitted exactly once (the emit is atomic with the ack),
/// the pipelines that stay read everything, and the broken file changes nothing.
#[test]
fn live_reload_under_load_loses_nothing_and_acks_nothing_twice() {
    let redis = RedisServer::start();
    let stream = key("reload");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamhost.toml");
    let action = "emit";
    let (a, b, c) = (
        emitting("a", &stream, "out-a", "concurrency = 2"),
        emitting("b", &stream, "out-b", "concurrency = 2"),
        emitting("c", &stream, "out-c", "concurrency = 1"),
    );
    write_config(&path, &redis, &[a.clone(), b.clone()]);
    let mut host = Host::spawn(&["run", "--config", &path.display().to_string()]);

    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (producing, url, stream) = (producing.clone(), redis.url(), stream.clone());
        std::thread::spawn(move || {
            let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut n = 0u64;
            while producing.load(Ordering::Relaxed) {
                for _ in 0..20 {
                    let _: String = redis::cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg("action")
                        .arg(action)
                        // Slow enough that entries are in flight at each drain.
                        .arg("sleep_ms")
                        .arg(2)
                        .arg("n")
                        .arg(n)
                        .query(&mut con)
                        .unwrap();
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    eventually(WAIT, "both groups at work", || {
        (redis.entries_read(&stream, "a").unwrap_or(0) > 100
            && redis.entries_read(&stream, "b").unwrap_or(0) > 100)
            .then_some(())
    });
    // Remove a, change b, add c.
    let b2 = b.replace("concurrency = 2", "concurrency = 1\nbatch = 50");
    write_config(&path, &redis, &[b2.clone(), c.clone()]);
    eventually(WAIT, "c at work", || {
        (redis.entries_read(&stream, "c").unwrap_or(0) > 100).then_some(())
    });
    let a_read = redis.entries_read(&stream, "a");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(redis.entries_read(&stream, "a"), a_read, "a was stopped");
    // A broken file is refused; the running pipelines keep going.
    std::fs::write(&path, "[[pipeline]]\nname = \"b\"\nbatch = \"oops\"\n").unwrap();
    let before = redis.entries_read(&stream, "b").unwrap_or(0);
    eventually(WAIT, "b still reading after a broken file", || {
        (redis.entries_read(&stream, "b").unwrap_or(0) > before + 200).then_some(())
    });
    assert!(
        host.count_log("configuration reload refused") >= 1,
        "{}",
        host.log()
    );
    producing.store(false, Ordering::Relaxed);
    let total = producer.join().unwrap();

    for group in ["b", "c"] {
        eventually(WAIT, &format!("{group} read all {total}"), || {
            (redis.entries_read(&stream, group) == Some(total)
                && redis.pending(&stream, group) == 0)
                .then_some(())
        });
    }
    let ids: Vec<String> = redis.range(&stream).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len() as u64, total);
    for (group, out) in [("a", "out-a"), ("b", "out-b"), ("c", "out-c")] {
        let seen = emitted(&redis, out);
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{group} acked entries twice: {twice:?}");
        let read = redis.entries_read(&stream, group).unwrap() as usize;
        assert_eq!(
            redis.pending(&stream, group),
            0,
            "{group} left entries pending"
        );
        let missing: Vec<_> = ids[..read]
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "{group} lost {} entries: {missing:?}",
            missing.len()
        );
    }
    assert!(redis.range(&format!("{stream}:dlq")).is_empty());
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
}

#[test]
fn a_failing_task_in_one_pipeline_stops_the_process_with_its_name() {
    let redis = RedisServer::start();
    let stream = key("one-fails");
    for _ in 0..20 {
        redis.add(&stream, &[("action", "emit"), ("sleep_ms", "20")]);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamhost.toml");
    write_config(
        &path,
        &redis,
        &[
            emitting("steady", &stream, "out-steady", ""),
            emitting("doomed", &stream, "out-doomed", ""),
        ],
    );
    let started = Instant::now();
    let mut host = Host::spawn_env(
        &["run", "--config", &path.display().to_string()],
        &[("STREAMHOST_FAULT", "panic:doomed/committer")],
    );
    let status = host.wait_exit(WAIT);
    assert_eq!(status.code(), Some(70), "{}", host.log());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded by the grace period"
    );
    let log = host.log();
    assert!(
        log.contains("the committer task of pipeline \"doomed\" panicked: injected fault"),
        "{log}"
    );
    // The healthy pipeline was drained, not killed: nothing it read is left
    // in limbo (acked with its emit, or pending for the next owner).
    let pending = redis.pending_ids(&stream, "steady");
    let seen = emitted(&redis, "out-steady");
    let read = redis.entries_read(&stream, "steady").unwrap_or(0) as usize;
    for (id, _) in redis.range(&stream).iter().take(read) {
        assert!(pending.contains(id) || seen.contains_key(id), "{id} lost");
    }
}

/// A reload is all or nothing: a new configuration whose plugin does not
/// load is refused before anything is drained, and the pipeline keeps
/// serving on its old settings.
#[test]
fn a_reload_whose_plugin_does_not_load_changes_nothing() {
    let redis = RedisServer::start();
    let stream = key("bad-plugin-reload");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamhost.toml");
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm garbage").unwrap();
    let good = emitting("x", &stream, "out-x", "");
    write_config(&path, &redis, std::slice::from_ref(&good));
    let host = Host::spawn(&["run", "--config", &path.display().to_string()]);
    let first = redis.add(&stream, &[("action", "emit")]);
    eventually(WAIT, "served before the reload", || {
        emitted(&redis, "out-x").contains_key(&first).then_some(())
    });
    let bad = good.replace(
        &plugin("misbehave").display().to_string(),
        &broken.display().to_string(),
    );
    write_config(&path, &redis, &[bad]);
    host.wait_for_log("configuration reload refused", WAIT);
    let second = redis.add(&stream, &[("action", "emit")]);
    eventually(WAIT, "still served after the refused reload", || {
        emitted(&redis, "out-x").contains_key(&second).then_some(())
    });
    assert_eq!(redis.pending(&stream, "x"), 0);
    assert_eq!(host.count_log("pipeline changed"), 0, "nothing was drained");
}
