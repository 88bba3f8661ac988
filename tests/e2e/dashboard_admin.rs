//! The dashboard's actions when things are not quiet: Redis slow to answer,
//! uploads racing each other, and a config reload that changes `[http]`.
//! Checked from Redis, the files on disk and the HTTP answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use streamhost::http::limits::ACTION_TIMEOUT;
use streamhost::plugin::content_hash;

use crate::dashboard_api::{Fixture, TOKEN, WAIT, pipeline};
use crate::support::http::{free_port, get, get_json, get_with, post, post_json};
use crate::support::{Host, RedisServer, eventually, plugin};

/// Keeps Redis busy for `busy` with a script that spins on `TIME`, sent
/// on a connection of its own; returns once Redis has stopped answering
/// others, with the connection (the script's answer arrives on it later).
fn make_redis_slow(redis: &RedisServer, busy: Duration) -> TcpStream {
    const SPIN: &str = "local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] \
        repeat local t = redis.call('TIME') until t[1] * 1000000 + t[2] - t0 >= tonumber(ARGV[1]) * 1000 \
        return 1";
    let busy_ms = busy.as_millis().to_string();
    let mut spinner = TcpStream::connect(redis.addr()).expect("connects to redis");
    let args = ["EVAL", SPIN, "0", &busy_ms];
    let mut command = format!("*{}\r\n", args.len());
    for a in args {
        command.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    spinner
        .write_all(command.as_bytes())
        .expect("EVAL goes out");
    eventually(Duration::from_secs(5), "redis busy with the script", || {
        let mut ping = TcpStream::connect(redis.addr()).ok()?;
        ping.write_all(b"*1\r\n$4\r\nPING\r\n").ok()?;
        ping.set_read_timeout(Some(Duration::from_millis(200)))
            .ok()?;
        let mut buf = [0u8; 16];
        ping.read(&mut buf).is_err().then_some(())
    });
    spinner
}

/// `host demo` against the test's own Redis: a process whose dashboard has
/// something to produce from (the demo's orders), its trickle at rest.
struct DemoDashboard {
    redis: RedisServer,
    stream: String,
    port: u16,
    _host: Host,
}

impl DemoDashboard {
    fn start() -> Self {
        let redis = RedisServer::start();
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let host = Host::spawn_env(
            &[
                "demo",
                "--redis",
                &redis.url(),
                "--http",
                &http,
                "--rate",
                "0",
            ],
            &[("STREAMHOST_HTTP_TOKEN", TOKEN)],
        );
        eventually(WAIT, "the demo serves", || {
            (get(port, "/readyz")?.status == 200).then_some(())
        });
        Self {
            redis,
            stream: "demo:events:orders".into(),
            port,
            _host: host,
        }
    }

    fn act(&self, path: &str, body: Value) -> (u16, Value) {
        post_json(self.port, path, Some(TOKEN), &body)
    }

    fn xlen(&self, key: &str) -> usize {
        redis::Commands::xlen(&mut self.redis.conn(), key).unwrap()
    }
}

#[test]
fn the_demo_dashboard_produces_its_order_events_and_refuses_bad_requests() {
    let f = DemoDashboard::start();
    assert_eq!(get_json(f.port, "/api/info")["demo"], true);
    let body = json!({"count": 3, "type": "order.placed"});
    for token in [None, Some("wrong")] {
        let (status, answer) = post_json(f.port, "/api/produce", token, &body);
        assert_eq!(status, 401, "{answer}");
    }
    assert_eq!(f.xlen(&f.stream), 0);
    let (status, answer) = f.act("/api/produce", body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["count"], 3);
    let ids: Vec<String> = f
        .redis
        .range(&f.stream)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(answer["first_id"], ids[0].as_str());
    assert_eq!(answer["last_id"], ids[2].as_str());
    for (body, why) in [
        (json!({"count": 0, "type": "random"}), "count"),
        (
            json!({"count": 10_001, "type": "random"}),
            "count must be 1 to 10000",
        ),
        (
            json!({"count": 1, "type": "order.lost"}),
            "unknown event type",
        ),
        (
            json!({"count": 1, "type": "random", "stream": "elsewhere"}),
            "no running pipeline consumes",
        ),
    ] {
        let (status, answer) = f.act("/api/produce", body);
        assert!(status == 400 || status == 404, "{status} {answer}");
        assert!(answer["error"].as_str().unwrap().contains(why), "{answer}");
    }
    assert_eq!(f.xlen(&f.stream), 3);
}

#[test]
fn a_produce_while_redis_is_slow_appends_once_and_says_so() {
    let f = DemoDashboard::start();
    let _spinner = make_redis_slow(&f.redis, Duration::from_millis(1500));
    let (status, answer) = f.act("/api/produce", json!({"count": 1200, "type": "order.paid"}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["count"], 1200, "{answer}");
    assert_eq!(f.xlen(&f.stream), 1200, "exactly what the answer says");
    // A trim against the same slow Redis answers what it did too.
    let _spinner = make_redis_slow(&f.redis, Duration::from_millis(1500));
    let (status, answer) = f.act("/api/trim", json!({"maxlen": 5000}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["removed"], 0, "{answer}");
}

#[test]
fn a_produce_redis_does_not_answer_in_time_says_what_may_have_been_appended() {
    let f = DemoDashboard::start();
    // The actions' connection is open before Redis stops answering.
    let (status, _) = f.act("/api/produce", json!({"count": 1, "type": "order.paid"}));
    assert_eq!(status, 200);
    // Redis would answer BUSY after 5 s of a script; here it stays silent.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg(60_000)
        .query(&mut f.redis.conn())
        .unwrap();
    let mut spinner = make_redis_slow(&f.redis, ACTION_TIMEOUT + Duration::from_millis(1500));
    let (status, answer) = f.act(
        "/api/produce",
        json!({"count": 10_000, "type": "order.paid"}),
    );
    assert_eq!(status, 503, "{answer}");
    let (count, unconfirmed) = (
        answer["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("no count: {answer}")),
        answer["unconfirmed"]
            .as_u64()
            .unwrap_or_else(|| panic!("{answer}")),
    );
    assert!(unconfirmed > 0, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("may or may not")),
        "{answer}"
    );
    // Once the script is done, the stream holds what was said: the count
    // for sure, and at most the unconfirmed ones besides.
    spinner
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reply = [0u8; 4];
    spinner.read_exact(&mut reply).expect("the script ends");
    assert_eq!(&reply, b":1\r\n");
    let appended = f.xlen(&f.stream) as u64 - 1;
    assert!(
        (count..=count + unconfirmed).contains(&appended),
        "answered {count} appended and {unconfirmed} unconfirmed; the stream got {appended}"
    );
}

/// `POST /api/plugins/{pipeline}` with `bytes`: `(status, answer)`.
fn upload(f: &Fixture, pipeline: &str, bytes: &[u8]) -> (u16, Value) {
    let answer = post(
        f.port,
        &format!("/api/plugins/{pipeline}"),
        Some(TOKEN),
        "application/wasm",
        bytes,
    );
    let json = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("{}: non-JSON {:?}: {e}", answer.status, answer.body));
    (answer.status, json)
}

#[test]
fn concurrent_uploads_leave_on_disk_the_version_in_service() {
    let f = Fixture::start("dash-upload-race", true, "30s");
    let good: Vec<Vec<u8>> = ["noop", "notify", "analytics"]
        .iter()
        .map(|p| std::fs::read(plugin(p)).unwrap())
        .collect();
    let broken = b"\0asm not a component".to_vec();
    for round in 0..4 {
        // Two good versions and a broken one at once, to both consumers of the file.
        let sent = [
            good[round % 3].clone(),
            broken.clone(),
            good[(round + 1) % 3].clone(),
        ];
        let answers: Vec<(Vec<u8>, u16, Value)> = std::thread::scope(|s| {
            let uploads: Vec<_> = sent
                .iter()
                .enumerate()
                .map(|(i, bytes)| {
                    let f = &f;
                    s.spawn(move || {
                        let (status, answer) = upload(f, ["n-1", "n-2"][i % 2], bytes);
                        (bytes.clone(), status, answer)
                    })
                })
                .collect();
            uploads.into_iter().map(|u| u.join().unwrap()).collect()
        });
        // Each answer is about its own bytes.
        for (bytes, status, answer) in &answers {
            let hash = content_hash(bytes);
            match answer["outcome"].as_str() {
                Some("swapped") => {
                    assert_eq!(*status, 200, "{answer}");
                    let to = answer["to"].as_str().unwrap_or_default();
                    assert!(
                        to.ends_with(&hash),
                        "round {round}: answered {to} for {hash}"
                    );
                }
                Some("unchanged") => {
                    let to = answer["to"].as_str().unwrap_or_default();
                    assert!(to.ends_with(&hash), "round {round}: {answer} for {hash}");
                }
                Some("refused") => {
                    assert_eq!(*status, 422, "{answer}");
                    assert_eq!(
                        bytes, &broken,
                        "round {round}: a good version refused: {answer}"
                    );
                    assert_eq!(answer["restored"], true, "{answer}");
                }
                _ => panic!("round {round}: {status} {answer}"),
            }
        }
        assert!(
            answers.iter().any(|(b, s, _)| *b == broken && *s == 422),
            "round {round}: the broken upload was not refused: {answers:?}"
        );
        // What serves is what a restart would load.
        let on_disk = content_hash(&std::fs::read(&f.notify).unwrap());
        eventually(WAIT, "both consumers serve the file on disk", || {
            let s = f.state();
            ["n-1", "n-2"]
                .iter()
                .all(|n| {
                    pipeline(&s, n).is_some_and(|p| p["plugin"]["version"] == on_disk.as_str())
                })
                .then_some(())
        });
    }
}

#[test]
fn a_reload_applies_admin_and_allowed_hosts_live_and_says_a_new_address_needs_a_restart() {
    let f = Fixture::start("dash-reload-http", true, "30s");
    let crash = || {
        post_json(
            f.port,
            "/api/consumers/n-1/crash",
            Some(TOKEN),
            &json!({"count": 1}),
        )
        .0
    };
    assert_eq!(crash(), 200);
    f.rewrite_http(f.port, "admin = false");
    eventually(
        Duration::from_secs(20),
        "actions refused after the reload",
        || (crash() == 403).then_some(()),
    );
    // Back on, with a name allowed: both without a restart, the same token.
    f.rewrite_http(
        f.port,
        "admin = true\nallowed-hosts = [\"ops.example.test\"]",
    );
    eventually(Duration::from_secs(20), "actions allowed again", || {
        (crash() == 200).then_some(())
    });
    let named = get_with(f.port, "/api/info", &[("Host", "ops.example.test")]).expect("answers");
    assert_eq!(named.status, 200, "{}", named.body);
    // A new address needs a restart; what can change live still does.
    let elsewhere = free_port();
    f.rewrite_http(elsewhere, "admin = false");
    eventually(
        Duration::from_secs(20),
        "actions refused after the reload",
        || (crash() == 403).then_some(()),
    );
    f.host
        .wait_for_log("restart the process to listen on", WAIT);
    assert!(get(elsewhere, "/healthz").is_none(), "nothing moved there");
    let renamed = get_with(f.port, "/api/info", &[("Host", "ops.example.test")]).expect("answers");
    assert_eq!(
        renamed.status, 421,
        "the name is no longer allowed: {}",
        renamed.body
    );
}
