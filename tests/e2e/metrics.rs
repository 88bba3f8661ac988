//! `host run --http`: `/metrics` parses as Prometheus text and its numbers
//! match what the test made happen and what Redis says; `/healthz` and
//! `/readyz` follow Redis going away and coming back; a taken address is a
//! start-up error.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_parse::{LineInfo, Sample, Scrape, Value};
use redis::Commands;

use crate::support::http::{Answer, free_port, get};
use crate::support::{Host, RedisServer, eventually, fast, key, plugin};

const WAIT: Duration = Duration::from_secs(30);

/// Scrapes `/metrics`; every line must be a comment or a sample, and every
/// sample must have a `# TYPE`, or the test fails.
fn scrape(port: u16) -> Vec<Sample> {
    let answer = get(port, "/metrics").expect("/metrics answers");
    assert_eq!(answer.status, 200, "{}", answer.body);
    for line in answer.body.lines() {
        let ok = line.starts_with('#')
            || line.is_empty()
            || matches!(LineInfo::parse(line), LineInfo::Sample { .. });
        assert!(ok, "not a Prometheus text line: {line:?}");
    }
    let lines = answer.body.lines().map(|l| Ok(l.to_owned()));
    let parsed = Scrape::parse(lines).expect("parses as Prometheus text");
    assert!(!parsed.samples.is_empty());
    for s in &parsed.samples {
        let typed = answer.body.contains(&format!("# TYPE {} ", s.metric))
            || ["_sum", "_count"]
                .iter()
                .any(|suffix| s.metric.ends_with(suffix));
        assert!(typed, "{} has no # TYPE line", s.metric);
    }
    parsed.samples
}

/// The value of `metric` for the sample whose labels include `labels`.
fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => f64::NAN,
        })
}

