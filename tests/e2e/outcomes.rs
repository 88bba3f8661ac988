//! What each handler answer does to an entry: ack, dead-letter, emit.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, fields_map, key, plugin};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn success_acks_every_entry_and_emits_to_the_outbox() {
    let redis = RedisServer::start();
    let stream = key("orders-ok");
    let mut ids = Vec::new();
    for i in 0..50 {
        let order = format!("o-{i}");
        let kind = [
            "order.placed",
            "order.paid",
            "order.shipped",
            "order.cancelled",
        ][i % 4];
        ids.push(redis.add(
            &stream,
            &[
                ("type", kind),
                ("order_id", &order),
                ("customer", "alice"),
                ("amount", "9.99"),
            ],
        ));
    }
    let _host = Host::run(
        &redis.url(),
        &stream,
        "notifications",
        &plugin("notify"),
        &[
            "--plugin-config",
            "outbox=outbox",
            "--plugin-config",
            "log=off",
        ],
    );
    eventually(WAIT, "all 50 read and acked", || {
        (redis.entries_read(&stream, "notifications") == Some(50)
            && redis.pending(&stream, "notifications") == 0)
            .then_some(())
    });
    let outbox = redis.range("outbox");
    let mut sources: Vec<String> = outbox
        .iter()
        .map(|(_, f)| fields_map(f)["source_id"].to_owned())
        .collect();
    sources.sort();
    ids.sort();
    assert_eq!(sources, ids, "exactly one notification per order event");
    let first = outbox
        .iter()
        .map(|(_, f)| fields_map(f))
        .find(|f| f["order_id"] == "o-0")
        .unwrap();
    assert_eq!(
        first["message"],
        "Hi alice, we received your order o-0 ($9.99)."
    );
    assert!(redis.range(&format!("{stream}:dlq")).is_empty());
}

