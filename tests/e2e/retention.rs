//! Retention never removes what a consumer group still needs.

use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, key};

const WAIT: Duration = Duration::from_secs(60);

/// Small stream nodes so approximate trims (`~`) are visible on small streams.
fn small_nodes(redis: &RedisServer) {
    let mut c = redis.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(5)
        .query(&mut c)
        .unwrap();
}

fn ids(redis: &RedisServer, stream: &str) -> Vec<String> {
    redis.range(stream).into_iter().map(|(id, _)| id).collect()
}

#[test]
fn trimming_with_a_lagging_group_keeps_every_undelivered_and_pending_entry() {
    let redis = RedisServer::start();
    small_nodes(&redis);
    let stream = key("retention");
    let all: Vec<String> = (0..100)
        .map(|i| redis.add(&stream, &[("n", &i.to_string())]))
        .collect();
    // A lagging group: 30 delivered, the first 20 acked, 10 pending, 70 undelivered.
    redis.read_as(&stream, "lagging", "slow", 30);
    redis.ack(&stream, "lagging", &all[..20]);

    let host = Host::misbehave(
        &redis,
        &stream,
        &["--maxlen", "10", "--trim-interval", "100ms"],
    );
    host.wait_for_log("retention held back", WAIT);
    assert!(host.log().contains("group=lagging"), "{}", host.log());
    eventually(WAIT, "old acked entries trimmed", || {
        (ids(&redis, &stream).len() < 100).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let left = ids(&redis, &stream);
    assert!(
        left.ends_with(&all[20..]),
        "every entry from the oldest pending one on survives; left {} entries",
        left.len()
    );

    // The laggard catches up: now the length cap applies.
    redis.read_as(&stream, "lagging", "slow", 1000);
    redis.ack(&stream, "lagging", &all[20..]);
    host.wait_for_log("retention no longer held back", WAIT);
    let left = eventually(WAIT, "trimmed to about --maxlen", || {
        let left = ids(&redis, &stream);
        (left.len() <= 15).then_some(left)
    });
    assert!(
        left.len() >= 10,
        "MAXLEN ~ keeps at least the cap: {}",
        left.len()
    );
    assert!(left.ends_with(&all[all.len() - 10..]));
}

#[test]
fn max_age_trims_old_entries_but_not_past_a_pending_one() {
    let redis = RedisServer::start();
    small_nodes(&redis);
    let stream = key("age");
    let mut c = redis.conn();
    // Entries from an hour ago (explicit ids), one of them stuck pending.
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 3_600_000;
    let old: Vec<String> = (0..30)
        .map(|i| {
            redis::cmd("XADD")
                .arg(&stream)
                .arg(format!("{}-{i}", hour_ago))
                .arg("action")
                .arg("ok")
                .query::<String>(&mut c)
                .unwrap()
        })
        .collect();
    redis.read_as(&stream, "other", "x", 30);
    let mut acked: Vec<&String> = old.iter().collect();
    let stuck = acked.remove(15);
    redis.ack(&stream, "other", &acked);
    let fresh = redis.add(&stream, &[("action", "ok")]);

    let host = Host::misbehave(
        &redis,
        &stream,
        &["--max-age", "10m", "--trim-interval", "100ms"],
    );
    host.wait_for_log("retention held back", WAIT);
    eventually(WAIT, "entries older than the stuck one trimmed", || {
        (ids(&redis, &stream).len() < 31).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let left = ids(&redis, &stream);
    assert!(left.contains(stuck) && left.contains(&fresh), "{left:?}");
    assert!(
        left.ends_with(
            &old[15..]
                .iter()
                .cloned()
                .chain([fresh.clone()])
                .collect::<Vec<_>>()
        )
    );

    redis.ack(&stream, "other", &[stuck]);
    let left = eventually(WAIT, "all hour-old entries gone", || {
        let left = ids(&redis, &stream);
        (left == [fresh.clone()]).then_some(left)
    });
    assert_eq!(left, [fresh]);
}

/// Runs a host with `--maxlen 30` over `stream` (holding `all`) and checks
/// that it keeps the newest 30 entries, and not many more.
fn keeps_about_the_newest_30(redis: &RedisServer, stream: &str, all: &[String]) {
    let host = Host::misbehave(
        redis,
        stream,
        &["--maxlen", "30", "--trim-interval", "100ms"],
    );
    eventually(WAIT, "trimmed", || {
        (ids(redis, stream).len() < all.len()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let left = ids(redis, stream);
    assert!(
        left.len() >= 30 && left.ends_with(&all[all.len() - 30..]),
        "--maxlen 30 keeps at least the newest 30 entries; left {}",
        left.len()
    );
    assert!(
        left.len() <= 40,
        "and trims about down to 30: left {}",
        left.len()
    );
    drop(host);
}

#[test]
fn maxlen_keeps_n_entries_when_a_groups_lag_is_unknown() {
    let redis = RedisServer::start();
    small_nodes(&redis);
    let stream = key("unknown-lag");
    let all: Vec<String> = (0..100)
        .map(|i| redis.add(&stream, &[("n", &i.to_string())]))
        .collect();
    let mut c = redis.conn();
    // Created at an explicit id: Redis cannot tell this group's lag.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("late")
        .arg(&all[89])
        .query(&mut c)
        .unwrap();
    keeps_about_the_newest_30(&redis, &stream, &all);
}

#[test]
fn maxlen_keeps_n_entries_after_an_xdel_past_a_groups_last_delivered_id() {
    let redis = RedisServer::start();
    small_nodes(&redis);
    let stream = key("xdel-lag");
    let all: Vec<String> = (0..100)
        .map(|i| redis.add(&stream, &[("n", &i.to_string())]))
        .collect();
    redis.read_as(&stream, "late", "x", 90);
    redis.ack(&stream, "late", &all[..90]);
    let mut c = redis.conn();
    // A deletion past `late`'s last delivered id makes its lag unknown.
    let _: i64 = redis::cmd("XDEL")
        .arg(&stream)
        .arg(&all[95])
        .query(&mut c)
        .unwrap();
    let mut all = all;
    all.remove(95);
    keeps_about_the_newest_30(&redis, &stream, &all);
}

#[test]
fn a_trim_pass_reads_a_bounded_number_of_entries_per_script_call() {
    use streamhost::stream::retention::{TRIM_STEP_BUDGET, TrimMemo, trim};
    use streamhost::vocab::retention::Retention;
    let redis = RedisServer::start();
    small_nodes(&redis);
    let stream = key("bounded-trim");
    let mut c = redis.conn();
    let mut pipe = redis::pipe();
    for i in 0..6_000 {
        pipe.cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("n")
            .arg(i)
            .ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    // One entry far back stays pending: the floor is at the very start.
    redis.read_as(&stream, "laggard", "x", 1);
    let before = ids(&redis, &stream);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let policy = Retention {
        maxlen: Some(3_000),
        max_age: None,
    };
    let memo = TrimMemo::default();
    let report = rt.block_on(async {
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let missing = trim(&mut con, &key("no-stream"), policy, &memo, false).await;
        assert_eq!(
            missing.unwrap(),
            None,
            "a stream not created yet: nothing to trim"
        );
        trim(&mut con, &stream, policy, &memo, false)
            .await
            .unwrap()
            .expect("the stream exists")
    });
    assert_eq!(report.held_by.as_deref(), Some("laggard"));
    assert!(
        u64::from(report.steps) >= 3_000 / TRIM_STEP_BUDGET,
        "the scan for the 3000th newest entry spread over {} calls",
        report.steps
    );
    assert_eq!(
        ids(&redis, &stream),
        before,
        "nothing a group needs trimmed"
    );
    // The next pass knows where the newest 3000 start: one call.
    let again = rt.block_on(async {
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        trim(&mut con, &stream, policy, &memo, false)
            .await
            .unwrap()
            .expect("the stream exists")
    });
    assert_eq!(again.steps, 1);
    // Once the laggard acks, the cap applies.
    redis.ack(&stream, "laggard", &before[..1]);
    redis.read_as(&stream, "laggard", "x", 10_000);
    redis.ack(&stream, "laggard", &before);
    // (An approximate trim evicts at most 100 stream nodes per call, so
    // cutting 3000 entries of 5-entry nodes takes a few passes.)
    for _ in 0..10 {
        let done = rt.block_on(async {
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            trim(&mut con, &stream, policy, &memo, false)
                .await
                .unwrap()
                .expect("the stream exists")
        });
        assert_eq!(done.held_by, None);
        if done.trimmed == 0 {
            break;
        }
    }
    let left = ids(&redis, &stream).len();
    assert!((3_000..3_100).contains(&left), "left {left}");
}

#[test]
fn the_dlq_is_capped_by_dlq_maxlen_and_never_by_the_sources_maxlen() {
    let redis = RedisServer::start();
    small_nodes(&redis);
    let stream = key("dlq-cap");
    let capped = key("dlq-cap-capped");
    for i in 0..60 {
        redis.add(&stream, &[("action", "permanent"), ("n", &i.to_string())]);
        redis.add(&capped, &[("action", "permanent"), ("n", &i.to_string())]);
    }
    let _trims_source = Host::misbehave(
        &redis,
        &stream,
        &["--maxlen", "5", "--trim-interval", "100ms"],
    );
    let _caps_dlq = Host::misbehave(&redis, &capped, &["--dlq-maxlen", "10"]);
    // Settled means all 60 delivered and none pending: "none pending"
    // alone holds too before a host has read anything.
    for s in [&stream, &capped] {
        eventually(WAIT, &format!("{s} handled"), || {
            (redis.entries_read(s, "g") == Some(60) && redis.pending(s, "g") == 0).then_some(())
        });
    }
    redis.wait_for_len(&format!("{stream}:dlq"), 60);
    // Once the source's --maxlen has trimmed it, the dead letters are
    // still all there.
    eventually(WAIT, "source trimmed", || {
        (ids(&redis, &stream).len() < 60).then_some(())
    });
    assert_eq!(
        redis.range(&format!("{stream}:dlq")).len(),
        60,
        "the source's --maxlen never trims dead letters"
    );
    let kept = ids(&redis, &format!("{capped}:dlq")).len();
    assert!(
        (10..=15).contains(&kept),
        "--dlq-maxlen 10 keeps about 10 dead letters, kept {kept}"
    );
}
