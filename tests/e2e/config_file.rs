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
    // Remove a, change b (its emits go to out-b2 now), add c.
    let b2 = b
        .replace("concurrency = 2", "concurrency = 1\nbatch = 50")
        .replace("\"out-b\"", "\"out-b2\"");
    write_config(&path, &redis, &[b2.clone(), c.clone()]);
    eventually(WAIT, "c at work, and b with its new settings", || {
        (redis.entries_read(&stream, "c").unwrap_or(0) > 100 && redis.range("out-b2").len() > 100)
            .then_some(())
    });
    // b restarted cleanly: everything its old settings committed came
    // before anything under the new ones.
    let ms_seq = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse().unwrap(), seq.parse().unwrap())
    };
    let (old_b, new_b) = (redis.range("out-b"), redis.range("out-b2"));
    assert!(
        ms_seq(&old_b.last().unwrap().0) < ms_seq(&new_b[0].0),
        "b's old pipeline drained before its new one committed"
    );
    // a drained and left its group: its consumer is gone, and it reads no more.
    eventually(WAIT, "a's consumer deleted", || {
        redis.consumers(&stream, "a").is_empty().then_some(())
    });
    let a_read = redis.entries_read(&stream, "a");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(redis.entries_read(&stream, "a"), a_read, "a was stopped");
    // A broken file is refused (once it has settled); the running
    // pipelines keep going.
    std::fs::write(&path, "[[pipeline]]\nname = \"b\"\nbatch = \"oops\"\n").unwrap();
    host.wait_for_log("configuration reload refused", WAIT);
    let before = redis.entries_read(&stream, "b").unwrap_or(0);
    eventually(WAIT, "b still reading after a broken file", || {
        (redis.entries_read(&stream, "b").unwrap_or(0) > before + 200).then_some(())
    });
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
    for (group, outs) in [
        ("a", &["out-a"][..]),
        ("b", &["out-b", "out-b2"][..]),
        ("c", &["out-c"][..]),
    ] {
        let mut seen = HashMap::new();
        for out in outs {
            for (id, n) in emitted(&redis, out) {
                *seen.entry(id).or_insert(0) += n;
            }
        }
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

#[test]
fn config_check_prints_every_http_setting_but_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("http.toml");
    std::fs::write(
        &path,
        "[http]\nlisten = \"9090\"\nadmin = true\n[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p.wasm\"\n",
    )
    .unwrap();
    let file = path.display().to_string();
    for args in [
        vec!["config", "check", &file],
        vec!["run", "--config", &file, "--check"],
    ] {
        let (status, stdout, stderr) =
            Host::output_env(&args, &[("STREAMHOST_HTTP_TOKEN", "tok-hunter2")]);
        assert!(status.success(), "{args:?}: {stderr}");
        assert!(
            stdout.contains("[http]\nlisten = \"127.0.0.1:9090\"\nadmin = true\n"),
            "{args:?}: {stdout}"
        );
        assert!(
            !stdout.contains("tok-hunter2") && !stderr.contains("tok-hunter2"),
            "{args:?}: the token shows:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn a_refusal_points_at_a_secrets_line_without_printing_the_secret() {
    const P: &str = "[[pipeline]]\nstream = \"s\"\ngroup = \"g\"\nplugin = \"p.wasm\"\n";
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("[redis]\nurl = \"redis://app:hunter2@127.0.0.1:notaport\"\n{P}"),
            "2:7: --redis redis://app:***@127.0.0.1:notaport is not a Redis URL",
        ),
        (
            format!("[redis]\npassword = \"hunter2\"\n{P}"),
            "2:1: a password is never written in the config file",
        ),
        (
            format!("{P}[pipeline.plugin-config]\napi-token = [\"hunter2\"]\n"),
            "6:13: plugin-config values are strings, numbers or booleans, not an array",
        ),
    ];
    for (i, (text, says)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("secret-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let file = path.display().to_string();
        for args in [
            vec!["config", "check", &file],
            vec!["run", "--config", &file],
        ] {
            let (status, stderr) = Host::output(&args);
            assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("{file}:{says}")),
                "{args:?}: {stderr}"
            );
            assert!(
                !stderr.contains("hunter2"),
                "{args:?}: the secret shows:\n{stderr}"
            );
        }
    }
}

