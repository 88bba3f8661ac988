//! The dashboard's HTTP API against a real redis-server and real plugins:
//! every action, checked from Redis; the admin gate; the `state` event.
//! (The page itself is driven in a real browser by `dashboard_browser`.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Commands;
use serde_json::{Value, json};
use streamhost::demo::orders::demo_event;

use crate::support::http::{first_event, free_port, get, get_json, post, post_json};
use crate::support::{Host, RedisServer, eventually, key, plugin};

pub(crate) const WAIT: Duration = Duration::from_secs(60);
pub(crate) const TOKEN: &str = "test-admin-token";

/// A process serving a notifications group of two consumers and an
/// analytics group of one, with the dashboard on its own port.
pub(crate) struct Fixture {
    pub redis: RedisServer,
    pub stream: String,
    pub dlq: String,
    pub outbox: String,
    pub port: u16,
    /// The plugin files the pipelines watch (copies: uploads replace them).
    pub notify: PathBuf,
    /// The config file the host runs.
    pub file: PathBuf,
    /// Everything after the `[http]` table.
    rest: String,
    _dir: tempfile::TempDir,
    pub host: Host,
}

impl Fixture {
    pub fn start(test: &str, admin: bool, claim_idle: &str) -> Self {
        Self::start_with(test, &format!("admin = {admin}"), claim_idle)
    }

    /// With `http` as the `[http]` table's keys besides `listen`.
    pub fn start_with(test: &str, http: &str, claim_idle: &str) -> Self {
        let redis = RedisServer::start();
        let stream = key(test);
        let dlq = format!("{stream}:dlq");
        let outbox = format!("{stream}:outbox");
        let dir = tempfile::tempdir().unwrap();
        let notify = dir.path().join("notify.wasm");
        std::fs::copy(plugin("notify"), &notify).unwrap();
        let analytics = dir.path().join("analytics.wasm");
        std::fs::copy(plugin("analytics"), &analytics).unwrap();
        let port = free_port();
        let pipeline = |name: &str, group: &str, plugin: &Path, config: &str| {
            format!(
                "[[pipeline]]\nname = \"{name}\"\ngroup = \"{group}\"\nconsumer = \"{name}\"\nplugin = \"{}\"\n[pipeline.plugin-config]\n{config}\n",
                plugin.display()
            )
        };
        let rest = format!(
            "[redis]\nurl = \"{url}\"\n\
             [defaults]\nstream = \"{stream}\"\nblock = \"200ms\"\nclaim-idle = \"{claim_idle}\"\nclaim-interval = \"200ms\"\n\
             handler-timeout = \"150ms\"\nmax-deliveries = 3\nstats-interval = \"0s\"\nwatch-interval = \"200ms\"\n\n{}{}{}",
            pipeline(
                "n-1",
                "notifications",
                &notify,
                &format!("outbox = \"{outbox}\"")
            ),
            pipeline(
                "n-2",
                "notifications",
                &notify,
                &format!("outbox = \"{outbox}\"")
            ),
            pipeline(
                "a-1",
                "analytics",
                &analytics,
                &format!("output = \"{stream}:totals\"")
            ),
            url = redis.url(),
        );
        let file = dir.path().join("host.toml");
        let fixture_text = text(port, http, &rest);
        std::fs::write(&file, fixture_text).unwrap();
        let host = Host::spawn_env(
            &["run", "--config", file.to_str().unwrap()],
            &[("STREAMHOST_HTTP_TOKEN", TOKEN)],
        );
        let fixture = Self {
            redis,
            stream,
            dlq,
            outbox,
            port,
            notify,
            file,
            rest,
            _dir: dir,
            host,
        };
        eventually(WAIT, "every pipeline serves", || {
            let ready = get(fixture.port, "/readyz")?;
            (ready.status == 200).then_some(())
        });
        fixture
    }

    /// Rewrites the config file (write, then rename) with `http` as the
    /// `[http]` table's keys besides `listen`, on `port`.
    pub fn rewrite_http(&self, port: u16, http: &str) {
        let staged = self.file.with_extension("new");
        std::fs::write(&staged, text(port, http, &self.rest)).unwrap();
        std::fs::rename(&staged, &self.file).unwrap();
    }

    pub fn act(&self, path: &str, body: Value) -> (u16, Value) {
        post_json(self.port, path, Some(TOKEN), &body)
    }

