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
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let mut args = vec!["demo", "--redis", redis_url, "--http", &http];
    args.extend(extra);
    let host = Host::spawn_capturing(&args, &[("STREAMHOST_HTTP_TOKEN", TOKEN)]);
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

/// The `redis: URL …` line the demo printed.
fn printed_redis(host: &Host) -> String {
    let line = host
        .stdout()
        .into_iter()
        .find(|l| l.starts_with("redis: "))
        .expect("a redis: line");
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
