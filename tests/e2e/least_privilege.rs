//! The README's least-privilege ACL rule set, taken from the README itself,
//! runs every path of a pipeline: reads, emits, dead letters, retries,
//! reclaims from a dead consumer, recovery of its own pending entries,
//! trimming and the shutdown handover.

use std::path::Path;
use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, fast, fields_map, plugin};

const WAIT: Duration = Duration::from_secs(60);

/// The rule set between the README's `acl:begin` and `acl:end` markers, as
/// `ACL SETUSER` arguments.
fn documented_rules() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let start = readme.find("<!-- acl:begin -->").expect("acl:begin marker");
    let end = readme.find("<!-- acl:end -->").expect("acl:end marker");
    let block = &readme[start..end];
    let block = block
        .split("```")
        .nth(1)
        .expect("a code block between the markers");
    let words: Vec<String> = block.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words[..3], ["ACL", "SETUSER", "streamhost"], "{block}");
    words[2..].to_vec()
}

#[test]
fn the_documented_acl_rule_set_runs_every_path() {
    let redis = RedisServer::start();
    let mut admin = redis.conn();
    let rules: Vec<String> = documented_rules()
        .into_iter()
        .map(|w| {
            if w == ">CHANGE-ME" {
                ">pa55-w0rd".into()
            } else {
                w
            }
        })
        .collect();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&rules)
        .query(&mut admin)
        .expect("the README's rule set is valid ACL syntax");

    // Small stream nodes, so the approximate trim (`~`) shows on 32 entries.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(5)
        .query(&mut admin)
        .unwrap();
    let stream = "orders";
    // Left pending on a consumer that died, and on our own name from a
    // previous run: the reaper and the recovery must take them.
    redis.add(
        stream,
        &[("action", "emit"), ("emit_to", "notifications:out")],
    );
    redis.read_as(stream, "g", "dead-peer", 1);
    redis.add(
        stream,
        &[("action", "emit"), ("emit_to", "notifications:out")],
    );
    redis.read_as(stream, "g", "c1", 1);
    for i in 0..30 {
        let fields: &[(&str, &str)] = match i % 6 {
            0 => &[("action", "permanent")],
            1 => &[
                ("action", "fail-until"),
                ("n", "2"),
                ("emit_to", "notifications:out"),
            ],
            _ => &[("action", "emit"), ("emit_to", "notifications:out")],
        };
        redis.add(stream, fields);
    }
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    let url = format!("redis://streamhost:pa55-w0rd@127.0.0.1:{port}");
    let mut host = Host::run(
        &url,
        stream,
        "g",
        &plugin("misbehave"),
        &fast(&[
            "--consumer",
            "c1",
            "--maxlen",
            "5",
            "--trim-interval",
            "200ms",
            "--emit-allow",
            "notifications:*",
            "--handover",
        ]),
    );
    eventually(WAIT, "every entry settled", || {
        (redis.entries_read(stream, "g") == Some(32) && redis.pending(stream, "g") == 0)
            .then_some(())
    });
    // The fail-until entries fail their first delivery: acked (nothing
    // pending, none dead-lettered) means a retry was released and reclaimed.
    let dead = redis.range("orders:dlq");
    assert_eq!(dead.len(), 5, "only the permanent failures: {dead:?}");
    assert!(
        dead.iter()
            .all(|(_, f)| fields_map(f)["kind"] == "permanent")
    );
    let emitted = redis.range("notifications:out");
    assert_eq!(emitted.len(), 22, "every emitting entry emitted once");
    let second_deliveries = emitted
        .iter()
        .filter(|(_, f)| fields_map(f)["delivery"] == "2")
        .count();
    assert_eq!(
        second_deliveries, 2,
        "the dead peer's entry was reclaimed and our own recovered"
    );
    eventually(WAIT, "trimmed to about 5", || {
        let mut c = redis.conn();
        let len: u64 = redis::cmd("XLEN").arg(stream).query(&mut c).ok()?;
        (len < 32).then_some(())
    });
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(WAIT).code(), Some(0), "{}", host.log());
    let log = host.log();
    // redis-rs spells a refusal `NoPerm: this user has no permissions …`.
    let lower = log.to_lowercase();
    assert!(
        !lower.contains("noperm") && !lower.contains("no permissions"),
        "a command was refused:\n{log}"
    );
    assert!(
        !log.contains("pa55-w0rd"),
        "the password leaked into the log"
    );
    assert!(
        !redis.consumers(stream, "g").contains(&"c1".to_owned()),
        "the consumer was deleted at shutdown"
    );
}
