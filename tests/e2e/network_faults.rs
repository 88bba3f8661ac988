//! Faults of the network between a host and Redis, through a proxy the
//! test controls (`support::proxy`): each ends with the host going on, and
//! within the bound the README states.

use std::time::Duration;

use crate::support::{Host, LossyProxy, RedisServer, fields_map, key};

const WAIT: Duration = Duration::from_secs(30);

/// A network path that goes dead without a word — every open connection
/// kept open, nothing forwarded either way, no FIN, no RST — is noticed
/// within `--block` plus the read slack (2 s + 5 s with the defaults): the
/// reader's blocking read times out, and every other connection opened
/// before goes with it at its next use, instead of at its own timeout. The
/// host reconnects and handles what came meanwhile.
#[test]
fn a_half_open_path_is_left_within_block_and_the_read_slack() {
    let redis = RedisServer::start();
    let proxy = LossyProxy::start(&redis);
    let stream = key("half-open");
    redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let plugin = crate::support::plugin("misbehave");
    let (url, plugin) = (proxy.url(), plugin.display().to_string());
    let _host = Host::spawn(&[
        "run", "--redis", &url, "--stream", &stream, "--group", "g", "--plugin", &plugin,
    ]);
    // Every link of the pipeline has been used through the proxy.
    redis.wait_for_len("out", 1);
    redis.wait_until_settled(&stream, "g", WAIT);
    proxy.freeze();
    let frozen = std::time::Instant::now();
    let later = redis.add(&stream, &[("action", "emit"), ("emit_to", "out")]);
    let out = redis.wait_for_len("out", 2);
    let took = frozen.elapsed();
    assert_eq!(fields_map(&out[1].1)["source_id"], later);
    assert!(
        took < Duration::from_secs(2 + 5 + 3),
        "handled {took:?} after the path went dead"
    );
}