/// DLQ records by kind.
fn dlq_kinds(redis: &RedisServer, dlq: &str) -> HashMap<String, usize> {
    let mut kinds = HashMap::new();
    for (_, fields) in redis.range(dlq) {
        let kind = fields
            .iter()
            .find(|(k, _)| k == "kind")
            .map(|(_, v)| v.clone())
            .expect("a DLQ record has a kind");
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

/// `(lag, pending)` of `group` as `XINFO GROUPS` reports them.
fn xinfo_group(redis: &RedisServer, stream: &str, group: &str) -> (Option<u64>, u64) {
    let mut c = redis.conn();
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(&mut c)
        .expect("XINFO GROUPS");
    let g = groups
        .into_iter()
        .find(|g| {
            g.get("name")
                .and_then(|n| redis::from_redis_value::<String>(n.clone()).ok())
                .as_deref()
                == Some(group)
        })
        .expect("the group exists");
    let lag = redis::from_redis_value::<Option<u64>>(g["lag"].clone()).expect("lag");
    let pending = redis::from_redis_value::<u64>(g["pending"].clone()).expect("pending");
    (lag, pending)
}

fn http_flag(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn metrics_count_what_happened_to_each_entry() {
    let redis = RedisServer::start();
    let stream = key("metrics-outcomes");
    let dlq = format!("{stream}:dlq");
    for _ in 0..6 {
        redis.add(&stream, &[("action", "ok")]);
    }
    for _ in 0..3 {
        redis.add(&stream, &[("action", "permanent")]);
    }
    for _ in 0..2 {
        // Fails once, then succeeds on its second delivery.
        redis.add(&stream, &[("action", "fail-until"), ("n", "2")]);
    }
    // Fails on deliveries 1 and 2; the third is over --max-deliveries.
    redis.add(&stream, &[("action", "retryable")]);
    let port = free_port();
    let listen = http_flag(port);
    let _host = Host::misbehave(
        &redis,
        &stream,
        &fast(&["--max-deliveries", "2", "--http", &listen]),
    );
    eventually(WAIT, "every entry settled", || {
        let kinds = dlq_kinds(&redis, &dlq);
        (kinds.values().sum::<usize>() == 4 && redis.pending(&stream, "g") == 0).then_some(())
    });
    let kinds = dlq_kinds(&redis, &dlq);
    assert_eq!(kinds.get("permanent"), Some(&3));
    assert_eq!(kinds.get("max-deliveries"), Some(&1));
    let (lag, pending) = xinfo_group(&redis, &stream, "g");
    assert_eq!((lag, pending), (Some(0), 0));

    let me = [
        ("pipeline", "g"),
        ("stream", stream.as_str()),
        ("group", "g"),
    ];
    let at = |samples: &[Sample], metric: &str| value(samples, metric, &me);
    // The counters are bumped right after Redis took each commit.
    let samples = eventually(Duration::from_secs(5), "the last ack counted", || {
        let s = scrape(port);
        (at(&s, "streamhost_entries_acked_total") == Some(8.0)).then_some(s)
    });
    let dead = |kind: &str| {
        let mut labels = me.to_vec();
        labels.push(("kind", kind));
        value(&samples, "streamhost_entries_dead_lettered_total", &labels)
    };
    assert_eq!(dead("permanent"), Some(kinds["permanent"] as f64));
    assert_eq!(dead("max-deliveries"), Some(1.0));
    assert_eq!(dead("trimmed"), Some(0.0));
    assert_eq!(dead("invalid"), Some(0.0));
    // Two fail-until entries once each, the retryable one twice.
    assert_eq!(at(&samples, "streamhost_entries_retried_total"), Some(4.0));
    // Every retry is released and reclaimed once; a reclaim is a read.
    assert_eq!(
        at(&samples, "streamhost_entries_reclaimed_total"),
        Some(4.0)
    );
    assert_eq!(at(&samples, "streamhost_entries_read_total"), Some(16.0));
    assert_eq!(at(&samples, "streamhost_entries_emitted_total"), Some(0.0));
    assert_eq!(at(&samples, "streamhost_commit_failures_total"), Some(0.0));
    assert_eq!(at(&samples, "streamhost_handler_traps_total"), Some(0.0));
    assert_eq!(at(&samples, "streamhost_entries_in_flight"), Some(0.0));
    assert_eq!(at(&samples, "streamhost_group_lag"), Some(0.0));
    assert_eq!(at(&samples, "streamhost_group_pending"), Some(0.0));
    assert_eq!(
        at(&samples, "streamhost_group_oldest_pending_age_seconds"),
        Some(0.0)
    );
    assert_eq!(value(&samples, "streamhost_redis_up", &[]), Some(1.0));
    assert_eq!(
        value(&samples, "streamhost_pipelines_running", &[]),
        Some(1.0)
    );
    // 15 handler calls: the third delivery of the retryable entry is
    // dead-lettered without one.
    let calls = samples
        .iter()
        .find(|s| {
            s.metric == "streamhost_handler_duration_seconds"
                && s.labels.get("pipeline") == Some("g")
        })
        .expect("the handler duration histogram");
    let Value::Histogram(buckets) = &calls.value else {
        panic!("a histogram: {calls:?}")
    };
    let inf = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .expect("a +Inf bucket");
    assert_eq!(inf.count, 15.0);
    assert_eq!(
        value(&samples, "streamhost_handler_duration_seconds_count", &me),
        Some(15.0)
    );
}

/// The sum and count of histogram `metric` for pipeline `g`.
fn histogram_sum_count(samples: &[Sample], metric: &str) -> (f64, f64) {
    let me = [("pipeline", "g")];
    let sum = value(samples, &format!("{metric}_sum"), &me).expect("a _sum");
    let count = value(samples, &format!("{metric}_count"), &me).expect("a _count");
    (sum, count)
}

/// Four entries that each keep a worker busy for 300 ms, read in one batch.
/// With one worker the second waits for the first call, the third for two,
/// the fourth for three: 1.8 s of waiting in all, less the time between
/// routing the first and the last (a wait starts when its entry is routed,
/// and on a loaded machine the first call can take the CPU from the reader
/// between two of them; 50 ms of that is allowed). With four workers they
/// all start at once, and the waits stay well under one call's time.
#[test]
fn handler_wait_counts_the_time_entries_queue_for_a_worker() {
    let waited = |concurrency: &str| {
        let redis = RedisServer::start();
        let stream = key("metrics-wait");
        for _ in 0..4 {
            redis.add(&stream, &[("action", "sleep"), ("ms", "300")]);
        }
        let port = free_port();
        let listen = http_flag(port);
        let _host = Host::misbehave(
            &redis,
            &stream,
            &fast(&["--concurrency", concurrency, "--http", &listen]),
        );
        // The counters are bumped once Redis took each ack.
        let samples = eventually(WAIT, "all four acked", || {
            get(port, "/metrics").filter(|a| a.status == 200)?;
            let s = scrape(port);
            (value(&s, "streamhost_entries_acked_total", &[("pipeline", "g")]) == Some(4.0))
                .then_some(s)
        });
        assert_eq!(xinfo_group(&redis, &stream, "g"), (Some(0), 0));
        let calls = histogram_sum_count(&samples, "streamhost_handler_duration_seconds");
        assert_eq!(calls.1, 4.0);
        assert!(calls.0 >= 1.2, "four calls of 300 ms: {calls:?}");
        histogram_sum_count(&samples, "streamhost_handler_wait_seconds")
    };
    let (queued, count) = waited("1");
    assert_eq!(count, 4.0, "one wait per call");
    assert!(
        queued >= 1.8 - 3.0 * 0.05,
        "one worker: waits of about 0, 0.3, 0.6 and 0.9 s, got {queued} s in all"
    );
    let (parallel, count) = waited("4");
    assert_eq!(count, 4.0);
    assert!(
        parallel < 0.9,
        "four workers: nobody waits for another's call, got {parallel} s in all"
    );
}

#[test]
fn group_gauges_agree_with_xinfo_and_xpending() {
    let redis = RedisServer::start();
    let stream = key("metrics-lag");
    // Three entries pending to another consumer (never reclaimed here).
    for _ in 0..3 {
        redis.add(&stream, &[("action", "ok")]);
    }
    redis.read_as(&stream, "g", "elsewhere", 3);
    let oldest_id = redis.pending_ids(&stream, "g")[0].clone();
    // One entry that holds the only worker and window slot for 20 s, and
    // four behind it that stay undelivered meanwhile.
    redis.add(&stream, &[("action", "wasi-sleep"), ("ms", "20000")]);
    for _ in 0..4 {
        redis.add(&stream, &[("action", "ok")]);
    }
    let port = free_port();
    let listen = http_flag(port);
    let _host = Host::misbehave(
        &redis,
        &stream,
        &[
            "--claim-idle",
            "1h",
            "--handler-timeout",
            "30s",
            "--concurrency",
            "1",
            "--batch",
            "1",
            "--max-in-flight",
            "1",
            "--http",
            &listen,
        ],
    );
    eventually(WAIT, "the sleeper delivered", || {
        (redis.pending(&stream, "g") == 4).then_some(())
    });
    let (lag, pending) = xinfo_group(&redis, &stream, "g");
    assert_eq!((lag, pending), (Some(4), 4));
    let samples = scrape(port);
    let me = [
        ("pipeline", "g"),
        ("stream", stream.as_str()),
        ("group", "g"),
    ];
    assert_eq!(value(&samples, "streamhost_group_lag", &me), Some(4.0));
    assert_eq!(value(&samples, "streamhost_group_pending", &me), Some(4.0));
    assert_eq!(
        value(&samples, "streamhost_entries_in_flight", &me),
        Some(1.0)
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as f64;
    let id_ms: f64 = oldest_id.split('-').next().unwrap().parse().unwrap();
    let expected = (now_ms - id_ms) / 1000.0;
    let age = value(&samples, "streamhost_group_oldest_pending_age_seconds", &me)
        .expect("an oldest pending age");
    assert!(
        age > 0.0 && (age - expected).abs() < 2.0,
        "oldest pending age {age} s, expected about {expected} s"
    );
}

#[test]
fn health_and_readiness_follow_redis_and_metrics_still_answer_without_it() {
    let mut redis = RedisServer::start();
    let stream = key("metrics-health");
    redis.add(&stream, &[("action", "ok")]);
    let port = free_port();
    // A bare port: loopback.
    let bare = port.to_string();
    let host = Host::misbehave(&redis, &stream, &fast(&["--http", &bare]));
    let ready = |a: &Answer| a.status == 200 && a.body == r#"{"status":"ok"}"#;
    eventually(WAIT, "ready", || get(port, "/readyz").filter(ready));
    let live = get(port, "/healthz").expect("/healthz answers");
    assert_eq!(
        (live.status, live.body.as_str()),
        (200, r#"{"status":"ok"}"#)
    );

    let acked = |s: &[Sample]| value(s, "streamhost_entries_acked_total", &[("pipeline", "g")]);
    eventually(WAIT, "the entry acked", || {
        (acked(&scrape(port)) == Some(1.0)).then_some(())
    });
    redis.kill();
    let not_ready = eventually(Duration::from_secs(5), "not ready", || {
        get(port, "/readyz").filter(|a| a.status == 503)
    });
    let body: serde_json::Value = serde_json::from_str(&not_ready.body).expect("JSON");
    assert_eq!(body["status"], "unavailable");
    let reasons = body["reasons"].as_array().expect("reasons");
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("redis: "))),
        "{body}"
    );
    let started = Instant::now();
    let again = get(port, "/readyz").expect("/readyz answers");
    assert_eq!(again.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let live = get(port, "/healthz").expect("/healthz answers");
    assert_eq!(live.status, 200, "Redis down is not the process dead");
    let started = Instant::now();
    let samples = scrape(port);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(value(&samples, "streamhost_redis_up", &[]), Some(0.0));
    assert!(value(&samples, "streamhost_group_lag", &[]).is_none());
    assert_eq!(acked(&samples), Some(1.0), "the counters still answer");

    redis.restart();
    eventually(WAIT, "ready again", || get(port, "/readyz").filter(ready));
    let samples = scrape(port);
    assert_eq!(
        value(&samples, "streamhost_redis_up", &[]),
        Some(1.0),
        "{}",
        host.log()
    );
}

#[test]
fn a_taken_address_is_a_start_up_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let addr = taken.local_addr().expect("its address").to_string();
    let (status, stderr) = Host::output(&[
        "run",
        "--redis",
        "redis://127.0.0.1:1",
        "--stream",
        "s",
        "--group",
        "g",
        "--plugin",
        &plugin("misbehave").display().to_string(),
        "--http",
        &addr,
    ]);
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (--http)")),
        "{stderr}"
    );
    let (status, stderr) = Host::output(&[
        "run",
        "--stream",
        "s",
        "--group",
        "g",
        "--plugin",
        "p",
        "--http",
        "nowhere:x",
    ]);
    assert_eq!(
        status.code(),
        Some(2),
        "clap refuses a malformed address: {stderr}"
    );
    assert!(stderr.contains("--http"), "{stderr}");
}

/// A config file with `[http] listen` on `port` and the given pipelines.
fn config_text(redis: &RedisServer, port: u16, pipelines: &[(&str, &str)]) -> String {
    let mut text = format!(
        "[redis]\nurl = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
        redis.url()
    );
    for (stream, group) in pipelines {
        text.push_str(&format!(
            "\n[[pipeline]]\nstream = \"{stream}\"\ngroup = \"{group}\"\nplugin = \"{}\"\nblock = \"200ms\"\n",
            plugin("misbehave").display()
        ));
    }
    text
}

#[test]
fn a_config_file_sets_the_listener_and_a_reload_does_not_move_it() {
    let redis = RedisServer::start();
    let stream = key("metrics-file");
    redis.add(&stream, &[("action", "ok")]);
    let port = free_port();
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("streamhost.toml");
    let tmp = dir.path().join("streamhost.toml.new");
    std::fs::write(&file, config_text(&redis, port, &[(&stream, "g")])).expect("writing");
    let _host = Host::spawn(&["run", "--config", &file.display().to_string()]);
    let running = |s: &[Sample]| value(s, "streamhost_pipelines_running", &[]);
    eventually(WAIT, "the entry acked, seen on /metrics", || {
        get(port, "/metrics")?;
        let s = scrape(port);
        let acked = value(&s, "streamhost_entries_acked_total", &[("pipeline", "g")]);
        (acked == Some(1.0)).then_some(())
    });
    let c: u64 = redis.conn().xlen(&stream).expect("XLEN");
    assert_eq!(c, 1);

    // The file moves the listener and adds a pipeline: the pipeline comes,
    // the listener stays where it is.
    let elsewhere = free_port();
    let text = config_text(&redis, elsewhere, &[(&stream, "g"), (&stream, "h")]);
    std::fs::write(&tmp, text).expect("writing");
    std::fs::rename(&tmp, &file).expect("renaming");
    eventually(WAIT, "the second pipeline, seen on the old address", || {
        (running(&scrape(port)) == Some(2.0)).then_some(())
    });
    assert!(get(elsewhere, "/healthz").is_none(), "nothing moved there");
}

#[test]
fn a_dying_http_task_drains_every_pipeline_and_exits_70() {
    let redis = RedisServer::start();
    let stream = key("metrics-dies");
    redis.add(&stream, &[("action", "ok")]);
    let port = free_port();
    let listen = http_flag(port);
    let mut host = Host::misbehave_env(
        &redis,
        &stream,
        &["--http", &listen, "--shutdown-grace", "2s"],
        &[("STREAMHOST_FAULT", "panic:http")],
    );
    let status = host.wait_exit(WAIT);
    assert_eq!(status.code(), Some(70), "{}", host.log());
    let log = host.log();
    assert!(
        log.contains("the http task panicked: injected fault: panic:http"),
        "{log}"
    );
    assert!(get(port, "/healthz").is_none(), "the listener is gone");
}

#[test]
fn health_says_draining_while_the_pipelines_drain() {
    let redis = RedisServer::start();
    let stream = key("metrics-draining");
    // Holds the drain open for about 3 s.
    redis.add(&stream, &[("action", "wasi-sleep"), ("ms", "3000")]);
    let port = free_port();
    let listen = http_flag(port);
    let mut host = Host::misbehave(
        &redis,
        &stream,
        &[
            "--http",
            &listen,
            "--handler-timeout",
            "10s",
            "--shutdown-grace",
            "10s",
        ],
    );
    eventually(WAIT, "the sleeper delivered", || {
        (redis.pending(&stream, "g") == 1).then_some(())
    });
    let live = get(port, "/healthz").expect("/healthz answers");
    assert_eq!(live.status, 200, "{}", live.body);
    host.signal(libc::SIGTERM);
    let draining = eventually(Duration::from_secs(5), "healthz 503", || {
        get(port, "/healthz").filter(|a| a.status == 503)
    });
    assert!(draining.body.contains("draining"), "{}", draining.body);
    let ready = get(port, "/readyz").expect("/readyz answers while draining");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
    assert_eq!(
        redis.pending(&stream, "g"),
        0,
        "the sleeper finished in the grace"
    );
}

#[test]
fn traps_and_timeouts_are_counted_apart() {
    let redis = RedisServer::start();
    let stream = key("metrics-traps");
    redis.add(&stream, &[("action", "trap")]);
    redis.add(&stream, &[("action", "loop")]);
    let port = free_port();
    let listen = http_flag(port);
    let _host = Host::misbehave(
        &redis,
        &stream,
        &fast(&["--max-deliveries", "1", "--http", &listen]),
    );
    let dlq = format!("{stream}:dlq");
    eventually(WAIT, "both dead-lettered", || {
        (dlq_kinds(&redis, &dlq).get("max-deliveries") == Some(&2)).then_some(())
    });
    let me = [("pipeline", "g")];
    let samples = eventually(Duration::from_secs(5), "both counted", || {
        let s = scrape(port);
        let dead = value(
            &s,
            "streamhost_entries_dead_lettered_total",
            &[("pipeline", "g"), ("kind", "max-deliveries")],
        );
        (dead == Some(2.0)).then_some(s)
    });
    assert_eq!(
        value(&samples, "streamhost_handler_traps_total", &me),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "streamhost_handler_timeouts_total", &me),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "streamhost_entries_retried_total", &me),
        Some(2.0)
    );
}