/// A config file written in two parts with a pause between them, the first
/// part alone a valid file without pipeline `b`: the process waits for the
/// file to settle and never applies the partial version, so `b`'s consumer
/// is never drained (a drain deletes it from the group).
#[test]
fn a_half_written_config_file_is_never_applied() {
    use std::io::Write;
    let redis = RedisServer::start();
    let stream = key("half-written");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamhost.toml");
    let (a, b) = (
        emitting("a", &stream, "out-a", ""),
        emitting("b", &stream, "out-b", ""),
    );
    write_config(&path, &redis, &[a.clone(), b.clone()]);
    let whole = std::fs::read_to_string(&path).unwrap();
    let host = Host::spawn(&["run", "--config", &path.display().to_string()]);
    let first = redis.add(&stream, &[("action", "emit")]);
    eventually(WAIT, "b at work", || {
        emitted(&redis, "out-b").contains_key(&first).then_some(())
    });
    let consumer = redis.consumers(&stream, "b");
    assert_eq!(consumer.len(), 1, "{consumer:?}");

    let watching = Arc::new(AtomicBool::new(true));
    let monitor = {
        let (watching, url, stream) = (watching.clone(), redis.url(), stream.clone());
        std::thread::spawn(move || {
            let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut samples = 0u64;
            while watching.load(Ordering::Relaxed) {
                let consumers: Vec<redis::Value> = redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&stream)
                    .arg("b")
                    .query(&mut con)
                    .unwrap();
                if consumers.is_empty() {
                    return Err(format!("b's consumer was gone after {samples} samples"));
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(samples)
        })
    };
    let split = whole.find("[[pipeline]]\nname = \"b\"").unwrap();
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&whole.as_bytes()[..split]).unwrap();
    file.flush().unwrap();
    // Longer than a debounce, shorter than the settle period.
    std::thread::sleep(Duration::from_millis(500));
    file.write_all(&whole.as_bytes()[split..]).unwrap();
    drop(file);
    // A later change, applied only after the ones before it: once `c`
    // works, the two-part write has been dealt with.
    let c = emitting("c", &stream, "out-c", "");
    write_config(&path, &redis, &[a, b, c]);
    eventually(WAIT, "c at work", || {
        emitted(&redis, "out-c").contains_key(&first).then_some(())
    });
    watching.store(false, Ordering::Relaxed);
    let samples = monitor.join().unwrap();
    assert!(samples.is_ok(), "{samples:?}");
    assert_eq!(redis.consumers(&stream, "b"), consumer);
    let second = redis.add(&stream, &[("action", "emit")]);
    eventually(WAIT, "b still serving", || {
        emitted(&redis, "out-b").contains_key(&second).then_some(())
    });
    drop(host);
}

/// SIGTERM while a reload drains a pipeline whose handler outlasts the
/// grace: the other pipelines start draining at once, and the process exits
/// within the one documented bound (grace + 5s + under a second), not a
/// reload drain followed by a shutdown drain.
#[test]
fn sigterm_during_a_reload_drain_stops_within_the_shutdown_bound() {
    let redis = RedisServer::start();
    let stream = key("reload-drain-signal");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamhost.toml");
    let slow = |name: &str| {
        emitting(
            name,
            &stream,
            &format!("out-{name}"),
            "handler-timeout = \"30s\"\nclaim-idle = \"60s\"\nconcurrency = 1",
        )
        .replace("shutdown-grace = \"5s\"", "shutdown-grace = \"8s\"")
    };
    write_config(&path, &redis, &[slow("x"), slow("y")]);
    let mut host = Host::spawn(&["run", "--config", &path.display().to_string()]);
    for _ in 0..3 {
        redis.add(&stream, &[("action", "emit"), ("wasi_sleep_ms", "20000")]);
    }
    eventually(WAIT, "both pipelines busy", || {
        (redis.pending(&stream, "x") > 0 && redis.pending(&stream, "y") > 0).then_some(())
    });
    let changed = slow("x").replace("concurrency = 1", "concurrency = 1\nbatch = 50");
    write_config(&path, &redis, &[changed, slow("y")]);
    host.wait_for_log("pipeline changed: draining it", WAIT);
    let signalled = Instant::now();
    host.signal(libc::SIGTERM);
    let status = host.wait_exit(WAIT);
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", host.log());
    let bound = Duration::from_secs(8 + 5 + 1);
    assert!(
        took < bound,
        "took {took:?}, over {bound:?}:\n{}",
        host.log()
    );
}
