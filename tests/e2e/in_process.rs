//! `runtime::run(config, face, shutdown)` driven in-process, the way the binary
//! drives it: two pipelines from one config file, stopped by cancelling the
//! token, with their reports checked against Redis.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use streamhost::runtime;
use tokio_util::sync::CancellationToken;

use crate::support::{RedisServer, eventually, key, plugin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_run_serves_every_pipeline_until_cancelled() {
    let redis = Arc::new(RedisServer::start());
    let stream = key("in-process");
    for i in 0..30 {
        let action = if i % 10 == 9 { "permanent" } else { "emit" };
        redis.add(&stream, &[("action", action)]);
    }
    let text = format!(
        "[redis]\nurl = \"{url}\"\n[defaults]\nstream = \"{stream}\"\nplugin = \"{plugin}\"\nblock = \"100ms\"\nstats-interval = \"0s\"\n\
         [[pipeline]]\ngroup = \"left\"\n[pipeline.plugin-config]\nemit_to = \"out-left\"\n\
         [[pipeline]]\ngroup = \"right\"\nconcurrency = 1\n[pipeline.plugin-config]\nemit_to = \"out-right\"\n",
        url = redis.url(),
        plugin = plugin("misbehave").display()
    );
    let config = streamhost::cli::file::parse(Path::new("in-process.toml"), &text, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(runtime::run(config, None, shutdown.clone()));
    let (probe, stream2) = (redis.clone(), stream.clone());
    tokio::task::spawn_blocking(move || {
        let redis = probe;
        for group in ["left", "right"] {
            eventually(Duration::from_secs(60), group, || {
                (redis.entries_read(&stream2, group) == Some(30)
                    && redis.pending(&stream2, group) == 0)
                    .then_some(())
            });
        }
    })
    .await
    .unwrap();
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("drained within the bound")
        .unwrap()
        .unwrap();
    for group in ["left", "right"] {
        let stats = &report.pipelines[group].stats;
        assert_eq!(stats.acked, 27, "{group}: {stats:?}");
        assert_eq!(stats.dead_lettered(), 3, "{group}: {stats:?}");
        assert!(!report.pipelines[group].abandoned);
        assert_eq!(redis.range(&format!("out-{group}")).len(), 27);
    }
    assert_eq!(redis.range(&format!("{stream}:dlq")).len(), 6);
}
