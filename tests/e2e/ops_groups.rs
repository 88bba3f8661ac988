//! `host groups`: safe defaults, checked against XINFO GROUPS.

use std::collections::HashMap;
use std::time::Duration;

use redis::Commands;

use crate::ops_status::host;
use crate::support::{Host, RedisServer, eventually, fast, key};

const WAIT: Duration = Duration::from_secs(60);

fn last_delivered(redis: &RedisServer, stream: &str, group: &str) -> Option<String> {
    let rows: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(&mut redis.conn())
        .unwrap();
    rows.into_iter()
        .find(|r| redis::from_redis_value::<String>(r["name"].clone()).unwrap() == group)
        .map(|r| redis::from_redis_value(r["last-delivered-id"].clone()).unwrap())
}

#[test]
fn groups_are_created_moved_and_destroyed_safely() {
    let redis = RedisServer::start();
    let stream = key("ops-groups");
    let ids: Vec<String> = (0..10)
        .map(|i| redis.add(&stream, &[("n", &i.to_string())]))
        .collect();

    // Created at `$` by default: only new entries.
    let (code, _, err) = host(
        &redis,
        &["groups", "create", "--stream", &stream, "--group", "fresh"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        last_delivered(&redis, &stream, "fresh").as_deref(),
        Some(ids[9].as_str())
    );
    let (code, _, err) = host(
        &redis,
        &["groups", "create", "--stream", &stream, "--group", "fresh"],
    );
    assert_eq!(code, 64);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = host(
        &redis,
        &["groups", "create", "--stream", "test:nope", "--group", "g"],
    );
    assert_eq!(code, 64);
    assert!(err.contains("does not exist"), "{err}");
    let (code, _, _) = host(
        &redis,
        &[
            "groups", "create", "--stream", &stream, "--group", "all", "--start", "0",
        ],
    );
    assert_eq!(code, 0);

    // setid: back is fine; forward past undelivered entries needs --force.
    let (code, _, err) = host(
        &redis,
        &[
            "groups", "setid", "--stream", &stream, "--group", "all", "--id", &ids[4],
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("would skip 5 entries"), "{err}");
    assert_eq!(
        last_delivered(&redis, &stream, "all").as_deref(),
        Some("0-0")
    );
    let (code, _, err) = host(
        &redis,
        &[
            "groups", "setid", "--stream", &stream, "--group", "all", "--id", &ids[4], "--force",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        last_delivered(&redis, &stream, "all").as_deref(),
        Some(ids[4].as_str())
    );
    let (code, _, err) = host(
        &redis,
        &[
            "groups", "setid", "--stream", &stream, "--group", "fresh", "--id", "0",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        last_delivered(&redis, &stream, "fresh").as_deref(),
        Some("0-0")
    );

    // destroy refuses while entries are pending.
    redis.read_as(&stream, "all", "c", 2);
    let (code, _, err) = host(
        &redis,
        &["groups", "destroy", "--stream", &stream, "--group", "all"],
    );
    assert_eq!(code, 64);
    assert!(err.contains("2 pending entries"), "{err}");
    assert!(last_delivered(&redis, &stream, "all").is_some());
    let (code, _, err) = host(
        &redis,
        &[
            "groups", "destroy", "--stream", &stream, "--group", "all", "--force",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(last_delivered(&redis, &stream, "all").is_none());
    let (code, _, _) = host(
        &redis,
        &["groups", "destroy", "--stream", &stream, "--group", "fresh"],
    );
    assert_eq!(code, 0);
    let (code, _, err) = host(
        &redis,
        &["groups", "destroy", "--stream", &stream, "--group", "fresh"],
    );
    assert_eq!(code, 64);
    assert!(err.contains("has no group"), "{err}");
}

fn destroy(redis: &RedisServer, stream: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["groups", "destroy", "--stream", stream, "--group", "g"];
    args.extend(extra);
    host(redis, &args)
}

#[test]
fn destroy_is_refused_while_a_consumer_is_active_and_allowed_with_force_or_once_idle() {
    let redis = RedisServer::start();
    let stream = key("ops-groups-live");
    for i in 0..5 {
        redis.add(&stream, &[("n", &i.to_string())]);
    }
    let mut live = Host::misbehave(&redis, &stream, &fast(&["--consumer", "live-1"]));
    redis.wait_until_settled(&stream, "g", WAIT);
    eventually(WAIT, "the host reads everything", || {
        (last_delivered(&redis, &stream, "g").as_deref()
            == Some(redis.range(&stream)[4].0.as_str()))
        .then_some(())
    });

    // Nothing is pending, but the host reads (within the default 30 s):
    // refused, naming it and its idle time.
    let (code, _, err) = destroy(&redis, &stream, &[]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("live-1") && err.contains("idle") && err.contains("--force"),
        "{err}"
    );
    assert!(
        last_delivered(&redis, &stream, "g").is_some(),
        "group intact"
    );

    // --force overrides.
    let (code, out, err) = destroy(&redis, &stream, &["--claim-idle", "5s", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("destroyed group g"), "{out}");

    // The host puts its group back; once it is gone (killed, so its
    // consumer stays behind) and idle for --claim-idle, no --force is needed.
    eventually(WAIT, "the host recreates its group", || {
        redis
            .consumers(&stream, "g")
            .contains(&"live-1".to_owned())
            .then_some(())
    });
    live.signal(9);
    live.wait_exit(WAIT);
    eventually(WAIT, "destroy is allowed once the consumer is idle", || {
        let (code, _, err) = destroy(&redis, &stream, &["--claim-idle", "1s"]);
        assert!(code == 0 || code == 64, "{err}");
        (code == 0).then_some(())
    });
    assert!(last_delivered(&redis, &stream, "g").is_none());
}

/// Source ids of the markers `misbehave`'s `emit` wrote to `out`, with how
/// often each appears.
fn emitted(redis: &RedisServer, out: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for (_, fields) in redis.range(out) {
        let source = fields
            .iter()
            .find(|(k, _)| k == "source_id")
            .map(|(_, v)| v.clone())
            .expect("a marker names its source");
        *seen.entry(source).or_default() += 1;
    }
    seen
}

#[test]
fn a_forced_destroy_under_a_live_host_recreates_the_group_where_it_had_got_to_without_replay() {
    let redis = RedisServer::start();
    let stream = key("ops-groups-replay");
    let out = format!("{stream}:out");
    let add = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| redis.add(&stream, &[("action", "emit"), ("emit_to", &out)]))
            .collect()
    };
    let old = add(20);
    let _host = Host::misbehave(&redis, &stream, &fast(&[]));
    redis.wait_for_len(&out, old.len());
    redis.wait_until_settled(&stream, "g", WAIT);

    let (code, _, err) = destroy(&redis, &stream, &["--force"]);
    assert_eq!(code, 0, "{err}");
    eventually(WAIT, "the host recreates its group", || {
        last_delivered(&redis, &stream, "g")
    });
    let new = add(5);
    let newest = new.last().unwrap().clone();
    eventually(WAIT, "the new entries are delivered and settled", || {
        (last_delivered(&redis, &stream, "g").as_deref() == Some(newest.as_str())
            && redis.pending(&stream, "g") == 0)
            .then_some(())
    });
    let seen = emitted(&redis, &out);
    let once: Vec<&String> = old.iter().chain(&new).collect();
    assert_eq!(
        seen.len(),
        once.len(),
        "outputs are the old entries and the new ones: {seen:?}"
    );
    for id in once {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "{id} handled exactly once: {seen:?}"
        );
    }
}

#[test]
fn entries_waiting_out_a_retry_when_their_group_is_destroyed_are_still_handled_once() {
    let redis = RedisServer::start();
    let stream = key("ops-groups-inflight");
    let out = format!("{stream}:out");
    let done = redis.add(&stream, &[("action", "emit"), ("emit_to", &out)]);
    let _host = Host::misbehave(&redis, &stream, &fast(&["--retry-backoff", "3s"]));
    redis.wait_for_len(&out, 1);
    // Fail their first delivery: held here through a 3 s backoff.
    let retried: Vec<String> = (0..5)
        .map(|_| {
            redis.add(
                &stream,
                &[("action", "emit"), ("emit_to", &out), ("fail_until", "2")],
            )
        })
        .collect();
    eventually(WAIT, "the entries wait out their backoff", || {
        (redis.pending_ids(&stream, "g") == retried).then_some(())
    });

    let (code, _, err) = destroy(&redis, &stream, &["--force"]);
    assert_eq!(code, 0, "{err}");
    let all = 1 + retried.len();
    eventually(WAIT, "every entry is handled and acked", || {
        (redis.range(&out).len() >= all && redis.pending(&stream, "g") == 0).then_some(())
    });
    let seen = emitted(&redis, &out);
    assert_eq!(seen.len(), 1 + retried.len(), "{seen:?}");
    for id in retried.iter().chain([&done]) {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "{id} handled exactly once: {seen:?}"
        );
    }
    let dead: usize = redis.conn().xlen(format!("{stream}:dlq")).unwrap();
    assert_eq!(dead, 0, "nothing dead-lettered");
}

/// `(consumer, deliveries)` of pending entry `id` of group `g`, if pending.
fn row(redis: &RedisServer, stream: &str, id: &str) -> Option<(String, u32)> {
    let rows: Vec<(String, String, u64, u32)> = redis::cmd("XPENDING")
        .arg(stream)
        .arg("g")
        .arg(id)
        .arg(id)
        .arg(1)
        .query(&mut redis.conn())
        .unwrap();
    rows.into_iter().next().map(|(_, c, _, n)| (c, n))
}

#[test]
fn hosts_restoring_a_vanished_group_at_once_never_move_it_back_nor_steal_rows() {
    use streamhost::stream::GroupRef;
    use streamhost::stream::groups::{HeldEntry, Regroup, restore};
    let redis = RedisServer::start();
    let stream = key("ops-groups-restore");
    let ids: Vec<String> = (0..6)
        .map(|i| redis.add(&stream, &[("n", &i.to_string())]))
        .collect();
    redis.read_as(&stream, "g", "a", 6);
    let mut c = redis.conn();
    let _: () = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(&stream)
        .arg("g")
        .query(&mut c)
        .unwrap();
    let held = |consumer: &str, id: &str, deliveries| HeldEntry {
        consumer: consumer.into(),
        id: id.into(),
        deliveries,
    };
    let host = |consumer: &str| GroupRef {
        stream: stream.clone(),
        group: "g".into(),
        consumer: consumer.into(),
        fence: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    rt.block_on(async {
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        // Host a knew delivery up to ids[2] and holds ids[1] at delivery 3.
        let a = restore(&mut con, &host("a"), &ids[2], "0", &[held("a", &ids[1], 3)])
            .await
            .unwrap();
        assert_eq!((a.how, a.rows), (Regroup::Created, 1));
        // Host b, a moment later, knew up to ids[4] and holds ids[4] (and,
        // stale, ids[1], which a restored first).
        let b = restore(
            &mut con,
            &host("b"),
            &ids[4],
            "0",
            &[held("b", &ids[4], 1), held("b", &ids[1], 1)],
        )
        .await
        .unwrap();
        assert_eq!(
            (b.how, b.rows),
            (
                Regroup::Raised {
                    from: ids[2].clone()
                },
                1
            )
        );
        // Host c, behind both, moves nothing back.
        let c = restore(&mut con, &host("c"), &ids[0], "0", &[])
            .await
            .unwrap();
        assert_eq!((c.how, c.rows), (Regroup::Kept { at: ids[4].clone() }, 0));
    });
    assert_eq!(last_delivered(&redis, &stream, "g"), Some(ids[4].clone()));
    assert_eq!(row(&redis, &stream, &ids[1]), Some(("a".into(), 3)));
    assert_eq!(row(&redis, &stream, &ids[4]), Some(("b".into(), 1)));
    assert_eq!(row(&redis, &stream, &ids[0]), None, "nobody held it");
    for consumer in ["a", "b", "c"] {
        assert!(redis.consumers(&stream, "g").contains(&consumer.to_owned()));
    }
    // The key itself deleted: nothing of it can be delivered again, so the
    // group starts over at the fresh-start position.
    let _: u64 = redis::cmd("DEL").arg(&stream).query(&mut c).unwrap();
    let fresh = rt.block_on(async {
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        restore(&mut con, &host("a"), &ids[5], "0", &[held("a", &ids[5], 1)])
            .await
            .unwrap()
    });
    assert_eq!((fresh.how, fresh.rows), (Regroup::Fresh, 0));
    assert_eq!(last_delivered(&redis, &stream, "g").as_deref(), Some("0-0"));
}
