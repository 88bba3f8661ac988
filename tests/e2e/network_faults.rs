//! Faults of the network between a host and Redis, through a proxy the
//! test controls (`support::proxy`): each ends with the host going on, and
//! within the bound the README states.

use std::time::Duration;

use crate::support::{Host, LossyProxy, RedisServer, eventually, fields_map, key};

const WAIT: Duration = Duration::from_secs(30);

/// A network path that goes dead without a word — every open connection
/// kept open, nothing forwarded either way, no FIN, no RST — is noticed
/// within `--block` plus the read slack (2 s + 5 s with the defaults): the
/// reader's blocking read times out, and every other connection opened
/// before goes with it at its next use, instead of at its own timeout. The
/// host reconnects and handles what came meanwhile.
#[test]
fn a_half_open_path_is_left_within_block_and_the_read_slack() {
    let redis = RedisServer::start();
    let proxy = LossyProxy::start(&redis);
    let stream = key("half-open");
    redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let plugin = crate::support::plugin("misbehave");
    let (url, plugin) = (proxy.url(), plugin.display().to_string());
    let _host = Host::spawn(&[
        "run", "--redis", &url, "--stream", &stream, "--group", "g", "--plugin", &plugin,
    ]);
    // Every link of the pipeline has been used through the proxy.
    redis.wait_for_len("out", 1);
    redis.wait_until_settled(&stream, "g", WAIT);
    proxy.freeze();
    let frozen = std::time::Instant::now();
    let later = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let out = redis.wait_for_len("out", 2);
    let took = frozen.elapsed();
    assert_eq!(fields_map(&out[1].1)["source_id"], later);
    // Noticed within 7 s; the rest is for reconnecting, resyncing and
    // handling on a machine the whole suite loads (each connection waiting
    // out its own timeout instead took 17 s).
    assert!(
        took < Duration::from_secs(2 + 5 + 5),
        "handled {took:?} after the path went dead"
    );
}

/// The reply to the `XREADGROUP` that delivers a batch is lost: Redis
/// counted the delivery and put the entries in this consumer's pending
/// list, the host never saw them. After the connection drops the reader
/// resyncs and takes them back: each entry is handled once, nothing stays
/// pending.
#[test]
fn a_lost_read_reply_costs_nothing_but_a_delivery() {
    let redis = RedisServer::start();
    let proxy = LossyProxy::start(&redis);
    let stream = key("lost-read");
    let ids: Vec<String> = (0..5)
        .map(|_| redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]))
        .collect();
    let watched = stream.clone();
    proxy.lose_reply_once(move |args| {
        args[0].eq_ignore_ascii_case(b"XREADGROUP")
            && args.iter().any(|a| a == watched.as_bytes())
            && args.last().is_some_and(|a| a == b">")
    });
    let plugin = crate::support::plugin("misbehave");
    let (url, plugin) = (proxy.url(), plugin.display().to_string());
    let _host = Host::spawn(&[
        "run", "--redis", &url, "--stream", &stream, "--group", "g", "--plugin", &plugin,
    ]);
    let out = redis.wait_for_len("out", ids.len());
    assert_eq!(proxy.lost(), 1, "the first read's reply was lost");
    handled_once_after_a_lost_read(&out, &ids);
    redis.wait_until_settled(&stream, "g", WAIT);
    assert_eq!(redis.pending(&stream, "g"), 0);
}

/// Each of `ids` emitted once in `out`, on at most its second delivery:
/// the lost read counted one, taking the entries back may count one more,
/// and nothing else does.
fn handled_once_after_a_lost_read(out: &[(String, Vec<(String, String)>)], ids: &[String]) {
    let mut seen: Vec<(String, u64)> = out
        .iter()
        .map(|(_, f)| {
            let f = fields_map(f);
            (f["source_id"].to_owned(), f["delivery"].parse().unwrap())
        })
        .collect();
    seen.sort();
    let handled: Vec<&String> = seen.iter().map(|(id, _)| id).collect();
    assert_eq!(handled, ids.iter().collect::<Vec<_>>(), "each handled once");
    assert!(seen.iter().all(|(_, d)| *d <= 2), "{seen:?}");
}

