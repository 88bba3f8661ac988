//! Micro-benchmarks of the per-entry hot path: decoding an XREADGROUP reply
//! (the host's RESP decoder vs redis-rs), calling a plugin (warm instance,
//! fresh instance, fresh from the pool), and building a dead-letter record. `cargo bench -p streamhost` (the no-op plugin is
//! built for wasm32-wasip2 on first use).

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use redis::Value;
use streamhost::plugin::{EmitTargets, Event, PluginEngine, PluginInstance, PluginSettings};
use streamhost::stream::dlq::{self, DeadLetterSource};
use streamhost::stream::reply::parse_xreadgroup;
use streamhost::stream::wire;
use streamhost::vocab::entry::EntryLimits;
use streamhost::vocab::limits::Limits;
use streamhost::vocab::outcome::DeadLetterKind;
use streamhost::vocab::units::ByteSize;

const LIMITS: EntryLimits = EntryLimits {
    max_fields: 1_000,
    max_bytes: 1 << 20,
};

fn fields(i: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (b"type".to_vec(), b"order.placed".to_vec()),
        (b"order_id".to_vec(), format!("o-{i:08}").into_bytes()),
        (b"customer".to_vec(), b"customer-0042".to_vec()),
        (b"amount".to_vec(), b"1234.50".to_vec()),
        (b"ts_ms".to_vec(), b"1716998413541".to_vec()),
    ]
}

/// What Redis returns for XREADGROUP COUNT n over 5-field entries.
fn reply(n: usize) -> Value {
    let entries = (0..n)
        .map(|i| {
            let flat = fields(i)
                .into_iter()
                .flat_map(|(k, v)| [Value::BulkString(k), Value::BulkString(v)])
                .collect();
            Value::Array(vec![
                Value::BulkString(format!("1716998413541-{i}").into_bytes()),
                Value::Array(flat),
            ])
        })
        .collect();
    Value::Array(vec![Value::Array(vec![
        Value::BulkString(b"orders".to_vec()),
        Value::Array(entries),
    ])])
}

/// The same reply as RESP2 bytes on the wire.
fn wire_reply(n: usize) -> Vec<u8> {
    fn bulk(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }
    let mut out = b"*1\r\n*2\r\n".to_vec();
    bulk(&mut out, b"orders");
    out.extend_from_slice(format!("*{n}\r\n").as_bytes());
    for i in 0..n {
        out.extend_from_slice(b"*2\r\n");
        bulk(&mut out, format!("1716998413541-{i}").as_bytes());
        out.extend_from_slice(b"*10\r\n");
        for (k, v) in fields(i) {
            bulk(&mut out, &k);
            bulk(&mut out, &v);
        }
    }
    out
}

/// Reply decoding: the host's own streaming RESP decoder against redis-rs
/// (value tree, then entries) on the same bytes.
fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_xreadgroup_500x5");
    g.throughput(Throughput::Elements(500));
    let bytes = wire_reply(500);
    assert_eq!(
        wire::decode_xreadgroup(&bytes, LIMITS).expect("valid reply"),
        parse_xreadgroup(redis::parse_redis_value(&bytes).unwrap(), 1).unwrap()
    );
    g.bench_function("streamhost_resp", |b| {
        b.iter(|| wire::decode_xreadgroup(&bytes, LIMITS).expect("valid reply"))
    });
    g.bench_function("redis_rs_value_tree", |b| {
        b.iter(|| {
            let value = redis::parse_redis_value(&bytes).expect("valid");
            parse_xreadgroup(value, 1).expect("valid reply")
        })
    });
    let template = reply(500);
    g.bench_function("entries_from_value_tree_only", |b| {
        b.iter_batched(
            || template.clone(),
            |r| parse_xreadgroup(r, 1).expect("valid reply"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The no-op plugin, built like the e2e tests build it.
fn noop_plugin() -> PathBuf {
    let target = root().join("target/plugins");
    let path = target.join("wasm32-wasip2/plugin/noop.wasm");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args([
            "build",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
        ])
        .arg("--target-dir")
        .arg(&target)
        .args(["-p", "noop-plugin"])
        .status()
        .expect("running cargo to build the no-op plugin");
    assert!(status.success(), "building the no-op plugin failed");
    path
}

fn event(i: usize) -> Event {
    Event {
        stream: "orders".into(),
        id: format!("1716998413541-{i}"),
        group: "bench".into(),
        consumer: "c1".into(),
        fields: fields(i)
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).expect("utf-8"), v))
            .collect(),
        delivery_count: 1,
    }
}

fn call(c: &mut Criterion) {
    let engine = PluginEngine::new().expect("engine");
    let settings = PluginSettings::new(
        Default::default(),
        &Limits::default(),
        EmitTargets::default(),
    );
    // Workers drive calls on a current-thread runtime of their own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let plugin = engine
        .load(&noop_plugin(), &settings)
        .expect("no-op plugin loads");
    let ev = event(7);
    let mut g = c.benchmark_group("plugin_call");
    g.throughput(Throughput::Elements(1));
    let mut warm = PluginInstance::new(plugin.clone());
    g.bench_function("noop_warm_instance", |b| b.iter(|| warm.call_on(&rt, &ev)));

    g.bench_function("noop_fresh_instance", |b| {
        b.iter(|| {
            let mut fresh = PluginInstance::new(plugin.clone());
            fresh.call_on(&rt, &ev)
        })
    });
    let pooled = PluginEngine::pooled(8, ByteSize(64 << 20))
        .expect("pooled engine")
        .load(&noop_plugin(), &settings)
        .expect("no-op plugin loads");
    g.bench_function("noop_fresh_instance_pooled", |b| {
        b.iter(|| {
            let mut fresh = PluginInstance::new(pooled.clone());
            fresh.call_on(&rt, &ev)
        })
    });
    g.finish();
}

fn dead_letter(c: &mut Criterion) {
    let src = DeadLetterSource {
        stream: "orders",
        group: "bench",
        consumer: "c1",
        plugin: "noop",
        plugin_version: "0123456789ab",
    };
    c.bench_function("dlq_metadata", |b| {
        b.iter(|| {
            dlq::metadata(
                DeadLetterKind::Permanent,
                "card declined",
                "1716998413541-7",
                dlq::deliveries(DeadLetterKind::Permanent, 3),
                src,
            )
        })
    });
}

criterion_group!(benches, decode, call, dead_letter);
criterion_main!(benches);
