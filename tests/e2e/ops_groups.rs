//! `host groups`: safe defaults, checked against XINFO GROUPS.

use crate::ops_status::host;
use crate::support::{RedisServer, key};

fn last_delivered(redis: &RedisServer, stream: &str, group: &str) -> Option<String> {
    let rows: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
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