/// The same for a leased partition, whose read is a fenced script: its
/// lost reply leaves the entries in this owner's pending list, and the
/// owner takes them back.
#[test]
fn a_lost_fenced_read_reply_costs_nothing_but_a_delivery() {
    let redis = RedisServer::start();
    let proxy = LossyProxy::start(&redis);
    let stream = key("lost-fenced-read");
    let partition = format!("{{{stream}:0}}");
    let ids: Vec<String> = (0..5)
        .map(|_| redis.add(&partition, &[("action", "emit"), ("emit_to", "out")]))
        .collect();
    let watched = partition.clone();
    proxy.lose_reply_once(move |args| {
        args.len() > 3
            && args[0].eq_ignore_ascii_case(b"EVAL")
            && String::from_utf8_lossy(&args[1]).contains("XREADGROUP")
            && args[3] == watched.as_bytes()
    });
    let plugin = crate::support::plugin("misbehave");
    let (url, plugin) = (proxy.url(), plugin.display().to_string());
    let _host = Host::spawn(&[
        "run",
        "--redis",
        &url,
        "--stream",
        &stream,
        "--group",
        "g",
        "--plugin",
        &plugin,
        "--partitions",
        "1",
        "--lease-ttl",
        "3s",
    ]);
    let out = redis.wait_for_len("out", ids.len());
    assert_eq!(proxy.lost(), 1, "a fenced read's reply was lost");
    handled_once_after_a_lost_read(&out, &ids);
    redis.wait_until_settled(&partition, "g", WAIT);
    assert_eq!(redis.pending(&partition, "g"), 0);
}

/// How many commands Redis refused for want of memory so far.
fn oom_refusals(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query(&mut redis.conn())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("errorstat_OOM:count="))
        .map_or(0, |n| n.trim().parse().unwrap())
}

fn config_set(redis: &RedisServer, key: &str, value: &str) {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query(&mut redis.conn())
        .unwrap();
}

/// Redis full (`maxmemory` with `noeviction`) while entries are committed
/// with their emits and while a poison pill is dead-lettered: nothing is
/// acked without its emit or its dead letter, nothing vanishes; once memory
/// frees, the host commits everything, each once.
#[test]
fn a_full_redis_keeps_entries_pending_until_memory_frees() {
    let redis = RedisServer::start();
    let stream = key("full");
    let _host = Host::misbehave(&redis, &stream, &[]);
    redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    redis.wait_for_len("out", 1);
    // In hand for half a second each, then committed into a full Redis.
    let slow = [("action", "emit"), ("emit_to", "out"), ("sleep_ms", "500")];
    let emitters: Vec<String> = (0..3).map(|_| redis.add(&stream, &slow)).collect();
    let pill = redis.add(&stream, &[("action", "permanent"), ("sleep_ms", "500")]);
    eventually(WAIT, "all four delivered", || {
        (redis.pending(&stream, "g") == 4).then_some(())
    });
    config_set(&redis, "maxmemory-policy", "noeviction");
    config_set(&redis, "maxmemory", "1");
    let before = oom_refusals(&redis);
    eventually(WAIT, "commits refused for want of memory", || {
        (oom_refusals(&redis) >= before + 2).then_some(())
    });
    assert_eq!(redis.range("out").len(), 1, "no emit while full");
    assert!(
        redis.range(&format!("{stream}:dlq")).is_empty(),
        "no dead letter while full"
    );
    assert_eq!(redis.pending(&stream, "g"), 4, "nothing acked while full");

    config_set(&redis, "maxmemory", "0");
    let out = redis.wait_for_len("out", 4);
    let dlq = redis.wait_for_len(&format!("{stream}:dlq"), 1);
    assert_eq!(fields_map(&dlq[0].1)["source_id"], pill);
    let mut notified: Vec<String> = out[1..]
        .iter()
        .map(|(_, f)| fields_map(f)["source_id"].to_owned())
        .collect();
    notified.sort();
    assert_eq!(notified, emitters, "each emitter committed once");
    redis.wait_until_settled(&stream, "g", WAIT);
    assert_eq!(redis.pending(&stream, "g"), 0);
}

