//! Hot swap: replacing the plugin file while `host run` runs, under load.
//! v1 is `misbehave` (its records have no `type`), v2 is `analytics` (its
//! records carry the entry's `type`), both writing to the stream `out`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::{Host, RedisServer, eventually, key, plugin};

const WAIT: Duration = Duration::from_secs(60);

/// Replaces `dest` the way deploy tools do: write aside, then rename.
fn install(src: &Path, dest: &Path) {
    let tmp = dest.with_extension("tmp");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

fn setup() -> (RedisServer, tempfile::TempDir, PathBuf) {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handler.wasm");
    install(&plugin("misbehave"), &path);
    (redis, dir, path)
}

fn start(redis: &RedisServer, stream: &str, path: &Path) -> Host {
    let host = Host::run(
        &redis.url(),
        stream,
        "g",
        path,
        &["--plugin-config", "output=out", "--watch-interval", "200ms"],
    );
    // The first version must be loaded before the file is touched.
    host.wait_for_log("created consumer group", WAIT);
    host
}

const ENTRY: [(&str, &str); 3] = [
    ("action", "emit"),
    ("emit_to", "out"),
    ("type", "order.placed"),
];

/// source id → handled by v2?, for every record in `out`; panics on duplicates.
fn handled(redis: &RedisServer) -> HashMap<String, bool> {
    let mut out = HashMap::new();
    for (_, fields) in redis.range("out") {
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let id = get("source_id").expect("source_id");
        let v2 = get("type").is_some();
        assert!(out.insert(id.clone(), v2).is_none(), "{id} handled twice");
    }
    out
}

/// Produces entries every few ms on a thread until stopped.
struct Producer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    fn start(url: String, stream: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut c = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            while !flag.load(Ordering::Relaxed) {
                let _: String = redis::cmd("XADD")
                    .arg(&stream)
                    .arg("*")
                    .arg(&ENTRY[..])
                    .query(&mut c)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Waits until every entry of `stream` has exactly one record.
fn all_handled(redis: &RedisServer, stream: &str) -> HashMap<String, bool> {
    let ids: Vec<String> = redis.range(stream).into_iter().map(|(id, _)| id).collect();
    let out = eventually(WAIT, "every entry handled", || {
        let out = handled(redis);
        (out.len() == ids.len()).then_some(out)
    });
    for id in &ids {
        assert!(out.contains_key(id), "{id} never handled");
    }
    out
}

#[test]
fn a_swap_under_steady_load_loses_nothing_and_new_entries_use_the_new_version() {
    let (redis, _dir, path) = setup();
    let stream = key("swap");
    let host = start(&redis, &stream, &path);
    let producer = Producer::start(redis.url(), stream.clone());
    eventually(WAIT, "v1 under load", || {
        (redis.range("out").len() >= 100).then_some(())
    });
    install(&plugin("analytics"), &path);
    host.wait_for_log("plugin swapped", WAIT);
    let marker = redis.add(&stream, &ENTRY);
    std::thread::sleep(Duration::from_millis(300));
    producer.stop();
    let out = all_handled(&redis, &stream);
    assert!(
        out.values().any(|v2| !v2),
        "some entries were handled by v1"
    );
    let late: Vec<_> = out
        .iter()
        .filter(|(id, v2)| id.as_str() >= marker.as_str() && !**v2)
        .collect();
    assert!(
        late.is_empty(),
        "entries produced after the swap ran on v1: {late:?}"
    );
    assert!(host.log().contains("from=handler@") && host.log().contains("to=handler@"));
    assert_eq!(redis.pending(&stream, "g"), 0);
}

#[test]
fn garbage_wrong_world_and_torn_files_keep_the_old_version_serving() {
    let (redis, _dir, path) = setup();
    let stream = key("refuse");
    let host = start(&redis, &stream, &path);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, "not a component at all").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    host.wait_for_log("is not a WebAssembly file", WAIT);
    install(&plugin("wrong-world"), &path);
    host.wait_for_log("does not implement the world", WAIT);
    // A torn write: half of a component, written in place.
    let v2 = std::fs::read(plugin("analytics")).unwrap();
    std::fs::write(&path, &v2[..v2.len() / 2]).unwrap();
    host.wait_for_log("is not a valid WebAssembly component", WAIT);
    assert_eq!(
        host.count_log("previous version keeps serving"),
        3,
        "{}",
        host.log()
    );
    let id = redis.add(&stream, &ENTRY);
    let out = eventually(WAIT, "entry handled", || handled(&redis).get(&id).copied());
    assert!(!out, "still v1");
    // The write completes: v2 takes over.
    std::fs::write(&path, &v2).unwrap();
    host.wait_for_log("plugin swapped", WAIT);
    let id = redis.add(&stream, &ENTRY);
    assert!(eventually(WAIT, "entry handled by v2", || handled(&redis)
        .get(&id)
        .copied()));
}

#[test]
fn swapping_back_and_forth_quickly_under_load_loses_and_duplicates_nothing() {
    let (redis, _dir, path) = setup();
    let stream = key("flipflop");
    let host = start(&redis, &stream, &path);
    let producer = Producer::start(redis.url(), stream.clone());
    eventually(WAIT, "under load", || {
        (redis.range("out").len() >= 50).then_some(())
    });
    for round in 0..6 {
        let next = if round % 2 == 0 {
            "analytics"
        } else {
            "misbehave"
        };
        install(&plugin(next), &path);
        // A little over the debounce apart, so each swap lands (closer
        // changes are coalesced into one reload, by design).
        std::thread::sleep(Duration::from_millis(400));
    }
    install(&plugin("analytics"), &path);
    eventually(WAIT, "settled on v2", || {
        let id = redis.add(&stream, &ENTRY);
        let v2 = eventually(WAIT, "probe handled", || handled(&redis).get(&id).copied());
        v2.then_some(())
    });
    producer.stop();
    let out = all_handled(&redis, &stream);
    assert!(out.values().any(|v2| *v2) && out.values().any(|v2| !v2));
    assert!(host.count_log("plugin swapped") >= 5, "{}", host.log());
    assert_eq!(redis.pending(&stream, "g"), 0);
}

#[test]
fn a_call_in_flight_finishes_on_the_old_version() {
    let (redis, _dir, path) = setup();
    let stream = key("inflight");
    let host = start(&redis, &stream, &path);
    let long = redis.add(
        &stream,
        &[
            ("action", "emit"),
            ("emit_to", "out"),
            ("type", "order.paid"),
            ("sleep_ms", "1500"),
        ],
    );
    eventually(WAIT, "long call running", || {
        (redis.pending(&stream, "g") == 1).then_some(())
    });
    install(&plugin("analytics"), &path);
    host.wait_for_log("plugin swapped", WAIT);
    let after = redis.add(&stream, &ENTRY);
    let after_v2 = eventually(WAIT, "entry after the swap", || {
        handled(&redis).get(&after).copied()
    });
    assert!(after_v2, "the next call used the new version");
    let long_v2 = eventually(WAIT, "long call done", || {
        handled(&redis).get(&long).copied()
    });
    assert!(!long_v2, "the call that was running finished on v1");
}

#[test]
fn sighup_alone_reloads_the_plugin_file_when_it_is_not_watched() {
    let (redis, _dir, path) = setup();
    let stream = key("hup");
    let host = Host::run(
        &redis.url(),
        &stream,
        "g",
        &path,
        &["--plugin-config", "output=out", "--no-watch"],
    );
    host.wait_for_log("created consumer group", WAIT);
    install(&plugin("analytics"), &path);
    // Unwatched: the new file is not picked up by itself.
    std::thread::sleep(Duration::from_millis(1500));
    let id = redis.add(&stream, &ENTRY);
    assert!(
        !eventually(WAIT, "served by the old version", || handled(&redis)
            .get(&id)
            .copied()),
        "swapped without SIGHUP"
    );
    host.signal(libc::SIGHUP);
    host.wait_for_log("SIGHUP: reloading the plugin", WAIT);
    let id = redis.add(&stream, &ENTRY);
    // Entries read before the swap landed may still run on v1; a later one
    // must run on v2.
    eventually(WAIT, "served by the new version", || {
        let id = redis.add(&stream, &ENTRY);
        eventually(WAIT, "handled", || handled(&redis).get(&id).copied()).then_some(())
    });
    assert!(handled(&redis).contains_key(&id));
    assert_eq!(host.count_log("plugin swapped"), 1);
}