#[test]
fn permanent_failure_writes_a_complete_dead_letter_record() {
    let redis = RedisServer::start();
    let stream = key("perm");
    let id = redis.add(
        &stream,
        &[
            ("action", "permanent"),
            ("reason", "card declined"),
            ("amount", "12"),
        ],
    );
    let host = Host::misbehave(&redis, &stream, &["--consumer", "c-1", "--dlq", "dead"]);
    let dlq = eventually(WAIT, "DLQ record", || {
        let r = redis.range("dead");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(dlq.len(), 1);
    let rec = fields_map(&dlq[0].1);
    assert_eq!(rec["kind"], "permanent");
    assert_eq!(rec["reason"], "card declined");
    assert_eq!(rec["source_stream"], stream);
    assert_eq!(rec["source_id"], id);
    assert_eq!(rec["group"], "g");
    assert_eq!(rec["consumer"], "c-1");
    assert_eq!(rec["deliveries"], "1");
    assert_eq!(rec["plugin"], "misbehave");
    assert_eq!(rec["plugin_version"].len(), 12);
    assert!(rec["failed_at_ms"].parse::<u64>().unwrap() > 1_600_000_000_000);
    // Original fields, in order, after the metadata.
    let originals: Vec<(&str, &str)> = dlq[0]
        .1
        .iter()
        .filter(|(k, _)| k.starts_with("field:"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        originals,
        [
            ("field:action", "permanent"),
            ("field:reason", "card declined"),
            ("field:amount", "12")
        ]
    );
    redis.wait_until_settled(&stream, "g", WAIT);
    host.wait_for_log("entry dead-lettered", WAIT);
}

#[test]
fn emits_are_appended_only_with_a_successful_ack() {
    let redis = RedisServer::start();
    let stream = key("emit");
    let ok = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let failed = redis.add(&stream, &[("action", "emit-then-fail"), ("emit_to", "out")]);
    let trapped = redis.add(&stream, &[("action", "emit-then-trap"), ("emit_to", "out")]);
    let retry = redis.add(&stream, &[("action", "retryable"), ("emit_to", "out")]);
    let last = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    // One worker: a leaked emit buffer would show in the next call's commit.
    let host = Host::misbehave(&redis, &stream, &["--concurrency", "1"]);
    eventually(WAIT, "last entry emitted", || {
        redis
            .range("out")
            .iter()
            .any(|(_, f)| fields_map(f)["source_id"] == last)
            .then_some(())
    });
    eventually(WAIT, "the failed entry dead-lettered", || {
        (redis.range(&format!("{stream}:dlq")).len() == 1).then_some(())
    });
    let mut out: Vec<String> = redis
        .range("out")
        .iter()
        .map(|(_, f)| fields_map(f)["source_id"].to_owned())
        .collect();
    out.sort();
    assert_eq!(
        out,
        [ok.clone(), last.clone()],
        "emits of failed or trapped calls must never appear"
    );
    let pending = redis.pending_ids(&stream, "g");
    assert_eq!(
        pending,
        [trapped, retry],
        "trap and retryable stay pending; success and permanent are acked"
    );
    assert!(
        !redis
            .range(&format!("{stream}:dlq"))
            .iter()
            .any(|(_, f)| fields_map(f)["source_id"] == ok)
    );
    assert!(host.log().contains(&failed));
}

#[test]
fn entries_the_host_cannot_hand_over_are_dead_lettered_as_invalid() {
    let redis = RedisServer::start();
    let stream = key("invalid");
    let mut c = redis.conn();
    let binary: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(b"\xffname".as_slice())
        .arg(b"\x00\x01".as_slice())
        .query(&mut c)
        .unwrap();
    let big_value = "x".repeat(2048);
    let big = redis.add(&stream, &[("action", "ok"), ("blob", &big_value)]);
    let fine = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let _host = Host::misbehave(&redis, &stream, &["--max-entry-size", "1KiB"]);
    eventually(WAIT, "ordinary entry handled", || {
        (!redis.range("out").is_empty()).then_some(())
    });
    let dlq_key = format!("{stream}:dlq");
    let dlq = redis.wait_for_len(&dlq_key, 2);
    let by_id: HashMap<String, HashMap<&str, &str>> = dlq
        .iter()
        .map(|(_, f)| (fields_map(f)["source_id"].to_owned(), fields_map(f)))
        .collect();
    assert_eq!(by_id[&binary]["kind"], "invalid");
    assert!(
        by_id[&binary]["reason"].contains("not valid UTF-8"),
        "{:?}",
        by_id[&binary]
    );
    assert_eq!(by_id[&big]["kind"], "invalid");
    assert!(by_id[&big]["reason"].contains("over --max-entry-size 1KiB"));
    // The binary field survives byte for byte.
    let raw: redis::Value = redis::cmd("XRANGE")
        .arg(&dlq_key)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    let text = format!("{raw:?}");
    assert!(
        text.contains("field:\\xffname")
            || text.contains("[102, 105, 101, 108, 100, 58, 255, 110, 97, 109, 101]"),
        "{text}"
    );
    assert_eq!(redis.pending(&stream, "g"), 0);
    let _ = fine;
}

#[test]
fn plugin_config_and_guest_output_reach_the_plugin_and_the_log() {
    let redis = RedisServer::start();
    let stream = key("config");
    redis.add(
        &stream,
        &[("action", "config"), ("key", "region"), ("emit_to", "out")],
    );
    redis.add(
        &stream,
        &[("action", "config"), ("key", "absent"), ("emit_to", "out")],
    );
    let print_id = redis.add(&stream, &[("action", "print")]);
    redis.add(&stream, &[("action", "log")]);
    let host = Host::misbehave(&redis, &stream, &["--plugin-config", "region=eu-west"]);
    let out = redis.wait_for_len("out", 2);
    let values: HashMap<&str, &str> = out
        .iter()
        .map(|(_, f)| (fields_map(f)["key"], fields_map(f)["value"]))
        .collect();
    assert_eq!(values["region"], "eu-west");
    assert_eq!(values["absent"], "<unset>");
    host.wait_for_log(&format!("hello from stdout {print_id}"), WAIT);
    host.wait_for_log(&format!("hello from stderr {print_id}"), WAIT);
    host.wait_for_log("warn line", WAIT);
    let log = host.log();
    let line = log
        .lines()
        .find(|l| l.contains("hello from stderr"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("plugin=misbehave"),
        "{line}"
    );
    let line = log.lines().find(|l| l.contains("info line")).unwrap();
    assert!(
        line.contains("INFO") && line.contains("plugin=misbehave"),
        "{line}"
    );
}

#[test]
fn reads_through_an_acl_user_on_a_numbered_database() {
    let redis = RedisServer::start();
    let mut admin = redis.conn();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "streamer", "on", ">s3cret", "~*", "&*", "+@all"])
        .query(&mut admin)
        .expect("ACL SETUSER");
    // Nobody else gets in: a reader that dropped AUTH would fail.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "off"])
        .query(&mut admin)
        .expect("ACL SETUSER default off");
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    let url = format!("redis://streamer:s3cret@127.0.0.1:{port}/3");
    let mut db3 = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let stream = key("acl");
    let ids: Vec<String> = (0..20)
        .map(|i| {
            redis::cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("n")
                .arg(i)
                .query(&mut db3)
                .unwrap()
        })
        .collect();
    let _host = Host::run(&url, &stream, "g", &plugin("noop"), &[]);
    eventually(WAIT, "all 20 acked on db 3", || {
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg("g")
            .query(&mut db3)
            .ok()?;
        let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .query(&mut db3)
            .ok()?;
        let read: Option<u64> = groups
            .first()
            .and_then(|g| redis::from_redis_value(g.get("entries-read")?.clone()).ok());
        let idle = matches!(&pending, redis::Value::Array(v) if matches!(v.first(), Some(redis::Value::Int(0))));
        (read == Some(ids.len() as u64) && idle).then_some(())
    });
    let on_db0: bool = redis::cmd("EXISTS").arg(&stream).query(&mut admin).unwrap();
    assert!(!on_db0, "nothing was written to database 0");
}

#[test]
fn reads_over_a_unix_socket() {
    let redis = RedisServer::start();
    let stream = key("unix");
    for i in 0..20 {
        redis.add(&stream, &[("n", &i.to_string())]);
    }
    let _host = Host::run(&redis.unix_url(), &stream, "g", &plugin("noop"), &[]);
    eventually(WAIT, "all 20 read and acked over the socket", || {
        (redis.entries_read(&stream, "g") == Some(20) && redis.pending(&stream, "g") == 0)
            .then_some(())
    });
}

#[test]
fn forwarded_emits_keep_binary_and_large_values_byte_for_byte() {
    // Values at each size where the packed commit changes its length
    // header, with bytes that would break a text protocol.
    let redis = RedisServer::start();
    let stream = key("fanout-bytes");
    let mut sent = Vec::new();
    for (i, size) in [0usize, 1, 31, 32, 255, 256, 65_535, 65_536, 300_000]
        .into_iter()
        .enumerate()
    {
        let value: Vec<u8> = (0..size)
            .map(|b| [0u8, 0xff, b'\r', b'\n', b'$'][b % 5])
            .collect();
        let fields = vec![
            (b"n".to_vec(), i.to_string().into_bytes()),
            (b"value".to_vec(), value),
            ("naïve".as_bytes().to_vec(), vec![0xc3, 0x28]),
        ];
        let id = redis.add_raw(&stream, &fields);
        sent.push((id, fields));
    }
    let outputs = ["fan:a", "fan:b", "fan:c"];
    let _host = Host::run(
        &redis.url(),
        &stream,
        "fan",
        &plugin("fanout"),
        &[
            "--plugin-config",
            &format!("outputs={}", outputs.join(",")),
            "--max-emit-bytes",
            "2MiB",
        ],
    );
    eventually(WAIT, "every event read and acked", || {
        (redis.entries_read(&stream, "fan") == Some(sent.len() as u64)
            && redis.pending(&stream, "fan") == 0)
            .then_some(())
    });
    for out in outputs {
        // Workers settle entries in the order their calls finish, not the
        // source's order: match each copy to its event by `source_id`.
        let got = redis.range_raw(out);
        assert_eq!(got.len(), sent.len(), "{out}: one entry per event");
        for (id, original) in &sent {
            let mut want = original.clone();
            want.push((b"source_id".to_vec(), id.as_bytes().to_vec()));
            let copies: Vec<_> = got
                .iter()
                .filter(|(_, f)| f.last().is_some_and(|(_, v)| v == id.as_bytes()))
                .collect();
            assert_eq!(copies.len(), 1, "{out}: one copy of {id}");
            let fields = &copies[0].1;
            assert_eq!(fields.len(), want.len(), "{out}: fields of {id}");
            for ((k, v), (wk, wv)) in fields.iter().zip(&want) {
                assert!(
                    k == wk && v == wv,
                    "{out}: field {:?} of {id} arrived changed ({} bytes, want {})",
                    String::from_utf8_lossy(wk),
                    v.len(),
                    wv.len()
                );
            }
        }
    }
    assert_eq!(redis.pending(&stream, "fan"), 0);
    assert!(redis.range(&format!("{stream}:dlq")).is_empty());
}
