//! `host demo`: the reference scenario against a given Redis or a private
//! redis-server it starts itself, the reset of its own keys (and of nothing
//! else), and the message when no Redis can be had.

use std::collections::HashMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::{Commands, Connection, Value};

use crate::support::http::{free_port, get};
use crate::support::{Host, RedisServer, eventually};

const STREAM: &str = "demo:events:orders";
const TOKEN: &str = "demo-test-token";

/// `host demo` against `redis_url`, its dashboard on a free port (returned),
/// a known token, and `extra` flags; once it has printed the dashboard's link.
fn demo(redis_url: &str, extra: &[&str]) -> (Host, u16) {
    demo_env(redis_url, extra, &[])
}

/// [`demo`] with extra environment variables.
fn demo_env(redis_url: &str, extra: &[&str], env: &[(&str, &str)]) -> (Host, u16) {
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let mut args = vec!["demo", "--redis", redis_url, "--http", &http];
    args.extend(extra);
    let env: Vec<(&str, &str)> = [("STREAMHOST_HTTP_TOKEN", TOKEN)]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let host = Host::spawn_capturing(&args, &env);
    let link = format!("dashboard: http://{http}/#token={TOKEN}");
    eventually(
        Duration::from_secs(60),
        "the dashboard's link on stdout",
        || host.stdout().iter().any(|l| l == &link).then_some(()),
    );
    (host, port)
}

/// Waits until the trickle has appended `n` entries; returns their ids.
fn trickled(con: &mut Connection, n: usize) -> Vec<String> {
    eventually(
        Duration::from_secs(30),
        &format!("{n} entries from the trickle"),
        || {
            let rows: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(STREAM)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(n)
                .query(con)
                .ok()?;
            (rows.len() == n).then(|| rows.into_iter().map(|(id, _)| id).collect())
        },
    )
}

/// The `redis: URL …` line the demo printed (after the dashboard's).
fn printed_redis(host: &Host) -> String {
    let line = eventually(Duration::from_secs(10), "a redis: line", || {
        host.stdout().into_iter().find(|l| l.starts_with("redis: "))
    });
    line["redis: ".len()..]
        .split_whitespace()
        .next()
        .expect("a URL")
        .to_owned()
}

fn conn(url: &str) -> Connection {
    eventually(Duration::from_secs(10), "a redis connection", || {
        redis::Client::open(url).ok()?.get_connection().ok()
    })
}

/// Each group of the stream with its `pending` and `entries-read` (XINFO GROUPS).
fn groups(con: &mut Connection) -> HashMap<String, (u64, u64)> {
    let rows: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(STREAM)
        .query(con)
        .unwrap_or_default();
    rows.into_iter()
        .map(|g| {
            let int = |k: &str| redis::from_redis_value::<u64>(g[k].clone()).unwrap_or(0);
            let name: String = redis::from_redis_value(g["name"].clone()).expect("a name");
            (name, (int("pending"), int("entries-read")))
        })
        .collect()
}

/// The consumers of `group`, sorted (XINFO CONSUMERS).
fn consumers(con: &mut Connection, group: &str) -> Vec<String> {
    let rows: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(STREAM)
        .arg(group)
        .query(con)
        .unwrap_or_default();
    let mut names: Vec<String> = rows
        .into_iter()
        .map(|c| redis::from_redis_value(c["name"].clone()).expect("a name"))
        .collect();
    names.sort();
    names
}

/// Waits until the demo's three consumers are registered and both groups
/// have read and acked every entry in `ids` (nothing of them pending).
fn wait_for_both_groups(con: &mut Connection, ids: &[String]) {
    eventually(
        Duration::from_secs(60),
        "notifications-1, notifications-2 and analytics-1 registered",
        || {
            (consumers(con, "notifications") == ["notifications-1", "notifications-2"]
                && consumers(con, "analytics") == ["analytics-1"])
            .then_some(())
        },
    );
    eventually(
        Duration::from_secs(60),
        "every produced entry read and acked by both groups",
        || {
            let groups = groups(con);
            let done = ["notifications", "analytics"].iter().all(|g| {
                groups
                    .get(*g)
                    .is_some_and(|(_, read)| *read >= ids.len() as u64)
            });
            let pending: Vec<(String, String, u64, u64)> = ["notifications", "analytics"]
                .iter()
                .flat_map(|g| {
                    redis::cmd("XPENDING")
                        .arg(STREAM)
                        .arg(*g)
                        .arg("-")
                        .arg("+")
                        .arg(1000)
                        .query::<Vec<(String, String, u64, u64)>>(con)
                        .unwrap_or_default()
                })
                .collect();
            let ours_pending = pending.iter().any(|(id, ..)| ids.contains(id));
            (done && !ours_pending).then_some(())
        },
    );
}

