//! Handlers written in Python (componentize-py) and JavaScript
//! (componentize-js), built from `plugins/` and run through `host run`.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, fields_map, key, scripted_plugin};

/// Cold compiles of these 12–18 MB components take seconds.
const WAIT: Duration = Duration::from_secs(180);

fn order(redis: &RedisServer, stream: &str, id: &str, customer: &str, amount: &str) -> String {
    redis.add(
        stream,
        &[
            ("type", "order.placed"),
            ("order_id", id),
            ("customer", customer),
            ("amount", amount),
        ],
    )
}

#[test]
fn the_python_fraud_filter_passes_good_orders_and_dead_letters_suspicious_ones() {
    let redis = RedisServer::start();
    let stream = key("py");
    let ok = order(&redis, &stream, "o-1", "alice", "49.50");
    let big = order(&redis, &stream, "o-2", "bob", "5000.00");
    let blocked = order(&redis, &stream, "o-3", "mallory", "10.00");
    let bad = order(&redis, &stream, "o-4", "carol", "abc");
    let plugin = scripted_plugin("python-fraud", "fraud");
    let _host = Host::run(
        &redis.url(),
        &stream,
        "g",
        &plugin,
        &[
            "--plugin-config",
            "output=fraud:out",
            "--plugin-config",
            "blocked_customers=mallory",
            "--plugin-config",
            "max_amount=1000",
        ],
    );
    let dlq_key = format!("{stream}:dlq");
    let dead = eventually(WAIT, "three dead letters", || {
        let r = redis.range(&dlq_key);
        (r.len() == 3).then_some(r)
    });
    let reasons: HashMap<String, String> = dead
        .iter()
        .map(|(_, f)| {
            let r = fields_map(f);
            assert_eq!(r["kind"], "permanent");
            assert_eq!(r["plugin"], "fraud");
            (r["source_id"].to_owned(), r["reason"].to_owned())
        })
        .collect();
    assert!(
        reasons[&big].contains("amount 5000.00 over 1000.00"),
        "{reasons:?}"
    );
    assert!(
        reasons[&blocked].contains("customer mallory is blocked"),
        "{reasons:?}"
    );
    assert!(
        reasons[&bad].contains("'abc' is not a number"),
        "{reasons:?}"
    );
    let out = redis.wait_for_len("fraud:out", 1);
    let r = fields_map(&out[0].1);
    assert_eq!((r["order_id"], r["source_id"]), ("o-1", ok.as_str()));
    redis.wait_until_settled(&stream, "g", WAIT);
}

#[test]
fn the_javascript_enricher_emits_enriched_orders_and_dead_letters_malformed_ones() {
    let redis = RedisServer::start();
    let stream = key("js");
    let gold = order(&redis, &stream, "o-1", "alice", "150.00");
    let bronze = order(&redis, &stream, "o-2", "bob", "12.00");
    let bad = redis.add(
        &stream,
        &[
            ("type", "order.placed"),
            ("customer", "carol"),
            ("amount", "1.00"),
        ],
    );
    let plugin = scripted_plugin("js-enrich", "enrich");
    let _host = Host::run(
        &redis.url(),
        &stream,
        "g",
        &plugin,
        &["--plugin-config", "output=orders:enriched"],
    );
    let out = redis.wait_for_len("orders:enriched", 2);
    let by_source: HashMap<String, HashMap<&str, &str>> = out
        .iter()
        .map(|(_, f)| (fields_map(f)["source_id"].to_owned(), fields_map(f)))
        .collect();
    let g = &by_source[&gold];
    assert_eq!(
        (
            g["order_id"],
            g["tier"],
            g["amount_cents"],
            g["enriched_by"]
        ),
        ("o-1", "gold", "15000", "js-enrich")
    );
    assert_eq!(g["customer"], "alice", "original fields are kept");
    assert_eq!(by_source[&bronze]["tier"], "bronze");
    let dead = redis.wait_for_len(&format!("{stream}:dlq"), 1);
    let r = fields_map(&dead[0].1);
    assert_eq!((r["kind"], r["source_id"]), ("permanent", bad.as_str()));
    assert!(r["reason"].contains("missing order_id"), "{r:?}");
    redis.wait_until_settled(&stream, "g", WAIT);
}
