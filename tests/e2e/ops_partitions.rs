//! The operator commands and `/api/status` on a partitioned stream
//! (`--partitions N`): one logical stream with a row per partition — its
//! length, each group's owner (the lease holder, read here from the lease
//! key), lag, pending entries and dead letters — and `dlq`, `trim`,
//! `replay` and `groups` acting on every partition unless `--partition I`
//! names one. Every figure is checked against Redis read directly.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value as Json;

use crate::ops_status::{host, json};
use crate::support::http::{free_port, get, get_json};
use crate::support::{Host, RedisServer, eventually, fields_map, key, lease_owner};

fn partition_key(stream: &str, i: u32) -> String {
    format!("{{{stream}:{i}}}")
}

fn dlq_key(stream: &str, i: u32) -> String {
    format!("{{{stream}:{i}}}:dlq")
}

fn xlen(redis: &RedisServer, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query(&mut redis.conn())
        .unwrap()
}

/// `host produce --partitions N --count C n=1`: round-robin, C/N each.
fn produce(redis: &RedisServer, stream: &str, partitions: &str, count: &str) {
    let (code, _, err) = host(
        redis,
        &[
            "produce",
            "--stream",
            stream,
            "--partitions",
            partitions,
            "--count",
            count,
            "n=1",
        ],
    );
    assert_eq!(code, 0, "{err}");
}

/// Dead letters in `{stream:i}:dlq` written as `host run` writes them,
/// their originals carrying `n=<i*100+k>`.
fn dead_letters(redis: &RedisServer, stream: &str, i: u32, count: u32) {
    for k in 0..count {
        let n = (i * 100 + k).to_string();
        let source = partition_key(stream, i);
        redis.add(
            &dlq_key(stream, i),
            &[
                ("kind", "permanent"),
                ("reason", "refused"),
                ("source_stream", &source),
                ("source_id", "1-1"),
                ("field:n", &n),
            ],
        );
    }
}

fn numbers(redis: &RedisServer, key: &str, field: &str) -> BTreeSet<u32> {
    redis
        .range(key)
        .iter()
        .filter_map(|(_, f)| fields_map(f).get(field).map(|v| v.parse().unwrap()))
        .collect()
}

