//! Self-healing: reclaiming entries of crashed or frozen hosts, poison pills,
//! keep-alive for slow handlers, fenced dead-letter moves.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{
    Host, LossyProxy, RedisServer, counting_claim, eventually, fast as with, key, plugin,
};

const WAIT: Duration = Duration::from_secs(60);

/// How many times each source id appears in `stream`.
fn counts(redis: &RedisServer, stream: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for (_, fields) in redis.range(stream) {
        let id = fields
            .iter()
            .find(|(k, _)| k == "source_id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

/// `n` entries that each take `sleep_ms`: every `dead_every`-th one fails
/// permanently, the others emit to `out`. Returns (emitting ids, dead ids).
fn mixed_entries(
    redis: &RedisServer,
    stream: &str,
    n: usize,
    dead_every: usize,
    sleep_ms: &str,
) -> (Vec<String>, Vec<String>) {
    let (mut emit_ids, mut dead_ids) = (Vec::new(), Vec::new());
    for i in 0..n {
        if i % dead_every == 0 {
            dead_ids.push(redis.add(stream, &[("action", "permanent"), ("sleep_ms", sleep_ms)]));
        } else {
            emit_ids.push(redis.add(
                stream,
                &[
                    ("action", "emit"),
                    ("emit_to", "out"),
                    ("sleep_ms", sleep_ms),
                ],
            ));
        }
    }
    (emit_ids, dead_ids)
}

fn assert_exactly_once(seen: &HashMap<String, usize>, ids: &[String], what: &str) {
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{what} more than once: {twice:?}");
    let missing: Vec<_> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{what} missing: {missing:?}");
}

#[test]
fn a_killed_hosts_entries_are_reclaimed_and_finished_by_another() {
    let redis = RedisServer::start();
    let stream = key("crash");
    let ids: Vec<String> = (0..60)
        .map(|_| {
            redis.add(
                &stream,
                &[("action", "emit"), ("emit_to", "out"), ("sleep_ms", "20")],
            )
        })
        .collect();
    let mut a = Host::misbehave(
        &redis,
        &stream,
        &with(&["--consumer", "a", "--concurrency", "1"]),
    );
    eventually(WAIT, "host a under way", || {
        (redis.range("out").len() >= 5).then_some(())
    });
    a.signal(libc::SIGKILL);
    a.wait_exit(WAIT);
    let handled_by_a = redis.range("out").len();
    assert!(handled_by_a < 60, "a was killed mid-batch");
    let b = Host::misbehave(&redis, &stream, &with(&["--consumer", "b"]));
    redis.wait_for_len("out", 60);
    assert_exactly_once(&counts(&redis, "out"), &ids, "emitted");
    redis.wait_until_settled(&stream, "g", WAIT);
    b.wait_for_log("reclaimed idle pending entries", WAIT);
}

#[test]
fn a_host_frozen_past_claim_idle_loses_nothing_and_dead_letters_nothing_twice() {
    let redis = RedisServer::start();
    let stream = key("frozen");
    let (emit_ids, dead_ids) = mixed_entries(&redis, &stream, 30, 5, "50");
    let a = Host::misbehave(
        &redis,
        &stream,
        &with(&["--consumer", "a", "--concurrency", "1"]),
    );
    eventually(WAIT, "host a under way", || {
        (redis.range("out").len() >= 3).then_some(())
    });
    a.signal(libc::SIGSTOP);
    let b = Host::misbehave(
        &redis,
        &stream,
        &with(&["--consumer", "b", "--concurrency", "1"]),
    );
    b.wait_for_log("reclaimed idle pending entries", WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    a.signal(libc::SIGCONT);
    redis.wait_for_len("out", emit_ids.len());
    redis.wait_for_len(&format!("{stream}:dlq"), dead_ids.len());
    redis.wait_until_settled(&stream, "g", WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&counts(&redis, "out"), &emit_ids, "emitted");
    assert_exactly_once(
        &counts(&redis, &format!("{stream}:dlq")),
        &dead_ids,
        "dead-lettered",
    );
}

#[test]
fn a_poison_pill_is_dead_lettered_after_exactly_max_deliveries_across_a_redis_restart() {
    let mut redis = RedisServer::start();
    let stream = key("poison");
    let pill = redis.add(
        &stream,
        &[("action", "retryable"), ("reason", "still broken")],
    );
    let host = Host::misbehave(&redis, &stream, &with(&["--max-deliveries", "4"]));
    eventually(WAIT, "two failed deliveries", || {
        (host.failed_calls(&pill) >= 2).then_some(())
    });
    redis.restart();
    let dlq = redis.wait_for_len(&format!("{stream}:dlq"), 1);
    let rec: HashMap<_, _> = dlq[0].1.iter().cloned().collect();
    assert_eq!(rec["kind"], "max-deliveries");
    assert_eq!(rec["source_id"], pill);
    assert_eq!(rec["deliveries"], "4");
    assert_eq!(
        rec["reason"],
        "delivered 4 times without success; last failure: still broken"
    );
    assert_eq!(rec["field:action"], "retryable");
    assert_eq!(
        host.failed_calls(&pill),
        4,
        "exactly --max-deliveries handler calls:\n{}",
        host.log()
    );
    assert_eq!(redis.pending(&stream, "g"), 0);
}

/// The poison pill again, with the reply to the reaper's first claim lost
/// on the way back (the claim took effect in Redis): the repeated claim must
/// recognise the entry its lost attempt took, so each delivery Redis counts
/// is still one handler call.
#[test]
fn a_claim_whose_reply_is_lost_costs_no_delivery() {
    let redis = RedisServer::start();
    let proxy = LossyProxy::start(&redis);
    let stream = key("lost-claim");
    let pill = redis.add(
        &stream,
        &[("action", "retryable"), ("reason", "still broken")],
    );
    // The reaper's claim is the one that names no owner.
    proxy.lose_reply_once(counting_claim(&redis, "", &pill));
    let host = Host::run(
        &proxy.url(),
        &stream,
        "g",
        &plugin("misbehave"),
        &with(&["--max-deliveries", "4"]),
    );
    let dlq = redis.wait_for_len(&format!("{stream}:dlq"), 1);
    assert_eq!(proxy.lost(), 1, "the reaper's claim went through the proxy");
    let rec: HashMap<_, _> = dlq[0].1.iter().cloned().collect();
    assert_eq!(rec["source_id"], pill);
    assert_eq!(rec["deliveries"], "4");
    assert_eq!(
        host.failed_calls(&pill),
        4,
        "one handler call per delivery counted:\n{}",
        host.log()
    );
    assert_eq!(redis.pending(&stream, "g"), 0);
}

#[test]
fn a_slow_handler_is_never_processed_twice_by_two_hosts() {
    let redis = RedisServer::start();
    let stream = key("slow");
    // 600ms calls, longer than half of claim-idle (1s), shorter than the
    // 900ms deadline; small batches so entries wait in the window too.
    let ids: Vec<String> = (0..8)
        .map(|_| {
            redis.add(
                &stream,
                &[("action", "emit"), ("emit_to", "out"), ("sleep_ms", "600")],
            )
        })
        .collect();
    let flags = with(&["--concurrency", "1", "--batch", "3"]);
    let a = Host::misbehave(
        &redis,
        &stream,
        &[&flags[..], &["--consumer", "a"]].concat(),
    );
    let b = Host::misbehave(
        &redis,
        &stream,
        &[&flags[..], &["--consumer", "b"]].concat(),
    );
    redis.wait_for_len("out", ids.len());
    redis.wait_until_settled(&stream, "g", WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    assert_exactly_once(&counts(&redis, "out"), &ids, "handled");
    assert_eq!(redis.range("out").len(), ids.len());
    for host in [&a, &b] {
        assert_eq!(
            host.count_log("reclaimed idle pending entries"),
            0,
            "nothing was stolen:\n{}",
            host.log()
        );
    }
    assert!(a.count_log("keep-alive renewed") + b.count_log("keep-alive renewed") > 0);
}

#[test]
fn four_hosts_with_crashes_end_with_every_entry_acked_once_or_dead_lettered_once() {
    let redis = RedisServer::start();
    let stream = key("chaos");
    let (emit_ids, dead_ids) = mixed_entries(&redis, &stream, 400, 10, "2");
    let flags = with(&["--concurrency", "1", "--batch", "10"]);
    let spawn = |name: &str| {
        Host::misbehave(
            &redis,
            &stream,
            &[&flags[..], &["--consumer", name]].concat(),
        )
    };
    let mut hosts: Vec<Host> = ["h1", "h2", "h3", "h4"].iter().map(|n| spawn(n)).collect();
    eventually(WAIT, "under way", || {
        (redis.range("out").len() >= 60).then_some(())
    });
    for victim in [0, 1] {
        hosts[victim].signal(libc::SIGKILL);
        hosts[victim].wait_exit(WAIT);
    }
    hosts.push(spawn("h5"));
    eventually(WAIT, "more progress", || {
        (redis.range("out").len() >= 200).then_some(())
    });
    hosts[2].signal(libc::SIGKILL);
    hosts[2].wait_exit(WAIT);
    hosts.push(spawn("h6"));
    redis.wait_for_len("out", emit_ids.len());
    redis.wait_for_len(&format!("{stream}:dlq"), dead_ids.len());
    redis.wait_until_settled(&stream, "g", WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    assert_exactly_once(&counts(&redis, "out"), &emit_ids, "acked with its emit");
    assert_exactly_once(
        &counts(&redis, &format!("{stream}:dlq")),
        &dead_ids,
        "dead-lettered",
    );
    assert_eq!(redis.range("out").len(), emit_ids.len());
}

#[test]
fn a_failed_dead_letter_write_leaves_the_entry_pending_until_it_can_be_written() {
    let redis = RedisServer::start();
    let stream = key("oom");
    let id = redis.add(
        &stream,
        &[
            ("action", "permanent"),
            ("reason", "bad order"),
            ("sleep_ms", "700"),
        ],
    );
    let host = Host::misbehave(&redis, &stream, &with(&[]));
    eventually(WAIT, "entry delivered", || {
        (redis.pending(&stream, "g") == 1).then_some(())
    });
    let mut c = redis.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut c)
        .unwrap();
    host.wait_for_log("Redis refused the commit; the entry stays pending", WAIT);
    assert!(redis.range(&format!("{stream}:dlq")).is_empty());
    assert_eq!(
        redis.pending_ids(&stream, "g"),
        [id.as_str()],
        "still pending, not lost"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut c)
        .unwrap();
    let dlq = redis.wait_for_len(&format!("{stream}:dlq"), 1);
    let rec: HashMap<_, _> = dlq[0].1.iter().cloned().collect();
    assert_eq!(rec["source_id"], id);
    assert_eq!(rec["kind"], "permanent");
    assert_eq!(
        rec["deliveries"], "2",
        "reclaimed and handled again once Redis accepted writes"
    );
    redis.wait_until_settled(&stream, "g", WAIT);
}

#[test]
fn entries_trimmed_while_pending_are_dead_lettered_as_trimmed() {
    let redis = RedisServer::start();
    let stream = key("trimmed");
    let ids: Vec<String> = (0..3)
        .map(|_| {
            redis.add(
                &stream,
                &[("action", "retryable"), ("reason", "downstream down")],
            )
        })
        .collect();
    let host = Host::misbehave(&redis, &stream, &with(&["--max-deliveries", "100"]));
    eventually(WAIT, "all failed once", || {
        (host.count_log("handler failed") >= 3).then_some(())
    });
    let mut c = redis.conn();
    let _: u64 = redis::cmd("XTRIM")
        .arg(&stream)
        .arg("MAXLEN")
        .arg(0)
        .query(&mut c)
        .unwrap();
    let dlq = redis.wait_for_len(&format!("{stream}:dlq"), 3);
    let mut trimmed: Vec<String> = dlq
        .iter()
        .map(|(_, f)| {
            let rec: HashMap<_, _> = f.iter().cloned().collect();
            assert_eq!(rec["kind"], "trimmed");
            assert!(!rec.keys().any(|k| k.starts_with("field:")));
            rec["source_id"].clone()
        })
        .collect();
    trimmed.sort();
    assert_eq!(trimmed, ids);
    redis.wait_until_settled(&stream, "g", WAIT);
}

#[test]
fn a_vanished_stream_is_recreated_at_start_id_and_served() {
    let redis = RedisServer::start();
    let stream = key("vanish");
    redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let _host = Host::misbehave(&redis, &stream, &[]);
    redis.wait_for_len("out", 1);
    let mut c = redis.conn();
    let _: u64 = redis::cmd("DEL").arg(&stream).query(&mut c).unwrap();
    // Every entry went with the key: the group starts over at --start-id.
    eventually(
        WAIT,
        "the stream and its group are back at --start-id",
        || {
            let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query(&mut c)
                .ok()?;
            let last: String =
                redis::from_redis_value(groups.first()?["last-delivered-id"].clone()).ok()?;
            (last == "0-0").then_some(())
        },
    );
    let again = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let out = redis.wait_for_len("out", 2);
    assert!(
        out[1]
            .1
            .iter()
            .any(|(k, v)| k == "source_id" && *v == again)
    );
}

#[test]
fn clean_shutdown_hands_unfinished_entries_to_a_live_peer_and_deletes_the_consumer() {
    let redis = RedisServer::start();
    let stream = key("handover");
    let long = redis.add(
        &stream,
        &[("action", "emit"), ("emit_to", "out"), ("sleep_ms", "800")],
    );
    // A long --claim-idle: without the handover, b could take the entry only
    // after 20 s of idleness.
    let slow = [
        "--claim-idle",
        "20s",
        "--claim-interval",
        "200ms",
        "--handler-timeout",
        "900ms",
    ];
    let (mut a, _b) = crate::support::host::handover_pair(&redis, &stream, &slow);
    a.signal(libc::SIGTERM);
    assert_eq!(a.wait_exit(WAIT).code(), Some(0));
    let exited = std::time::Instant::now();
    a.wait_for_log("handed_over=1 peer=b", WAIT);
    let out = redis.wait_for_len("out", 1);
    assert!(
        exited.elapsed() < Duration::from_secs(10),
        "b took the entry {:?} after a left: it waited out --claim-idle",
        exited.elapsed()
    );
    let rec = crate::support::fields_map(&out[0].1);
    assert_eq!((rec["source_id"], rec["delivery"]), (long.as_str(), "2"));
    redis.wait_until_settled(&stream, "g", WAIT);
    let consumers = redis.consumers(&stream, "g");
    assert!(
        !consumers.contains(&"a".to_owned()),
        "a deleted itself: {consumers:?}"
    );
    assert!(consumers.contains(&"b".to_owned()));
}

#[test]
fn emits_commit_once_each_with_many_of_our_retrying_entries_between_them() {
    // The batched ack+emit script reads ownership with one ranged XPENDING
    // sized for the batch; here hundreds of our own pending (retrying)
    // entries sit between the emitting ones, so that answer is cut short
    // and the script must check the rest one by one, never skip or repeat.
    let redis = RedisServer::start();
    let stream = key("interleaved");
    let mut emitters = Vec::new();
    for i in 0..600 {
        if i % 3 == 2 {
            emitters.push(redis.add(&stream, &[("action", "emit")]));
        } else {
            redis.add(&stream, &[("action", "retryable"), ("reason", "not yet")]);
        }
    }
    let _host = Host::misbehave(
        &redis,
        &stream,
        &[
            "--retry-backoff",
            "5m",
            "--max-deliveries",
            "100",
            "--batch",
            "600",
        ],
    );
    let seen = eventually(WAIT, "every emitter committed", || {
        let c = counts(&redis, "misbehave:out");
        (c.len() == emitters.len() && redis.pending(&stream, "g") == 400).then_some(c)
    });
    for id in &emitters {
        assert_eq!(seen.get(id), Some(&1), "{id} emitted exactly once");
    }
    assert_eq!(redis.range("misbehave:out").len(), emitters.len());
}

#[test]
fn ack_with_emits_script_checks_entries_the_ranged_ownership_read_missed() {
    use streamhost::stream::GroupRef;
    use streamhost::stream::commits::{self, CommitResult, CommitRound, EmitCommit, range_rows};
    use streamhost::vocab::outcome::Emit;
    let redis = RedisServer::start();
    let stream = key("script");
    // A call of 3 entries reads `range_rows(3)` rows of its id range.
    let rows = range_rows(3);
    let ids: Vec<String> = (0..rows + 20)
        .map(|i| redis.add(&stream, &[("n", &i.to_string())]))
        .collect();
    redis.read_as(&stream, "g", "me", ids.len() - 1);
    redis.read_as(&stream, "g", "peer", 1);
    // Commit the first, one past the rows read for the range, and the
    // peer's entry, each with one emit.
    let committed = [&ids[0], &ids[rows + 10], &ids[ids.len() - 1]];
    let emits: Vec<[Emit; 1]> = committed
        .iter()
        .map(|id| {
            [Emit {
                stream: "out".into(),
                fields: [("source_id", id.as_bytes())].into_iter().collect(),
            }]
        })
        .collect();
    let batch: Vec<EmitCommit<'_>> = committed
        .iter()
        .zip(&emits)
        .map(|(id, emits)| EmitCommit { id, emits })
        .collect();
    let g = GroupRef {
        stream: stream.clone(),
        group: "g".into(),
        consumer: "me".into(),
        fence: None,
    };
    let mut round = CommitRound::new(&g, &[]);
    round.ack_with_emits(&g, &batch);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = rt
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    let send = |con: &mut redis::aio::MultiplexedConnection| {
        rt.block_on(round.send(con)).expect("the round trip")
    };
    let unloaded = send(&mut con);
    assert_eq!(unloaded.calls, [None], "not run without its script");
    assert!(unloaded.reload);
    rt.block_on(commits::load_scripts(&mut con)).unwrap();
    use CommitResult::{Done, NotPending};
    assert_eq!(
        send(&mut con).calls,
        [Some(vec![Done, Done, NotPending])],
        "owned ones acked, the peer's left alone"
    );
    let emitted: Vec<String> = redis
        .range("out")
        .into_iter()
        .map(|(_, f)| f[0].1.clone())
        .collect();
    assert_eq!(emitted, [ids[0].clone(), ids[rows + 10].clone()]);
    assert_eq!(
        send(&mut con).calls,
        [Some(vec![NotPending; 3])],
        "a retried commit writes nothing twice"
    );
    assert_eq!(redis.range("out").len(), 2);
    assert_eq!(redis.pending(&stream, "g"), ids.len() - 2);
}