fn stop(host: &mut Host) {
    host.signal(libc::SIGTERM);
    let status = host.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}; log:\n{}", host.log());
}

#[test]
fn demo_runs_two_groups_on_a_given_redis_and_exits_cleanly() {
    let redis = RedisServer::start();
    let (mut host, port) = demo(&redis.url(), &["--rate", "20"]);
    assert_eq!(printed_redis(&host), redis.url());
    let mut con = redis.conn();
    let ids = trickled(&mut con, 30);
    wait_for_both_groups(&mut con, &ids);
    let outbox: usize = con.xlen("notifications:outbox").unwrap();
    let totals: usize = con.xlen("analytics:totals").unwrap();
    assert!(outbox >= 30, "one notification per order: {outbox}");
    assert!(totals >= 30, "one running total per order: {totals}");
    let info = get(port, "/api/info").expect("the dashboard answers");
    assert_eq!(info.status, 200);
    assert!(info.body.contains(r#""demo":true"#), "{}", info.body);
    stop(&mut host);
}

#[test]
fn demo_starts_a_private_redis_when_nothing_answers_and_stops_it() {
    let nothing = format!("redis://127.0.0.1:{}", free_port());
    let (mut host, _) = demo(&nothing, &["--rate", "20"]);
    let private = printed_redis(&host);
    assert_ne!(private, nothing);
    let line = host
        .stdout()
        .into_iter()
        .find(|l| l.starts_with("redis: "))
        .unwrap();
    assert!(line.contains("private redis-server"), "{line}");
    let pid: u32 = line
        .split("pid ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .expect("the private server's pid");
    let mut con = conn(&private);
    let ids = trickled(&mut con, 10);
    wait_for_both_groups(&mut con, &ids);
    drop(con);

    stop(&mut host);
    let addr = private.trim_start_matches("redis://");
    assert!(
        TcpStream::connect(addr).is_err(),
        "the private redis-server still answers at {addr}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the private redis-server (pid {pid}) is still there"
    );
}

#[test]
fn reset_deletes_only_the_demo_keys_and_no_reset_keeps_them() {
    let redis = RedisServer::start();
    let mut con = redis.conn();
    let mut old = HashMap::new();
    for key in [
        STREAM,
        "demo:events:orders:dlq",
        "notifications:outbox",
        "analytics:totals",
        "demo:events:other",
    ] {
        let id: String = con.xadd(key, "*", &[("old", "1")]).unwrap();
        old.insert(key, id);
    }
    let () = con.set("unrelated", "keep me").unwrap();
    let still_there = |con: &mut Connection, key: &str| -> bool {
        let rows: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg(&old[key])
            .arg(&old[key])
            .query(con)
            .unwrap();
        !rows.is_empty()
    };

    // No trickle: what the groups read is what the test left there.
    let (mut kept, _) = demo(&redis.url(), &["--no-reset", "--rate", "0"]);
    // Groups created at 0 read the old entry: the run is well under way.
    wait_for_both_groups(&mut con, std::slice::from_ref(&old[STREAM]));
    stop(&mut kept);
    for key in old.keys() {
        assert!(still_there(&mut con, key), "--no-reset removed {key}");
    }

    let (mut reset, _) = demo(&redis.url(), &["--rate", "0"]);
    reset.wait_for_log("reset: deleted 4 demo key(s)", Duration::from_secs(10));
    for key in [
        STREAM,
        "demo:events:orders:dlq",
        "notifications:outbox",
        "analytics:totals",
    ] {
        assert!(!still_there(&mut con, key), "{key} was not reset");
    }
    assert!(still_there(&mut con, "demo:events:other"));
    let unrelated: String = con.get("unrelated").unwrap();
    assert_eq!(unrelated, "keep me");
    stop(&mut reset);
}

#[test]
fn without_redis_server_on_path_the_demo_says_how_to_install_it() {
    let nothing = format!("redis://127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().display().to_string();
    let start = Instant::now();
    let (status, stdout, stderr) = Host::output_env(
        &["demo", "--redis", &nothing, "--http", &http],
        &[("PATH", &path)],
    );
    assert!(!status.success(), "{status:?}");
    assert_eq!(status.code(), Some(69), "EX_UNAVAILABLE: {stderr}");
    assert!(
        stderr.contains("redis-server is not installed")
            && stderr.contains("apt-get install redis-server")
            && stderr.contains("brew install redis"),
        "{stderr}"
    );
    assert!(
        stdout.is_empty(),
        "no link for a demo that did not start: {stdout}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

/// The processes whose parent is `parent` and whose name is `name` (/proc).
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // pid (comm) state ppid …; comm may hold spaces and parentheses.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let ppid = stat[close + 1..].split_whitespace().nth(1);
            &stat[open + 1..close] == name && ppid == Some(&parent.to_string())
        })
        .collect()
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next());
        !matches!(state, Some("Z" | "X"))
    })
}