#[test]
fn status_shows_a_leased_stream_as_one_with_each_partitions_owner_lag_and_dead_letters() {
    let redis = RedisServer::start();
    let stream = key("ops-parts-status");
    produce(&redis, &stream, "4", "40");
    for i in [1, 3] {
        redis.add(&partition_key(&stream, i), &[("action", "permanent")]);
    }
    let flags = ["--partitions", "4", "--lease-ttl", "3s"];
    let _a = Host::misbehave(&redis, &stream, &flags);
    let _b = Host::misbehave(&redis, &stream, &flags);
    eventually(
        Duration::from_secs(60),
        "every partition leased, read and done, the poisons dead-lettered",
        || {
            let owners: BTreeSet<String> = (0..4)
                .filter_map(|i| lease_owner(&redis, &stream, i, "g"))
                .collect();
            let done = (0..4).all(|i| {
                let key = partition_key(&stream, i);
                redis.entries_read(&key, "g") == Some(xlen(&redis, &key))
                    && redis.pending(&key, "g") == 0
            });
            let dead = xlen(&redis, &dlq_key(&stream, 1)) + xlen(&redis, &dlq_key(&stream, 3));
            (owners.len() == 2
                && (0..4).all(|i| lease_owner(&redis, &stream, i, "g").is_some())
                && done
                && dead == 2)
                .then_some(())
        },
    );

    let all = json(
        &redis,
        &["status", "--stream", &stream, "--partitions", "4", "--json"],
    );
    let s = &all[0];
    assert_eq!(s["stream"], stream.as_str());
    assert_eq!(s["partitions"], 4);
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let mut total = 0;
    for (i, row) in rows.iter().enumerate() {
        let i = i as u32;
        let key = partition_key(&stream, i);
        assert_eq!(row["index"], i);
        assert_eq!(row["key"], key.as_str());
        let len = xlen(&redis, &key);
        total += len;
        assert_eq!(row["status"]["length"], len, "{key}");
        assert_eq!(
            row["status"]["dlq"]["length"],
            xlen(&redis, &dlq_key(&stream, i)),
            "{key}"
        );
        let holder = lease_owner(&redis, &stream, i, "g").expect("leased");
        assert_eq!(row["owners"]["g"], holder.as_str(), "{key}'s owner");
        let g = &row["status"]["groups"][0];
        assert_eq!(
            (g["name"].as_str(), &g["lag"], &g["pending"]),
            (Some("g"), &Json::from(0), &Json::from(0))
        );
    }
    assert_eq!(s["length"], total);
    assert_eq!(s["dead_letters"], 2);
    assert_eq!(s["dead_letter_kinds"]["permanent"], 2);
    let g = &s["groups"][0];
    assert_eq!(
        (g["name"].as_str(), &g["leased"], &g["partitions"]),
        (Some("g"), &Json::from(4), &Json::from(4))
    );
    let members: BTreeSet<String> = redis::cmd("ZRANGE")
        .arg(format!("{{{stream}}}:members:g"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap();
    let hosts: BTreeSet<String> = g["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        hosts, members,
        "the live hosts are the lease group's members"
    );
    assert_eq!(hosts.len(), 2);

    // The text: a row per partition with its owner.
    let (code, out, err) = host(
        &redis,
        &["status", "--stream", &stream, "--partitions", "4"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("stream {stream}: 4 partitions, {total} entries")),
        "{out}"
    );
    for i in 0..4 {
        let holder = lease_owner(&redis, &stream, i, "g").unwrap();
        let line = out
            .lines()
            .find(|l| l.contains(&partition_key(&stream, i)))
            .unwrap_or_else(|| panic!("no row of partition {i}: {out}"));
        assert!(line.contains(&holder), "{line}");
    }

    // One partition: that one alone, shown whole.
    let one = json(
        &redis,
        &[
            "status",
            "--stream",
            &stream,
            "--partitions",
            "4",
            "--partition",
            "3",
            "--json",
        ],
    );
    let rows = one[0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["index"], 3);
    assert_eq!(one[0]["dead_letters"], xlen(&redis, &dlq_key(&stream, 3)));
    let (code, _, err) = host(
        &redis,
        &[
            "status",
            "--stream",
            &stream,
            "--partitions",
            "4",
            "--partition",
            "4",
        ],
    );
    assert_eq!(code, 64);
    assert!(err.contains("partitions 0 to 3"), "{err}");
    let (code, _, err) = host(&redis, &["status", "--stream", &stream, "--partition", "1"]);
    assert_eq!(code, 64);
    assert!(err.contains("--partition needs --partitions"), "{err}");
}

#[test]
fn dlq_commands_act_on_every_partition_unless_one_is_named() {
    let redis = RedisServer::start();
    let stream = key("ops-parts-dlq");
    for i in 0..3 {
        dead_letters(&redis, &stream, i, 2);
    }
    let parts = ["--stream", &stream, "--partitions", "3"];
    let list = |extra: &[&str]| -> Vec<Json> {
        let args = [&["dlq", "list"][..], &parts[..], extra, &["--json"][..]].concat();
        json(&redis, &args).as_array().unwrap().clone()
    };
    assert_eq!(list(&[]).len(), 6);
    assert_eq!(list(&["--limit", "4"]).len(), 4);
    let one = list(&["--partition", "1"]);
    assert_eq!(one.len(), 2);
    assert!(
        one.iter()
            .all(|r| r["source_stream"] == partition_key(&stream, 1).as_str())
    );

    // `show` finds a record in whichever partition's DLQ holds it (ids are
    // per stream: another partition's record may have the same id, and is
    // shown too), or in the one named.
    let id = redis.range(&dlq_key(&stream, 2))[0].0.clone();
    let shown = json(
        &redis,
        &[&["dlq", "show"][..], &parts[..], &[&id, "--json"][..]].concat(),
    );
    let shown = match shown {
        Json::Array(all) => all,
        one => vec![one],
    };
    let holders: BTreeSet<u32> = (0..3)
        .filter(|i| {
            redis
                .range(&dlq_key(&stream, *i))
                .iter()
                .any(|(r, _)| *r == id)
        })
        .collect();
    assert_eq!(shown.len(), holders.len());
    assert!(
        shown
            .iter()
            .any(|r| r["source_stream"] == partition_key(&stream, 2).as_str())
    );
    let one = json(
        &redis,
        &[
            &["dlq", "show"][..],
            &parts[..],
            &["--partition", "2", &id, "--json"][..],
        ]
        .concat(),
    );
    assert_eq!(one["source_stream"], partition_key(&stream, 2).as_str());

    // Redriving one partition moves its records to it and nothing else.
    let (code, _, err) = host(
        &redis,
        &[
            &["dlq", "redrive"][..],
            &parts[..],
            &["--partition", "0"][..],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        numbers(&redis, &partition_key(&stream, 0), "n"),
        [0, 1].into()
    );
    assert_eq!(xlen(&redis, &dlq_key(&stream, 0)), 0);
    for i in [1, 2] {
        assert_eq!(xlen(&redis, &dlq_key(&stream, i)), 2);
        assert_eq!(xlen(&redis, &partition_key(&stream, i)), 0);
    }
    // Then all: each record back on its own partition, once.
    let (code, out, err) = host(&redis, &[&["dlq", "redrive"][..], &parts[..]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("moved 4 of 4"), "{out}");
    for i in 0..3 {
        assert_eq!(
            numbers(&redis, &partition_key(&stream, i), "n"),
            [i * 100, i * 100 + 1].into(),
            "partition {i}"
        );
        assert_eq!(xlen(&redis, &dlq_key(&stream, i)), 0);
    }

    // Purge counts over every partition, and deletes them all.
    for i in 0..3 {
        dead_letters(&redis, &stream, i, 1);
    }
    let (code, out, err) = host(
        &redis,
        &[&["dlq", "purge"][..], &parts[..], &["--yes"][..]].concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted 3 dead letters"), "{out}");
    assert!((0..3).all(|i| xlen(&redis, &dlq_key(&stream, i)) == 0));

    // A DLQ of its own makes no sense beside partitions.
    let (code, _, err) = host(
        &redis,
        &[&["dlq", "list"][..], &parts[..], &["--dlq", "x"][..]].concat(),
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("--dlq cannot be combined with partitions"),
        "{err}"
    );
}

#[test]
fn replay_trim_and_groups_cover_every_partition() {
    let redis = RedisServer::start();
    let stream = key("ops-parts-window");
    produce(&redis, &stream, "3", "30");
    let parts = ["--stream", &stream, "--partitions", "3"];
    let mut every: Vec<(u64, u64, String)> = (0..3)
        .flat_map(|i| {
            let key = partition_key(&stream, i);
            redis
                .range(&key)
                .into_iter()
                .map(move |(id, _)| {
                    let (ms, seq) = id.split_once('-').unwrap();
                    (ms.parse().unwrap(), seq.parse().unwrap(), key.clone())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    every.sort();
    assert_eq!(every.len(), 30);

    // Replay merges the partitions by id, and says where each came from.
    let replayed = json(
        &redis,
        &[&["replay"][..], &parts[..], &["--count", "7", "--json"][..]].concat(),
    );
    let rows = replayed["entries"].as_array().unwrap();
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["stream"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = every[..7]
        .iter()
        .map(|(ms, seq, key)| (key.clone(), format!("{ms}-{seq}")))
        .collect();
    assert_eq!(got, want, "the 7 oldest entries over the partitions");
    let one = json(
        &redis,
        &[
            &["replay"][..],
            &parts[..],
            &["--partition", "2", "--count", "100", "--json"][..],
        ]
        .concat(),
    );
    assert_eq!(one["entries"].as_array().unwrap().len(), 10);

    // Groups: one group on every partition.
    let (code, _, err) = host(
        &redis,
        &[
            &["groups", "create"][..],
            &parts[..],
            &["--group", "late", "--start", "0"][..],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    for i in 0..3 {
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(partition_key(&stream, i))
            .query(&mut redis.conn())
            .unwrap();
        assert_eq!(groups.len(), 1, "partition {i}");
    }

    // Trim: each partition to the policy, never past what the group needs.
    redis.read_as(&partition_key(&stream, 0), "late", "c", 10);
    redis.read_as(&partition_key(&stream, 1), "late", "c", 10);
    let ids: Vec<String> = redis
        .range(&partition_key(&stream, 0))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    redis.ack(&partition_key(&stream, 0), "late", &ids);
    let trimmed = json(
        &redis,
        &[
            &["trim"][..],
            &parts[..],
            &["--maxlen", "2", "--exact", "--json"][..],
        ]
        .concat(),
    );
    let outcomes = trimmed.as_array().unwrap();
    assert_eq!(outcomes.len(), 3);
    // Partition 0: all acked, cut to 2. Partition 1: all pending, kept.
    // Partition 2: nothing delivered, kept.
    assert_eq!(xlen(&redis, &partition_key(&stream, 0)), 2);
    assert_eq!(xlen(&redis, &partition_key(&stream, 1)), 10);
    assert_eq!(xlen(&redis, &partition_key(&stream, 2)), 10);
    assert_eq!(outcomes[0]["removed"], 8);
    assert_eq!(outcomes[1]["held_by"], "late");
}

#[test]
fn api_status_and_metrics_show_every_partition_with_its_owner_whichever_host_is_asked() {
    let redis = RedisServer::start();
    let stream = key("ops-parts-api");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _a = Host::misbehave(
        &redis,
        &stream,
        &["--partitions", "4", "--lease-ttl", "3s", "--http", &addr],
    );
    let _b = Host::misbehave(&redis, &stream, &["--partitions", "4", "--lease-ttl", "3s"]);
    let owners = eventually(
        Duration::from_secs(60),
        "the partitions spread over both hosts",
        || {
            let held: Vec<Option<String>> = (0..4)
                .map(|i| lease_owner(&redis, &stream, i, "g"))
                .collect();
            let distinct: BTreeSet<&String> = held.iter().flatten().collect();
            (held.iter().all(Option::is_some) && distinct.len() == 2)
                .then(|| held.into_iter().flatten().collect::<Vec<_>>())
        },
    );
    let status = eventually(
        Duration::from_secs(30),
        "/api/status with every partition's owner",
        || {
            let s = get_json(port, "/api/status");
            let p = s["partitioned"].get(0)?.clone();
            let rows = p["rows"].as_array()?;
            let seen: Vec<String> = rows
                .iter()
                .map(|r| r["owners"]["g"].as_str().unwrap_or("").to_owned())
                .collect();
            (seen == owners).then_some(s)
        },
    );
    let p = &status["partitioned"][0];
    assert_eq!(p["stream"], stream.as_str());
    assert_eq!(p["partitions"], 4);
    // This host runs only the partitions it holds.
    let running = status["pipelines"].as_array().unwrap().len();
    assert!(running < 4, "{running} of 4 partitions run here");

    // Its metrics show every partition too, with its lease's holder.
    let text = get(port, "/metrics").expect("/metrics answers").body;
    for (i, owner) in owners.iter().enumerate() {
        let labels = format!(r#"stream="{stream}",partition="{i}",group="g""#);
        for line in [
            format!(r#"streamhost_partition_leased{{{labels},owner="{owner}"}} 1"#),
            format!("streamhost_partition_lag{{{labels}}} 0"),
            format!("streamhost_partition_pending{{{labels}}} 0"),
            format!("streamhost_partition_dead_letters{{{labels}}} 0"),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