    /// Appends `count` of the demo's order events of `kind` (`random`: the
    /// four well-formed kinds in turn) to the stream, as a producer would:
    /// a `host run` dashboard has nothing to produce from.
    pub fn produce(&self, count: usize, kind: &str) -> Vec<String> {
        const GOOD: [&str; 4] = [
            "order.placed",
            "order.paid",
            "order.shipped",
            "order.cancelled",
        ];
        // Numbers every well-formed event of the run: each is an order of
        // its own.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut con = self.redis.conn();
        (0..count)
            .map(|n| {
                let kind = if kind == "random" { GOOD[n % 4] } else { kind };
                // Malformed events break in turn, one way each, from the
                // first way on: a call of four shows them all.
                let seq = match kind {
                    "malformed" => n as u64,
                    _ => NEXT.fetch_add(1, Ordering::Relaxed),
                };
                let fields = demo_event(kind, seq, 1_700_000_000_000)
                    .unwrap_or_else(|| panic!("the demo makes no {kind:?} events"));
                redis::cmd("XADD")
                    .arg(&self.stream)
                    .arg("*")
                    .arg(fields)
                    .query::<String>(&mut con)
                    .unwrap()
            })
            .collect()
    }

    /// The first state built after this call.
    pub fn state(&self) -> Value {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        first_event(self.port, "/api/events", "state", |s| {
            s["at_ms"].as_u64().is_some_and(|at| at >= since)
        })
    }

    pub fn xlen(&self, key: &str) -> usize {
        self.redis.conn().xlen(key).unwrap()
    }

    pub fn settled(&self) {
        for group in ["notifications", "analytics"] {
            self.redis.wait_until_settled(&self.stream, group, WAIT);
        }
    }
}

/// The config file: `[http]` on `port` with `http`'s keys, then `rest`.
fn text(port: u16, http: &str, rest: &str) -> String {
    format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{http}\n{rest}")
}

/// The pipeline named `name` in a `state` event.
pub(crate) fn pipeline<'a>(state: &'a Value, name: &str) -> Option<&'a Value> {
    state["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// Order ids in the notification outbox, with how often each appears.
fn outbox_orders(f: &Fixture) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for (_, fields) in f.redis.range(&f.outbox) {
        let order = fields
            .iter()
            .find(|(k, _)| k == "order_id")
            .map(|(_, v)| v.clone())
            .expect("a notification names its order");
        *seen.entry(order).or_default() += 1;
    }
    seen
}

#[test]
fn without_admin_the_dashboard_shows_but_refuses_every_action() {
    let f = Fixture::start("dash-read-only", false, "30s");
    let page = get(f.port, "/").unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<html") || page.body.contains("<!doctype"),
        "{}",
        page.body
    );
    let info = get_json(f.port, "/api/info");
    assert_eq!(info["admin"], false);
    for (path, body) in [
        ("/api/consumers", json!({"group": "notifications"})),
        ("/api/consumers/n-1/crash", json!({"count": 1})),
        ("/api/trim", json!({"maxlen": 0})),
        ("/api/dlq/redrive", json!({"all": true})),
    ] {
        let (status, answer) = f.act(path, body);
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains("--http-admin"));
    }
    assert_eq!(pipeline(&f.state(), "n-1").unwrap()["crash_next"], 0);
    assert_eq!(
        pipeline(&f.state(), "n-1").unwrap()["name"],
        "n-1",
        "nothing was removed"
    );
}

#[test]
fn with_admin_only_the_right_token_acts() {
    let f = Fixture::start("dash-token", true, "30s");
    assert_eq!(get_json(f.port, "/api/info")["admin"], true);
    let body = json!({"count": 3});
    for token in [None, Some("wrong")] {
        let (status, answer) = post_json(f.port, "/api/consumers/n-1/crash", token, &body);
        assert_eq!(status, 401, "{answer}");
    }
    assert_eq!(pipeline(&f.state(), "n-1").unwrap()["crash_next"], 0);
    let (status, answer) = f.act("/api/consumers/n-1/crash", body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["crash_next"], 3);
    assert_eq!(pipeline(&f.state(), "n-1").unwrap()["crash_next"], 3);
    // Bad requests are refused with a reason, and change nothing.
    for (path, body, why) in [
        (
            "/api/consumers/n-1/crash",
            json!({"count": 0}),
            "count must be 1 to 1000",
        ),
        (
            "/api/consumers/n-1/crash",
            json!({"count": 1001}),
            "count must be 1 to 1000",
        ),
        (
            "/api/consumers/n-9/crash",
            json!({"count": 1}),
            "no running pipeline",
        ),
        ("/api/trim", json!({}), "give maxlen, max_age_ms or both"),
        (
            "/api/trim",
            json!({"maxlen": 1, "stream": "elsewhere"}),
            "no running pipeline consumes",
        ),
    ] {
        let (status, answer) = f.act(path, body);
        assert!(status == 400 || status == 404, "{status} {answer}");
        assert!(answer["error"].as_str().unwrap().contains(why), "{answer}");
    }
    assert_eq!(pipeline(&f.state(), "n-1").unwrap()["crash_next"], 3);
    // Demo order events are `host demo`'s: a `host run` has nothing to
    // produce from, so the route does not exist.
    let produce = post(
        f.port,
        "/api/produce",
        Some(TOKEN),
        "application/json",
        br#"{"count": 1, "type": "order.paid"}"#,
    );
    assert_eq!(produce.status, 404, "{}", produce.body);
    assert_eq!(f.xlen(&f.stream), 0);
    assert_eq!(get_json(f.port, "/api/info")["demo"], false);
}