/// What is in `dir`.
fn listing(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Sends SIGINT and waits until the host has taken it (so that a second
/// one is a second, not merged with the first by the kernel or tokio).
fn interrupt(host: &Host) {
    let before = host.count_log("shutdown requested");
    host.signal(libc::SIGINT);
    eventually(Duration::from_secs(10), "the host took the SIGINT", || {
        (host.count_log("shutdown requested") > before).then_some(())
    });
}

#[test]
fn a_second_ctrl_c_leaves_no_temporary_directory_and_no_redis_server() {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().display().to_string();
    let nothing = format!("redis://127.0.0.1:{}", free_port());
    let (mut host, _) = demo_env(&nothing, &["--rate", "20"], &[("TMPDIR", &tmpdir)]);
    let private = printed_redis(&host);
    let pid = children_named(host.pid(), "redis-server");
    assert_eq!(pid.len(), 1, "one private redis-server: {pid:?}");
    let mut con = conn(&private);
    trickled(&mut con, 5);
    // The pipelines run (their plugins compiled): the signal then meets a
    // drain, not the start.
    eventually(Duration::from_secs(60), "both groups consuming", || {
        let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(STREAM)
            .query(&mut con)
            .ok()?;
        let consuming = groups
            .iter()
            .filter(|g| matches!(g.get("consumers"), Some(Value::Int(n)) if *n > 0))
            .count();
        (consuming == 2).then_some(())
    });
    assert_eq!(
        listing(tmp.path()).len(),
        2,
        "its data and plugin directories"
    );
    // Redis holds every command for a while, so the drain the first signal
    // starts is still going when the second one lands.
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5000)
        .arg("ALL")
        .query(&mut con)
        .unwrap();
    interrupt(&host);
    host.signal(libc::SIGINT);
    let status = host.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "{}", host.log());
    assert!(
        listing(tmp.path()).is_empty(),
        "left behind: {:?}",
        listing(tmp.path())
    );
    assert!(
        !alive(pid[0]),
        "the private redis-server (pid {}) is still running",
        pid[0]
    );
}

#[test]
fn a_signal_while_the_private_redis_server_starts_leaves_no_redis_server() {
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().display().to_string();
    // A redis-server that takes a second to start listening: the window in
    // which the demo has spawned it but not yet seen it answer.
    let bin = tempfile::tempdir().unwrap();
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v redis-server"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let slow = bin.path().join("redis-server");
    std::fs::write(
        &slow,
        format!("#!/bin/sh\nsleep 1\nexec {} \"$@\"\n", real.trim()),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let nothing = format!("redis://127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut host = Host::spawn_capturing(
        &["demo", "--redis", &nothing, "--http", &http],
        &[("TMPDIR", &tmpdir), ("PATH", &path)],
    );
    let child = eventually(Duration::from_secs(30), "the redis-server child", || {
        children_named(host.pid(), "redis-server").first().copied()
    });
    interrupt(&host);
    // The first signal may have ended the start-up (0) before this one
    // lands (130): either way nothing may be left.
    host.signal(libc::SIGINT);
    let status = host.wait_exit(Duration::from_secs(30));
    assert!(
        matches!(status.code(), Some(0 | 130)),
        "{status:?}: {}",
        host.log()
    );
    assert!(
        host.stdout().is_empty(),
        "it never started: {:?}",
        host.stdout()
    );
    eventually(
        Duration::from_secs(5),
        "the redis-server child gone",
        || (!alive(child)).then_some(()),
    );
    assert!(
        listing(tmp.path()).is_empty(),
        "left behind: {:?}",
        listing(tmp.path())
    );
}
