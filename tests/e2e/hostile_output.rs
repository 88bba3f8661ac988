//! Hostile plugin output: log floods, giant lines, forged log lines and giant
//! failure reasons are bounded (`--max-log-rate`, `--max-message-size`) and
//! escaped; within the limits every line comes through whole.

use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, fields_map, key};

const WAIT: Duration = Duration::from_secs(30);

/// Waits until the host has handled everything in `stream`.
fn settle(redis: &RedisServer, stream: &str, n: u64) {
    eventually(WAIT, "every entry handled", || {
        (redis.entries_read(stream, "g") == Some(n) && redis.pending(stream, "g") == 0)
            .then_some(())
    });
}

#[test]
fn a_log_flood_is_cut_to_the_rate_and_the_drops_are_counted() {
    let redis = RedisServer::start();
    let stream = key("log-flood");
    redis.add(&stream, &[("action", "log-flood"), ("n", "2000")]);
    redis.add(&stream, &[("action", "print-flood"), ("n", "2000")]);
    let host = Host::misbehave(
        &redis,
        &stream,
        &["--max-log-rate", "50", "--concurrency", "1"],
    );
    settle(&redis, &stream, 2);
    host.wait_for_log("plugin log lines dropped (over --max-log-rate)", WAIT);
    let logged = host.count_log("flood line");
    assert!(
        (50..=120).contains(&logged),
        "4000 lines at --max-log-rate 50 came through as {logged}"
    );
    // Drops are reported at most once a second: a line more than a second
    // later, let through, brings the last report. Then every line sent is
    // either logged or counted dropped.
    std::thread::sleep(Duration::from_millis(1100));
    redis.add(&stream, &[("action", "log-flood"), ("n", "1")]);
    settle(&redis, &stream, 3);
    let (logged, dropped) = eventually(WAIT, "4001 lines logged or counted dropped", || {
        let log = host.log();
        let logged = log.lines().filter(|l| l.contains("flood line")).count() as u64;
        let dropped: u64 = log
            .lines()
            .filter(|l| l.contains("plugin log lines dropped"))
            .map(|l| {
                let at = l.find("dropped=").expect("a dropped= field") + "dropped=".len();
                let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u64>().unwrap()
            })
            .sum();
        (logged + dropped == 4001).then_some((logged, dropped))
    });
    assert!(dropped >= 3_800, "{logged} logged, {dropped} dropped");
}

#[test]
fn log_lines_within_the_rate_all_come_through() {
    let redis = RedisServer::start();
    let stream = key("log-ok");
    redis.add(&stream, &[("action", "log-flood"), ("n", "30")]);
    redis.add(&stream, &[("action", "print-flood"), ("n", "30")]);
    let host = Host::misbehave(&redis, &stream, &["--max-log-rate", "100"]);
    settle(&redis, &stream, 2);
    eventually(WAIT, "all 60 lines", || {
        (host.count_log("flood line") == 60).then_some(())
    });
    assert_eq!(host.count_log("plugin log lines dropped"), 0);
}

#[test]
fn a_plugin_cannot_forge_host_log_lines() {
    let redis = RedisServer::start();
    let stream = key("log-forge");
    redis.add(&stream, &[("action", "log-forge")]);
    let host = Host::misbehave(&redis, &stream, &[]);
    settle(&redis, &stream, 1);
    host.wait_for_log("innocent", WAIT);
    let log = host.log();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "the plugin's newline started a line of its own:\n{log}"
    );
    let line = log.lines().find(|l| l.contains("innocent")).unwrap();
    assert!(
        line.contains("innocent\\n2026-01-01T00:00:00Z") && line.contains("\\u{1b}[31m"),
        "{line}"
    );
}

#[test]
fn giant_log_lines_and_failure_reasons_are_cut_to_the_message_size() {
    let redis = RedisServer::start();
    let stream = key("giant-text");
    redis.add(&stream, &[("action", "long-log"), ("n", "200000")]);
    let giant = redis.add(&stream, &[("action", "long-reason"), ("n", "200000")]);
    let small = redis.add(&stream, &[("action", "long-reason"), ("n", "900")]);
    redis.add(&stream, &[("action", "long-log"), ("n", "900")]);
    let host = Host::misbehave(&redis, &stream, &["--max-message-size", "1KiB"]);
    settle(&redis, &stream, 4);
    let dlq = redis.wait_for_len(&format!("{stream}:dlq"), 2);
    let reason = |id: &str| {
        dlq.iter()
            .map(|(_, f)| fields_map(f))
            .find(|f| f["source_id"] == id)
            .map(|f| f["reason"].to_owned())
            .unwrap()
    };
    let cut = reason(&giant);
    assert!(cut.len() < 1100, "a reason of {} bytes", cut.len());
    assert!(
        cut.ends_with("… [198976 bytes cut]"),
        "{}",
        &cut[cut.len() - 40..]
    );
    assert_eq!(reason(&small), "R".repeat(900), "within the limit: whole");
    eventually(WAIT, "the 900-byte line, whole", || {
        host.log()
            .lines()
            .any(|l| l.contains(&"L".repeat(900)) && !l.contains(&"L".repeat(901)))
            .then_some(())
    });
    let longest = host
        .log()
        .lines()
        .filter(|l| l.contains("LLLL"))
        .map(str::len)
        .max()
        .unwrap();
    assert!(longest < 1500, "a log line of {longest} bytes");
}
