//! `host trim`: the group-safe retention of `run`, applied once; it never
//! cuts what a group still needs unless --force, which names the losses.

use serde_json::Value as Json;

use crate::ops_status::host;
use crate::support::{RedisServer, key};

fn ids(redis: &RedisServer, stream: &str) -> Vec<String> {
    redis.range(stream).into_iter().map(|(id, _)| id).collect()
}

#[test]
fn trim_refuses_unsafe_cuts_unless_forced() {
    let redis = RedisServer::start();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(5)
        .query(&mut redis.conn())
        .unwrap();
    let stream = key("ops-trim");
    let all: Vec<String> = (0..100)
        .map(|i| redis.add(&stream, &[("n", &i.to_string())]))
        .collect();
    // 30 delivered, the first 20 acked: 10 pending, 70 undelivered.
    redis.read_as(&stream, "lagging", "slow", 30);
    redis.ack(&stream, "lagging", &all[..20]);

    let (code, out, err) = host(&redis, &["trim", "--stream", &stream, "--maxlen", "10"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("held back by group lagging") && out.contains(&all[20]),
        "{out}"
    );
    let left = ids(&redis, &stream);
    assert!(
        left.len() < 100,
        "whole acked nodes went: {} left",
        left.len()
    );
    assert!(
        left.ends_with(&all[20..]),
        "every pending and undelivered entry stays"
    );

    let (code, out, err) = host(
        &redis,
        &["trim", "--stream", &stream, "--max-age", "0s", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let report: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(report["held_by"], "lagging");
    assert!(ids(&redis, &stream).ends_with(&all[20..]));

    // Forced: exactly 10 remain, and the warning names what the group lost.
    let (code, out, err) = host(
        &redis,
        &[
            "trim", "--stream", &stream, "--maxlen", "10", "--force", "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(ids(&redis, &stream), all[90..].to_vec());
    assert!(
        err.contains("warning: --force removed entries group lagging still needed: 10 pending")
            && err.contains(&all[20])
            && err.contains("and 60 not yet delivered"),
        "{err}"
    );
    let report: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(report["after"], 10);
    let lost = &report["lost"][0];
    assert_eq!(
        (&lost["undelivered"], &lost["undelivered_exact"]),
        (&Json::from(60), &Json::from(true))
    );
    // Fewer pending ids than the listing cap: every one is listed.
    assert_eq!(
        (&lost["pending_count"], &lost["pending_exact"]),
        (&Json::from(10), &Json::from(true))
    );
    assert_eq!(lost["pending"], Json::from(all[20..30].to_vec()));

    // Once the group has caught up, the cap applies without --force.
    redis.read_as(&stream, "lagging", "slow", 1000);
    let pending: Vec<String> = ids(&redis, &stream);
    redis.ack(&stream, "lagging", &all[20..30]);
    redis.ack(&stream, "lagging", &pending);
    let (code, out, _) = host(&redis, &["trim", "--stream", &stream, "--maxlen", "2"]);
    assert_eq!(code, 0);
    assert!(!out.contains("held back"), "{out}");
    let kept = ids(&redis, &stream);
    assert!(
        (2..=7).contains(&kept.len()),
        "about 2 kept (whole nodes of 5, never fewer than 2): {}",
        kept.len()
    );
    assert!(kept.ends_with(&all[98..]), "the newest stay");
}

#[test]
fn an_exact_trim_cuts_a_small_stream_to_the_entry_but_never_past_a_group() {
    let redis = RedisServer::start();
    let stream = key("ops-trim-exact");
    let all: Vec<String> = (0..30)
        .map(|i| redis.add(&stream, &[("n", &i.to_string())]))
        .collect();
    // One node holds all 30 entries: `~` removes nothing.
    let (code, _, err) = host(&redis, &["trim", "--stream", &stream, "--maxlen", "5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ids(&redis, &stream).len(), 30);
    // A group that has delivered 20 and acked 12 needs entries from the 13th.
    redis.read_as(&stream, "g", "c", 20);
    redis.ack(&stream, "g", &all[..12]);
    let (code, out, err) = host(
        &redis,
        &[
            "trim", "--stream", &stream, "--maxlen", "5", "--exact", "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        ids(&redis, &stream),
        all[12..].to_vec(),
        "cut at the floor, exactly"
    );
    let report: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(report["held_by"], "g");
    assert_eq!(report["removed"], 12);
    // Caught up: exactly five remain.
    redis.read_as(&stream, "g", "c", 100);
    redis.ack(&stream, "g", &all[12..]);
    let (code, _, err) = host(
        &redis,
        &["trim", "--stream", &stream, "--maxlen", "5", "--exact"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(ids(&redis, &stream), all[25..].to_vec());
    let (code, _, err) = host(
        &redis,
        &[
            "trim", "--stream", &stream, "--maxlen", "5", "--exact", "--force",
        ],
    );
    assert_ne!(code, 0, "--exact and --force contradict each other");
    assert!(err.contains("--force"), "{err}");
}