/// `/api/status` serves the running pipelines with their counters and their
/// stream as `host status --json` shows it, and both agree with Redis: the
/// length, each group's lag and pending count, the dead letters by kind, and
/// the group that holds retention back.
#[test]
fn the_status_api_agrees_with_host_status_and_redis() {
    let redis = RedisServer::start();
    let stream = key("api-status");
    let dlq = format!("{stream}:dlq");
    for _ in 0..4 {
        redis.add(&stream, &[("action", "ok")]);
    }
    for _ in 0..2 {
        redis.add(&stream, &[("action", "permanent")]);
    }
    // A group nobody reads: it lags by every entry and holds retention back.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("lagging")
        .arg("0")
        .query(&mut redis.conn())
        .expect("XGROUP CREATE");
    let port = free_port();
    let listen = http_flag(port);
    let _host = Host::misbehave(
        &redis,
        &stream,
        &fast(&[
            "--http",
            &listen,
            "--maxlen",
            "2",
            "--trim-interval",
            "200ms",
        ]),
    );
    let body = eventually(WAIT, "the status shows every entry settled", || {
        let answer = get(port, "/api/status")?;
        let body: serde_json::Value = serde_json::from_str(&answer.body).ok()?;
        (answer.status == 200
            && body["pipelines"][0]["counters"]["acked"] == 4
            && body["pipelines"][0]["counters"]["dead_permanent"] == 2
            && body["streams"][0]["retention"]["held_back"] == true)
            .then_some(body)
    });
    let p = &body["pipelines"][0];
    assert_eq!(p["name"], "g");
    assert_eq!(p["stream"], stream.as_str());
    assert_eq!(p["dlq"], dlq.as_str());
    assert!(
        p["plugin"].as_str().unwrap().starts_with("misbehave@"),
        "{p}"
    );

    let s = &body["streams"][0];
    let len: u64 = redis.conn().xlen(&stream).expect("XLEN");
    assert_eq!(s["length"], len);
    for group in ["g", "lagging"] {
        let (lag, pending) = xinfo_group(&redis, &stream, group);
        let g = s["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == group)
            .unwrap_or_else(|| panic!("{group} in {s}"));
        assert_eq!(Some(g["lag"].as_u64().unwrap()), lag, "{group}");
        assert_eq!(g["pending"], pending, "{group}");
    }
    let kinds = dlq_kinds(&redis, &dlq);
    assert_eq!(s["dlq"]["length"], 2);
    assert_eq!(s["dlq"]["kinds"]["permanent"], kinds["permanent"] as u64);
    assert_eq!(s["retention"]["held_by"], "lagging");

    // The same data as `host status --json`, but for when it was collected.
    let out = Host::output_env(
        &[
            "status",
            "--stream",
            &stream,
            "--maxlen",
            "2",
            "--json",
            "--redis",
            &redis.url(),
        ],
        &[],
    );
    assert!(out.0.success(), "{}", out.2);
    let mut cli: serde_json::Value = serde_json::from_str(&out.1).expect("JSON");
    let mut api = s.clone();
    for v in [&mut cli[0], &mut api] {
        v["collected_at_ms"] = serde_json::Value::Null;
        for g in v["groups"].as_array_mut().unwrap() {
            for c in g["consumers"].as_array_mut().unwrap() {
                c["idle_ms"] = serde_json::Value::Null;
            }
            for e in g["oldest_pending"].as_array_mut().unwrap() {
                e["idle_ms"] = serde_json::Value::Null;
            }
        }
    }
    assert_eq!(cli[0], api);
}

/// `--commit-wait` with and without the replica it asks for: commits go on
/// either way; the rounds short of a replica are counted, the others not.
#[test]
fn commit_rounds_short_of_their_replicas_are_counted_and_others_are_not() {
    let redis = RedisServer::start();
    let stream = key("commit-wait");
    let replica = RedisServer::start();
    let run = |stream: &str, port: u16| {
        Host::misbehave(
            &redis,
            stream,
            &fast(&[
                "--commit-wait",
                "1/200ms",
                "--plugin-config",
                "emit_to=out",
                "--http",
                &http_flag(port),
            ]),
        )
    };
    let short_of = |port: u16, n: usize| {
        eventually(WAIT, "the entries committed and counted", || {
            let s = scrape(port);
            let acked = value(&s, "streamhost_entries_acked_total", &[("pipeline", "g")])?;
            (acked as usize == n).then(|| {
                value(
                    &s,
                    "streamhost_commit_waits_short_total",
                    &[("pipeline", "g")],
                )
                .expect("the counter is exported")
            })
        })
    };
    // No replica: every round waits out its 200ms and is counted short.
    for _ in 0..3 {
        redis.add(&stream, &[("action", "emit")]);
    }
    let port = free_port();
    let alone = run(&stream, port);
    redis.wait_for_len("out", 3);
    assert!(
        short_of(port, 3) >= 1.0,
        "rounds without a replica are short"
    );
    drop(alone);
    // With a replica in sync, the same rounds are confirmed.
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(redis.port())
        .query(&mut replica.conn())
        .unwrap();
    eventually(WAIT, "the replica acknowledging writes", || {
        let mut c = redis.conn();
        let () = redis::cmd("SET").arg("probe").arg(1).query(&mut c).ok()?;
        let acked: u64 = redis::cmd("WAIT").arg(1).arg(500).query(&mut c).ok()?;
        (acked == 1).then_some(())
    });
    let second = key("commit-wait-2");
    for _ in 0..3 {
        redis.add(&second, &[("action", "emit")]);
    }
    let port = free_port();
    let _confirmed = run(&second, port);
    redis.wait_for_len("out", 6);
    assert_eq!(
        short_of(port, 3),
        0.0,
        "rounds a replica confirmed are not short"
    );
}