/// The checker every fault test ends with: each of `ids` ended exactly
/// once — acked with its one emit in `out`, or dead-lettered once — and
/// nothing of `stream` is pending.
fn assert_each_once(redis: &RedisServer, stream: &str, out: &str, ids: &[String]) {
    let mut ends: std::collections::HashMap<String, Vec<&'static str>> = Default::default();
    for (_, f) in redis.range(out) {
        if let Some(id) = fields_map(&f).get("source_id") {
            ends.entry((*id).to_owned()).or_default().push("emitted");
        }
    }
    for (_, f) in redis.range(&format!("{stream}:dlq")) {
        if let Some(id) = fields_map(&f).get("source_id") {
            ends.entry((*id).to_owned())
                .or_default()
                .push("dead-lettered");
        }
    }
    for id in ids {
        let seen = ends.get(id).map_or(&[][..], Vec::as_slice);
        assert_eq!(seen.len(), 1, "{id} ended {seen:?}, not exactly once");
    }
    assert_eq!(ends.len(), ids.len(), "ends of entries never added");
    assert_eq!(redis.pending(stream, "g"), 0, "left pending");
}

/// Under load, every open connection is cut every 400 ms — reads blocked
/// on Redis, commit rounds, scripts, keep-alives — and for two seconds no
/// new one gets through: every entry still ends exactly once.
#[test]
fn connections_cut_again_and_again_and_refused_for_a_while_lose_and_repeat_nothing() {
    let redis = RedisServer::start();
    let proxy = LossyProxy::start(&redis);
    let stream = key("cut-again");
    let plugin = crate::support::plugin("misbehave");
    let (url, plugin) = (proxy.url(), plugin.display().to_string());
    let _host = Host::spawn(&[
        "run",
        "--redis",
        &url,
        "--stream",
        &stream,
        "--group",
        "g",
        "--plugin",
        &plugin,
        "--block",
        "200ms",
        "--concurrency",
        "4",
        "--claim-idle",
        "3s",
        "--claim-interval",
        "500ms",
        "--handler-timeout",
        "2s",
    ]);
    redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    redis.wait_for_len("out", 1);
    let mut ids: Vec<String> = redis.range(&stream).into_iter().map(|(id, _)| id).collect();
    let connections_before = proxy.accepted();
    let started = std::time::Instant::now();
    let mut n = 0usize;
    let mut next_cut = started;
    let mut refused = false;
    while started.elapsed() < Duration::from_secs(6) {
        for _ in 0..10 {
            n += 1;
            let id = if n.is_multiple_of(25) {
                redis.add(&stream, &[("action", "permanent")])
            } else {
                redis.add(
                    &stream,
                    &[("action", "emit"), ("emit_to", "out"), ("sleep_ms", "5")],
                )
            };
            ids.push(id);
        }
        if std::time::Instant::now() >= next_cut {
            proxy.cut_all();
            next_cut += Duration::from_millis(400);
        }
        if !refused && started.elapsed() >= Duration::from_secs(3) {
            proxy.refuse_for(Duration::from_secs(2));
            proxy.cut_all();
            refused = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eventually(
        Duration::from_secs(90),
        "every entry read and settled",
        || {
            (redis.entries_read(&stream, "g") == Some(ids.len() as u64)
                && redis.pending(&stream, "g") == 0)
                .then_some(())
        },
    );
    // The emits of the last commits may still be on their way: the ends
    // are counted once every entry has one.
    eventually(WAIT, "an end for every entry", || {
        let ended = redis.range("out").len() + redis.range(&format!("{stream}:dlq")).len();
        (ended >= ids.len()).then_some(())
    });
    assert_each_once(&redis, &stream, "out", &ids);
    // The cuts were felt: the host connected again and again.
    let reconnected = proxy.accepted() - connections_before;
    assert!(reconnected >= 10, "only {reconnected} new connections");
}

/// `script`, loaded into `redis` (so the host's call is one `EVALSHA` that
/// runs, not a `NOSCRIPT` answered and sent again as `EVAL`), matched by
/// its hash.
fn calls_of(
    redis: &RedisServer,
    script: &redis::Script,
) -> impl Fn(&[Vec<u8>]) -> bool + Send + 'static + use<> {
    let sha: String = script
        .prepare_invoke()
        .load(&mut redis.conn())
        .expect("SCRIPT LOAD");
    move |args| {
        args.len() > 1 && args[0].eq_ignore_ascii_case(b"EVALSHA") && args[1] == sha.as_bytes()
    }
}

/// A host through a proxy that loses the reply to the first call of
/// `script` (Redis ran it), over `entries`: each still ends exactly once.
fn lost_reply_of(
    name: &str,
    script: &redis::Script,
    entries: &[&[(&str, &str)]],
    flags: &[&str],
) -> (RedisServer, String, Vec<String>) {
    let redis = RedisServer::start();
    // Small stream nodes, so an approximate trim of a short stream has
    // whole nodes to remove.
    config_set(&redis, "stream-node-max-entries", "2");
    let proxy = LossyProxy::start(&redis);
    let stream = key(name);
    let ids: Vec<String> = entries.iter().map(|f| redis.add(&stream, f)).collect();
    proxy.lose_reply_once(calls_of(&redis, script));
    let plugin = crate::support::plugin("misbehave");
    let (url, plugin) = (proxy.url(), plugin.display().to_string());
    let args = [
        &[
            "run", "--redis", &url, "--stream", &stream, "--group", "g", "--plugin", &plugin,
        ][..],
        flags,
    ]
    .concat();
    let host = Host::spawn(&args);
    eventually(WAIT, "the call's reply lost", || {
        (proxy.lost() == 1).then_some(())
    });
    eventually(WAIT, "every entry settled", || {
        (redis.entries_read(&stream, "g") == Some(ids.len() as u64)
            && redis.pending(&stream, "g") == 0)
            .then_some(())
    });
    assert_each_once(&redis, &stream, "out", &ids);
    drop(host);
    (redis, stream, ids)
}

const EMIT: &[(&str, &str)] = &[("action", "emit"), ("emit_to", "out")];
const POISON: &[(&str, &str)] = &[("action", "permanent")];

#[test]
fn a_lost_commit_reply_repeats_nothing() {
    let script = streamhost::stream::scripts::ACK_WITH_EMITS.under(None);
    lost_reply_of("lost-commit", script, &[EMIT; 6], &[]);
}

#[test]
fn a_lost_dead_letter_reply_repeats_nothing() {
    let script = streamhost::stream::scripts::DEAD_LETTER.under(None);
    lost_reply_of(
        "lost-dead-letter",
        script,
        &[POISON, EMIT, POISON, EMIT],
        &[],
    );
}

#[test]
fn a_lost_trim_reply_trims_nothing_needed() {
    let (redis, stream, _) = lost_reply_of(
        "lost-trim",
        &streamhost::stream::scripts::TRIM_SAFELY,
        &[EMIT; 12],
        &["--maxlen", "2", "--trim-interval", "100ms"],
    );
    eventually(WAIT, "trimmed after all", || {
        (redis.range(&stream).len() < 12).then_some(())
    });
}
