//! `host produce` and `host status` against a real server: what they report
//! agrees with XINFO / XPENDING read directly, `status --check` exits 3
//! exactly when a threshold is crossed, and bad arguments are refused with
//! a clear message and a non-zero status.

use std::time::Duration;

use redis::Value;
use serde_json::Value as Json;

use streamhost::ops::status::CONSUMERS_LISTED;

use crate::support::{Host, RedisServer, key};

/// Runs `host ARGS --redis URL`; returns (exit code, stdout, stderr).
pub fn host(redis: &RedisServer, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    let url = redis.url();
    all.extend(["--redis", &url]);
    let (status, out, err) = Host::output_env(&all, &[]);
    (status.code().unwrap_or(-1), out, err)
}

/// Runs a command that must succeed and prints JSON; returns the JSON.
pub fn json(redis: &RedisServer, args: &[&str]) -> Json {
    let (code, out, err) = host(redis, args);
    assert_eq!(code, 0, "host {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn xinfo_groups(
    redis: &RedisServer,
    stream: &str,
) -> Vec<std::collections::HashMap<String, Value>> {
    let rows: Vec<std::collections::HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(&mut redis.conn())
        .unwrap();
    rows
}

fn text(v: &Value) -> String {
    redis::from_redis_value(v.clone()).unwrap()
}

#[test]
fn produce_then_status_agree_with_xinfo_and_xpending() {
    let redis = RedisServer::start();
    let stream = key("ops-status");
    let report = json(
        &redis,
        &[
            "produce",
            "--stream",
            &stream,
            "--count",
            "50",
            "--json",
            "n=1",
            "kind=test",
        ],
    );
    let ids: Vec<String> = redis.range(&stream).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 50);
    assert_eq!(report["added"], 50);
    assert_eq!(report["first_id"], ids[0].as_str());
    assert_eq!(report["last_id"], ids[49].as_str());
    assert_eq!(
        redis.range(&stream)[7].1,
        vec![
            ("n".to_owned(), "1".to_owned()),
            ("kind".to_owned(), "test".to_owned())
        ]
    );

    // Group `busy`: 20 delivered (to two consumers), 5 acked; `idle`: nothing read.
    redis.read_as(&stream, "busy", "c1", 12);
    redis.read_as(&stream, "busy", "c2", 8);
    redis.ack(&stream, "busy", &ids[..5]);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("idle")
        .arg("0")
        .query(&mut redis.conn())
        .unwrap();

    let all = json(
        &redis,
        &["status", "--stream", &stream, "--json", "--oldest", "3"],
    );
    let s = &all[0];
    let xlen: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(s["length"], xlen);
    assert_eq!(s["first_id"], ids[0].as_str());
    assert_eq!(s["last_id"], ids[49].as_str());
    let groups = s["groups"].as_array().unwrap();
    let xinfo = xinfo_groups(&redis, &stream);
    assert_eq!(groups.len(), xinfo.len());
    for row in &xinfo {
        let name = text(&row["name"]);
        let g = groups.iter().find(|g| g["name"] == name.as_str()).unwrap();
        assert_eq!(
            g["last_delivered_id"],
            text(&row["last-delivered-id"]).as_str(),
            "{name}"
        );
        let pending: u64 = redis::from_redis_value(row["pending"].clone()).unwrap();
        let lag: u64 = redis::from_redis_value(row["lag"].clone()).unwrap();
        assert_eq!(g["pending"], pending, "{name}");
        assert_eq!(g["lag"], lag, "{name}");
    }
    let busy = groups.iter().find(|g| g["name"] == "busy").unwrap();
    assert_eq!(busy["pending"], 15);
    assert_eq!(busy["lag"], 30);
    let consumers: Vec<(String, u64)> = busy["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["pending"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(consumers, [("c1".to_owned(), 7), ("c2".to_owned(), 8)]);
    // The oldest pending entries are XPENDING's first rows.
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("busy")
        .arg("-")
        .arg("+")
        .arg(3)
        .query(&mut redis.conn())
        .unwrap();
    let oldest: Vec<(String, String, u64)> = busy["oldest_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["consumer"].as_str().unwrap().to_owned(),
                p["deliveries"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, u64)> =
        rows.into_iter().map(|(id, c, _, d)| (id, c, d)).collect();
    assert_eq!(oldest, expected);
    assert_eq!(oldest[0].0, ids[5]);
    // Retention: group `idle` needs everything; a maxlen of 10 is held back by it.
    let r = &json(
        &redis,
        &["status", "--stream", &stream, "--json", "--maxlen", "10"],
    )[0]["retention"];
    assert_eq!(r["floor"], ids[0].as_str());
    assert_eq!(r["held_back"], true);
    assert_eq!(r["held_by"], "idle");

    // The table names the same figures.
    let (code, out, _) = host(&redis, &["status", "--stream", &stream]);
    assert_eq!(code, 0);
    let busy_line = out.lines().find(|l| l.starts_with("busy ")).unwrap();
    let cols: Vec<&str> = busy_line.split_whitespace().collect();
    assert_eq!(cols, ["busy", ids[19].as_str(), "30", "15", "2"], "{out}");
}

#[test]
fn status_check_exits_non_zero_exactly_when_a_threshold_is_crossed() {
    let redis = RedisServer::start();
    let stream = key("ops-check");
    for i in 0..40 {
        redis.add(&stream, &[("n", &i.to_string())]);
    }
    redis.read_as(&stream, "g", "c", 10);
    // The retention floor is the oldest pending entry, even when none is listed.
    let first = redis.range(&stream)[0].0.clone();
    let all = json(
        &redis,
        &[
            "status", "--stream", &stream, "--json", "--oldest", "0", "--maxlen", "5",
        ],
    );
    assert_eq!(all[0]["retention"]["floor"], first.as_str());
    assert_eq!(all[0]["groups"][0]["oldest_pending"], Json::Array(vec![]));
    assert_eq!(all[0]["retention"]["held_by"], "g");
    let dlq = format!("{stream}:dlq");
    for _ in 0..3 {
        redis.add(
            &dlq,
            &[
                ("kind", "permanent"),
                ("reason", "bad amount"),
                ("field:n", "1"),
            ],
        );
    }
    let check = |extra: &[&str]| {
        let mut args = vec!["status", "--stream", stream.as_str(), "--check"];
        args.extend_from_slice(extra);
        host(&redis, &args)
    };
    // Lag is 30.
    assert_eq!(check(&["--max-lag", "30"]).0, 0);
    let (code, _, err) = check(&["--max-lag", "29"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("--max-lag") && err.contains("group g lags 30"),
        "{err}"
    );
    // Pending for at least 300ms.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(check(&["--max-pending-age", "1h"]).0, 0);
    let (code, _, err) = check(&["--max-pending-age", "200ms"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("--max-pending-age"), "{err}");
    // Three dead letters within the window.
    assert_eq!(check(&["--max-dlq-growth", "3", "--window", "1m"]).0, 0);
    let (code, _, err) = check(&["--max-dlq-growth", "2", "--window", "1m"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("--max-dlq-growth") && err.contains("3 dead letters"),
        "{err}"
    );
    // All at once: each crossed threshold is named, and only those.
    let (code, _, err) = check(&[
        "--max-lag",
        "5",
        "--max-pending-age",
        "1h",
        "--max-dlq-growth",
        "1",
    ]);
    assert_eq!(code, 3);
    assert!(
        err.contains("--max-lag")
            && err.contains("--max-dlq-growth")
            && !err.contains("--max-pending-age"),
        "{err}"
    );
    let (code, _, err) = check(&[
        "--max-lag",
        "100",
        "--max-pending-age",
        "1h",
        "--max-dlq-growth",
        "10",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let redis = RedisServer::start();
    let stream = key("ops-bad");
    redis.add(&stream, &[("a", "1")]);
    let (code, _, err) = host(&redis, &["status", "--stream", "test:nope"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("stream \"test:nope\" does not exist"), "{err}");
    let (code, _, err) = host(&redis, &["trim", "--stream", "test:nope", "--maxlen", "1"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("does not exist"), "{err}");
    let (code, _, err) = host(&redis, &["dlq", "list", "--stream", "test:nope"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("neither stream"), "{err}");
    let (code, _, err) = host(&redis, &["dlq", "show", "--stream", &stream, "not-an-id"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("not a stream id"), "{err}");
    let (code, _, err) = host(
        &redis,
        &[
            "dlq",
            "list",
            "--stream",
            &stream,
            "--since",
            "yesterday-ish",
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("not a stream id"), "{err}");
    let (code, _, err) = host(&redis, &["status"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--stream KEY is required"), "{err}");
    let (code, _, err) = host(
        &redis,
        &[
            "status",
            "--stream",
            &stream,
            "--config",
            "/nonexistent.toml",
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("--redis cannot be combined with --config"),
        "{err}"
    );

    // A malformed JSON line: fatal by default (lines before it are added), skipped on request.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        "{\"a\":\"1\"}\n{\"a\": oops}\n\n{\"a\":\"3\",\"b\":4}\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let out = key("ops-jsonl");
    let (code, _, err) = host(
        &redis,
        &["produce", "--stream", &out, "--from-jsonl", &path],
    );
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("line 2") && err.contains("events.jsonl"),
        "{err}"
    );
    assert_eq!(redis.range(&out).len(), 1);
    let (code, stdout, err) = host(
        &redis,
        &[
            "produce",
            "--stream",
            &out,
            "--from-jsonl",
            &path,
            "--on-error",
            "skip",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("skipped") && err.contains("line 2"), "{err}");
    let report: Json = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (report["added"].as_u64(), report["skipped"].as_u64()),
        (Some(2), Some(1))
    );
    let last = redis.range(&out).pop().unwrap().1;
    assert_eq!(
        last,
        vec![
            ("a".to_owned(), "3".to_owned()),
            ("b".to_owned(), "4".to_owned())
        ]
    );
    let (code, _, err) = host(
        &redis,
        &[
            "produce",
            "--stream",
            &out,
            "--from-jsonl",
            "/nonexistent.jsonl",
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("cannot read /nonexistent.jsonl"), "{err}");
}

#[test]
fn demo_orders_and_a_steady_rate() {
    let redis = RedisServer::start();
    let stream = key("ops-demo");
    let report = json(
        &redis,
        &[
            "produce",
            "--stream",
            &stream,
            "--demo-orders",
            "12",
            "--json",
        ],
    );
    assert_eq!(report["added"], 12);
    let entries = redis.range(&stream);
    let kinds: Vec<&str> = entries.iter().map(|(_, f)| f[0].1.as_str()).collect();
    assert_eq!(&kinds[..3], ["order.placed", "order.paid", "order.shipped"]);
    assert!(entries.iter().all(|(_, f)| {
        f.iter()
            .map(|(k, _)| k.as_str())
            .eq(["type", "order_id", "customer", "amount", "ts_ms"])
    }));
    // 20 entries at 40/s: their ids (Redis's clock) span about half a
    // second, in batches of 2 (a 20th of the rate) about 50 ms apart.
    let report = json(
        &redis,
        &[
            "produce", "--stream", &stream, "--count", "20", "--rate", "40/s", "--json", "x=y",
        ],
    );
    assert_eq!(report["added"], 20);
    let entries = redis.range(&stream);
    assert_eq!(entries.len(), 32);
    let ms: Vec<u64> = entries[12..]
        .iter()
        .map(|(id, _)| id.split('-').next().unwrap().parse().unwrap())
        .collect();
    let span = ms[19] - ms[0];
    assert!(
        (450..2_000).contains(&span),
        "20 entries at 40/s span {span} ms"
    );
    // No burst: no three entries within one batch's ~50 ms.
    for w in ms.windows(3) {
        assert!(w[2] - w[0] >= 40, "a burst: {ms:?}");
    }
}

#[test]
fn the_connection_and_streams_come_from_a_config_file() {
    let redis = RedisServer::start();
    let (a, b) = (key("ops-cfg-a"), key("ops-cfg-b"));
    redis.add(&a, &[("n", "1")]);
    redis.add(&b, &[("n", "2")]);
    redis.add(&b, &[("n", "3")]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipelines.toml");
    std::fs::write(
        &file,
        format!(
            "[redis]\nurl = \"{}\"\n\n[[pipeline]]\nname = \"first\"\nstream = \"{a}\"\ngroup = \"ga\"\nplugin = \"x.wasm\"\n\n\
             [[pipeline]]\nname = \"second\"\nstream = \"{b}\"\ngroup = \"gb\"\nplugin = \"x.wasm\"\ndlq = \"custom:dlq\"\nmaxlen = 1\n",
            redis.url()
        ),
    )
    .unwrap();
    let cfg = file.display().to_string();
    let run = |args: &[&str]| {
        let (status, out, err) = Host::output_env(args, &[]);
        (status.code().unwrap_or(-1), out, err)
    };
    // status: every pipeline's stream, with its DLQ and retention.
    let (code, out, err) = run(&["status", "--config", &cfg, "--json"]);
    assert_eq!(code, 0, "{err}");
    let all: Json = serde_json::from_str(&out).unwrap();
    let streams: Vec<(&str, u64, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stream"].as_str().unwrap(),
                s["length"].as_u64().unwrap(),
                s["dlq"]["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        streams,
        [
            (a.as_str(), 1, format!("{a}:dlq").as_str()),
            (b.as_str(), 2, "custom:dlq")
        ]
    );
    assert_eq!(all[1]["retention"]["maxlen"], 1);
    // One pipeline by name; a command needing one stream refuses to guess.
    let (code, out, err) = run(&["produce", "--config", &cfg, "--pipeline", "second", "x=1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("added 1 entries to {b}")), "{out}");
    assert_eq!(redis.range(&b).len(), 3);
    let (code, _, err) = run(&["produce", "--config", &cfg, "x=1"]);
    assert_eq!(code, 64);
    assert!(
        err.contains("declares 2 pipelines") && err.contains("first, second"),
        "{err}"
    );
    let (code, _, err) = run(&["status", "--config", &cfg, "--pipeline", "third"]);
    assert_eq!(code, 64);
    assert!(err.contains("no pipeline named \"third\""), "{err}");
    // STREAMHOST_REDIS still works for flags, as for `run`.
    let (status, out, err) = Host::output_env(
        &["status", "--stream", &a, "--json"],
        &[("STREAMHOST_REDIS", &redis.url())],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains(&a));
}

#[test]
fn status_watch_refreshes_until_interrupted() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let redis = RedisServer::start();
    let stream = key("ops-watch");
    redis.add(&stream, &[("n", "0")]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "status",
            "--redis",
            &redis.url(),
            "--stream",
            &stream,
            "--watch",
            "100ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A watchdog: a watch that never shows the change fails instead of hanging.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = Command::new("kill").arg(&pid).status();
    });
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen_one = false;
    let mut added = false;
    let mut saw_two = false;
    for line in lines {
        let line = line.unwrap();
        if line.contains(": 1 entries") {
            seen_one = true;
            if !added {
                redis.add(&stream, &[("n", "1")]);
                added = true;
            }
        }
        if line.contains(": 2 entries") {
            saw_two = true;
            break;
        }
    }
    assert!(saw_two, "a later frame showed the entry added meanwhile");
    assert!(
        seen_one && added,
        "the first frame showed one entry, a later one two"
    );
    assert!(child.try_wait().unwrap().is_none(), "still watching");
    // Interrupted, it stops watching and exits 0.
    let () = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .map(|s| assert!(s.success()))
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");

    // A reader that goes away (`| head`) ends the watch too: quietly, 0.
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "status",
            "--redis",
            &redis.url(),
            "--stream",
            &stream,
            "--watch",
            "100ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        let _ = Command::new("kill").arg(&pid).status();
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains(&stream), "{first}");
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}: {err}");
}

#[test]
fn status_lists_consumers_up_to_the_cap_and_counts_them_all() {
    let redis = RedisServer::start();
    let stream = key("ops-consumers");
    redis.add(&stream, &[("n", "1")]);
    redis.read_as(&stream, "g", "c000", 1);
    let add = |from: usize, to: usize| {
        let mut pipe = redis::pipe();
        for i in from..to {
            pipe.cmd("XGROUP")
                .arg("CREATECONSUMER")
                .arg(&stream)
                .arg("g")
                .arg(format!("c{i:03}"));
        }
        let _: Vec<Value> = pipe.query(&mut redis.conn()).unwrap();
    };
    let names = |g: &Json| -> Vec<String> {
        g["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // Exactly the cap: all listed, no marker.
    add(1, CONSUMERS_LISTED);
    let g = &json(&redis, &["status", "--stream", &stream, "--json"])[0]["groups"][0];
    assert_eq!(g["consumers_total"], CONSUMERS_LISTED);
    assert_eq!(names(g).len(), CONSUMERS_LISTED);
    assert_eq!(g["consumers"][0]["pending"], 1, "c000 holds the entry");
    let (code, out, err) = host(&redis, &["status", "--stream", &stream]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("consumers of g:"), "{out}");
    // One more: the first ones by name are listed, and the total is told.
    add(CONSUMERS_LISTED, CONSUMERS_LISTED + 1);
    let g = &json(&redis, &["status", "--stream", &stream, "--json"])[0]["groups"][0];
    assert_eq!(g["consumers_total"], CONSUMERS_LISTED + 1);
    let expected: Vec<String> = (0..CONSUMERS_LISTED).map(|i| format!("c{i:03}")).collect();
    assert_eq!(names(g), expected);
    let (code, out, err) = host(&redis, &["status", "--stream", &stream]);
    assert_eq!(code, 0, "{err}");
    let total = CONSUMERS_LISTED + 1;
    assert!(
        out.contains(&format!(
            "consumers of g (the first {CONSUMERS_LISTED} of {total}):"
        )),
        "{out}"
    );
    let line = out.lines().find(|l| l.starts_with("g ")).unwrap();
    assert_eq!(
        line.split_whitespace().last(),
        Some(total.to_string().as_str()),
        "{out}"
    );
}