#[test]
fn the_state_event_shows_groups_consumers_and_counters_as_redis_has_them() {
    let f = Fixture::start("dash-state", true, "30s");
    f.produce(40, "random");
    f.settled();
    let state = eventually(WAIT, "the counters catch up", || {
        let s = f.state();
        let acked: u64 = ["n-1", "n-2"]
            .iter()
            .map(|n| {
                pipeline(&s, n).unwrap()["counters"]["acked"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        (acked == 40).then_some(s)
    });
    let names: Vec<&str> = state["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-1", "n-1", "n-2"]);
    assert_eq!(pipeline(&state, "a-1").unwrap()["counters"]["acked"], 40);
    let stream = &state["streams"][0];
    assert_eq!(stream["stream"], f.stream.as_str());
    assert_eq!(stream["length"], 40);
    let groups: HashMap<&str, &Value> = stream["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap(), g))
        .collect();
    assert_eq!(groups["notifications"]["lag"], 0);
    assert_eq!(groups["notifications"]["pending"], 0);
    let mut consumers: Vec<String> = groups["notifications"]["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    consumers.sort();
    let mut in_redis = f.redis.consumers(&f.stream, "notifications");
    in_redis.sort();
    assert_eq!(consumers, in_redis);
    assert_eq!(outbox_orders(&f).len(), 40);
    // The charts sample every second; the 40 entries show as throughput.
    eventually(WAIT, "the charts show the work", || {
        let series = f.state()["series"].clone();
        let handled: f64 = series["groups"]["notifications"]["handled_per_s"]
            .as_array()?
            .iter()
            .filter_map(Value::as_f64)
            .sum();
        let times = series["t_ms"].as_array()?.len();
        let group = &series["groups"]["notifications"];
        let aligned = group["lag"].as_array()?.len() == times
            && group["wait_p99_us"].as_array()?.len() == times;
        // Every call waited some time, if only microseconds, for a worker.
        let waited = group["wait_p99_us"].as_array()?.iter().any(Value::is_u64);
        (handled > 0.0 && aligned && waited).then_some(())
    });
}

#[test]
fn a_crashed_consumer_leaves_its_entries_pending_until_reclaimed() {
    let f = Fixture::start("dash-crash", true, "60s");
    let (status, answer) = f.act("/api/consumers/n-1/crash", json!({"count": 3}));
    assert_eq!(
        (status, &answer["crash_next"]),
        (200, &json!(3)),
        "{answer}"
    );
    // Both consumers compete for entries: produce until n-1 has dropped 3.
    eventually(WAIT, "n-1 dropped three deliveries", || {
        f.produce(4, "order.paid");
        std::thread::sleep(Duration::from_millis(300));
        (pipeline(&f.state(), "n-1")?["crashed"] == 3).then_some(())
    });
    let produced = f.xlen(&f.stream);
    // Every other order is notified; the three dropped stay pending under
    // n-1, delivered once (the reaper's 60 s is far off).
    let pending = eventually(WAIT, "all but the dropped three notified", || {
        (outbox_orders(&f).len() == produced - 3).then(|| pending_rows(&f, "notifications"))
    });
    assert_eq!(pending.len(), 3, "{pending:?}");
    assert!(
        pending
            .iter()
            .all(|(_, consumer, deliveries)| consumer == "n-1" && *deliveries == 1),
        "{pending:?}"
    );
    // The state's pending table lists them.
    let state = f.state();
    let group = state["streams"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "notifications")
        .unwrap()
        .clone();
    let listed: Vec<&str> = group["oldest_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let ids: Vec<&str> = pending.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(listed, ids);
    // "Reclaim now" to n-2: claimed with a counted delivery, then acked.
    let (status, answer) = f.act("/api/consumers/n-2/reclaim", json!({"min_idle_ms": 0}));
    assert_eq!((status, &answer["claimed"]), (200, &json!(3)), "{answer}");
    f.redis.wait_until_settled(&f.stream, "notifications", WAIT);
    let orders = outbox_orders(&f);
    assert_eq!(orders.len(), produced, "every order notified");
    assert!(
        orders.values().all(|n| *n == 1),
        "each exactly once: {orders:?}"
    );
    assert_eq!(
        pipeline(&f.state(), "n-2").unwrap()["counters"]["reclaimed"],
        3
    );
    // Unknown consumers and bad counts are refused.
    assert_eq!(
        f.act("/api/consumers/nope/crash", json!({"count": 1})).0,
        404
    );
    assert_eq!(
        f.act("/api/consumers/n-1/crash", json!({"count": 0})).0,
        400
    );
}

/// `(id, consumer, deliveries)` of every pending entry of `group`.
fn pending_rows(f: &Fixture, group: &str) -> Vec<(String, String, u64)> {
    let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&f.stream)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(1000)
        .query(&mut f.redis.conn())
        .unwrap();
    rows.into_iter().map(|(id, c, _, n)| (id, c, n)).collect()
}

#[test]
fn the_reaper_reclaims_a_crashed_consumers_entries_after_the_idle_time() {
    let f = Fixture::start("dash-auto-reclaim", true, "1s");
    f.act("/api/consumers/n-2/crash", json!({"count": 2}));
    eventually(WAIT, "n-2 dropped two deliveries", || {
        f.produce(4, "order.placed");
        std::thread::sleep(Duration::from_millis(300));
        (pipeline(&f.state(), "n-2")?["crashed"] == 2).then_some(())
    });
    f.redis.wait_until_settled(&f.stream, "notifications", WAIT);
    let orders = outbox_orders(&f);
    assert_eq!(orders.len(), f.xlen(&f.stream));
    assert!(orders.values().all(|n| *n == 1), "{orders:?}");
    let reclaimed: u64 = ["n-1", "n-2"]
        .iter()
        .map(|n| {
            pipeline(&f.state(), n).unwrap()["counters"]["reclaimed"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(reclaimed, 2);
}

#[test]
fn consumers_are_added_and_removed_at_run_time() {
    let f = Fixture::start("dash-consumers", true, "30s");
    let (status, answer) = f.act("/api/consumers", json!({"group": "notifications"}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["consumer"], "n-3");
    f.produce(30, "random");
    eventually(WAIT, "n-3 reads from the group", || {
        f.redis
            .consumers(&f.stream, "notifications")
            .contains(&"n-3".to_owned())
            .then_some(())
    });
    assert!(pipeline(&f.state(), "n-3").is_some());
    let (status, answer) = f.act("/api/consumers/n-3/remove", json!({}));
    assert_eq!(status, 200, "{answer}");
    assert!(pipeline(&f.state(), "n-3").is_none());
    // Its consumer is gone from the group once drained with nothing pending.
    f.redis.wait_until_settled(&f.stream, "notifications", WAIT);
    eventually(WAIT, "n-3 left the group", || {
        (!f.redis
            .consumers(&f.stream, "notifications")
            .contains(&"n-3".to_owned()))
        .then_some(())
    });
    // The last consumer of a group stays; unknown ones are not found.
    let (status, answer) = f.act("/api/consumers/a-1/remove", json!({}));
    assert_eq!(status, 409, "{answer}");
    assert_eq!(f.act("/api/consumers/zz/remove", json!({})).0, 404);
    assert_eq!(f.act("/api/consumers", json!({"group": "nobody"})).0, 404);
    // Nothing was lost meanwhile.
    f.produce(10, "random");
    f.settled();
    assert_eq!(outbox_orders(&f).len(), f.xlen(&f.stream));
}

#[test]
fn dead_letters_are_listed_and_redriven() {
    let f = Fixture::start("dash-dlq", true, "30s");
    f.produce(3, "malformed");
    f.produce(2, "order.paid");
    f.settled();
    eventually(WAIT, "three dead letters", || {
        (f.xlen(&f.dlq) == 3).then_some(())
    });
    let list = get_json(f.port, "/api/dlq?limit=10");
    let records = list["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r["kind"] == "permanent"), "{list}");
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("unknown event type")),
        "{reasons:?}"
    );
    let newest = records[0]["id"].as_str().unwrap().to_owned();
    let (status, answer) = f.act("/api/dlq/redrive", json!({"ids": [newest]}));
    assert_eq!(status, 200, "{answer}");
    let row = &answer["rows"][0];
    assert_eq!(row["outcome"], "moved", "{answer}");
    let new_id = row["new_id"].as_str().unwrap();
    // Back on the stream under a new id, out of the DLQ…
    let back: Vec<(String, Vec<(String, String)>)> = f.redis.range(&f.stream);
    assert!(back.iter().any(|(id, _)| id == new_id));
    let dlq_ids: Vec<String> = f
        .redis
        .range(&f.dlq)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(!dlq_ids.contains(&newest));
    // …and, still malformed, dead-lettered again by the pipelines.
    eventually(WAIT, "the redriven entry is dead-lettered again", || {
        (f.xlen(&f.dlq) == 3).then_some(())
    });
    let (status, answer) = f.act("/api/dlq/redrive", json!({"all": true}));
    assert_eq!(status, 200);
    assert_eq!(answer["rows"].as_array().unwrap().len(), 3);
    assert_eq!(f.act("/api/dlq/redrive", json!({})).0, 400);
}

#[test]
fn replay_shows_entries_and_a_plugins_verdicts_without_writing() {
    let f = Fixture::start("dash-replay", true, "30s");
    f.produce(2, "order.placed");
    f.produce(1, "malformed");
    f.settled();
    let (outbox, dlq) = (f.xlen(&f.outbox), f.xlen(&f.dlq));
    let (status, plain) = f.act("/api/replay", json!({"count": 10}));
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["rows"].as_array().unwrap().len(), 3);
    assert!(plain["rows"][0].get("outcome").is_none());
    let (status, judged) = f.act("/api/replay", json!({"count": 10, "pipeline": "n-1"}));
    assert_eq!(status, 200, "{judged}");
    let outcomes: Vec<&str> = judged["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ack", "ack", "dead-letter"]);
    assert_eq!(judged["totals"]["emits"], 2);
    assert_eq!(
        (f.xlen(&f.outbox), f.xlen(&f.dlq)),
        (outbox, dlq),
        "a dry run writes nothing"
    );
    let (status, answer) = f.act("/api/replay", json!({"from": "yesterday"}));
    assert_eq!(status, 400, "{answer}");
}

#[test]
fn trim_is_held_back_by_a_group_that_still_needs_entries() {
    let f = Fixture::start("dash-trim", true, "30s");
    f.produce(10, "order.paid");
    f.settled();
    // A group that has read nothing yet holds everything.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&f.stream)
        .arg("late")
        .arg("0")
        .query(&mut f.redis.conn())
        .unwrap();
    let (status, held) = f.act("/api/trim", json!({"maxlen": 2}));
    assert_eq!(status, 200, "{held}");
    assert_eq!(held["removed"], 0);
    assert_eq!(held["held_by"], "late");
    assert_eq!(f.xlen(&f.stream), 10);
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&f.stream)
        .arg("late")
        .query(&mut f.redis.conn())
        .unwrap();
    let (status, done) = f.act("/api/trim", json!({"maxlen": 2}));
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["removed"], 8);
    assert_eq!(f.xlen(&f.stream), 2);
    assert_eq!(f.act("/api/trim", json!({})).0, 400);
}

#[test]
fn an_uploaded_plugin_swaps_live_and_a_bad_one_is_refused_and_put_back() {
    let f = Fixture::start("dash-upload", true, "30s");
    let noop = std::fs::read(plugin("noop")).unwrap();
    let answer = post(
        f.port,
        "/api/plugins/n-1",
        Some(TOKEN),
        "application/wasm",
        &noop,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let swapped: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(swapped["outcome"], "swapped");
    assert_ne!(swapped["to"], swapped["from"]);
    assert_eq!(std::fs::read(&f.notify).unwrap(), noop);
    // Both pipelines of the file swap: nothing goes to the outbox any more.
    eventually(WAIT, "both notification consumers run noop", || {
        let s = f.state();
        ["n-1", "n-2"]
            .iter()
            .all(|n| pipeline(&s, n).unwrap()["plugin"]["identity"] == swapped["to"])
            .then_some(())
    });
    f.produce(5, "order.placed");
    f.settled();
    assert_eq!(f.xlen(&f.outbox), 0);
    // Garbage is refused, the file is put back, noop keeps serving.
    let answer = post(
        f.port,
        "/api/plugins/n-1",
        Some(TOKEN),
        "application/wasm",
        b"\0asm garbage",
    );
    assert_eq!(answer.status, 422, "{}", answer.body);
    let refused: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        (&refused["outcome"], &refused["restored"]),
        (&json!("refused"), &json!(true))
    );
    assert_eq!(std::fs::read(&f.notify).unwrap(), noop);
    let log = f.state()["plugin_log"].clone();
    // Each watcher of the file judges what it reads; the newest verdict is
    // a refusal, and the swap is there before it.
    let outcomes: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == f.notify.to_str().unwrap())
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.first(), Some(&"refused"), "{log}");
    assert!(outcomes.contains(&"swapped"), "{log}");
    // The same bytes again change nothing; no token, no upload.
    let same = post(
        f.port,
        "/api/plugins/n-1",
        Some(TOKEN),
        "application/wasm",
        &noop,
    );
    assert!(same.body.contains("unchanged"), "{}", same.body);
    assert_eq!(
        post(f.port, "/api/plugins/n-1", None, "application/wasm", &noop).status,
        401
    );
    // Over the upload limit: refused before anything is written.
    let huge = vec![0u8; (64 << 20) + 1];
    let answer = post(
        f.port,
        "/api/plugins/n-1",
        Some(TOKEN),
        "application/wasm",
        &huge,
    );
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(std::fs::read(&f.notify).unwrap(), noop);
    assert!(f.host.log().contains("plugin swapped"));
}

/// `(id, consumer, idle ms, deliveries)` of every pending entry of `group`.
fn pending_with_idle(
    redis: &RedisServer,
    stream: &str,
    group: &str,
) -> Vec<(String, String, u64, u64)> {
    redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(1000)
        .query(&mut redis.conn())
        .unwrap()
}

#[test]
fn reclaim_now_never_takes_what_a_sibling_pipeline_holds_in_a_retry_backoff() {
    let redis = RedisServer::start();
    let stream = key("dash-reclaim-siblings");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pipeline = |name: &str| {
        format!(
            "[[pipeline]]\nname = \"{name}\"\ngroup = \"g\"\nconsumer = \"{name}\"\nplugin = \"{}\"\n",
            plugin("misbehave").display()
        )
    };
    // Retries wait a minute here: long enough for the request to find
    // them idle, held by their pipeline.
    let text = format!(
        "[redis]\nurl = \"{url}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\nadmin = true\n\
         [defaults]\nstream = \"{stream}\"\nblock = \"200ms\"\nclaim-idle = \"30s\"\nclaim-interval = \"200ms\"\n\
         retry-backoff = \"60s\"\nstats-interval = \"0s\"\n\n{}{}",
        pipeline("p-1"),
        pipeline("p-2"),
        url = redis.url(),
    );
    let file = dir.path().join("host.toml");
    std::fs::write(&file, text).unwrap();
    let _host = Host::spawn_env(
        &["run", "--config", file.to_str().unwrap()],
        &[("STREAMHOST_HTTP_TOKEN", TOKEN)],
    );
    eventually(WAIT, "every pipeline serves", || {
        (get(port, "/readyz")?.status == 200).then_some(())
    });
    for _ in 0..40 {
        redis.add(&stream, &[("action", "retryable")]);
    }
    let before = eventually(WAIT, "every entry failed once and waits, idle", || {
        let rows = pending_with_idle(&redis, &stream, "g");
        (rows.len() == 40 && rows.iter().all(|(_, _, idle, n)| *n == 1 && *idle >= 500))
            .then_some(rows)
    });
    // Ask the sibling of a pipeline that holds entries (both, usually).
    let holder = before[0].1.clone();
    let sibling = if holder == "p-1" { "p-2" } else { "p-1" };
    let (status, answer) = post_json(
        port,
        &format!("/api/consumers/{sibling}/reclaim"),
        Some(TOKEN),
        &json!({"min_idle_ms": 100}),
    );
    assert_eq!((status, &answer["claimed"]), (200, &json!(0)), "{answer}");
    let after = pending_with_idle(&redis, &stream, "g");
    let owners = |rows: &[(String, String, u64, u64)]| -> Vec<(String, String, u64)> {
        rows.iter()
            .map(|(id, c, _, n)| (id.clone(), c.clone(), *n))
            .collect()
    };
    assert_eq!(
        owners(&after),
        owners(&before),
        "same owners, no delivery counted"
    );
}
