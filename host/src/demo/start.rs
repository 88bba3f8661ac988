//! `host demo`'s start: finds or starts a Redis, resets the demo's keys,
//! writes the embedded plugins out, and turns three pipelines — declared as
//! `host run` flags and parsed by the same definitions, so their defaults
//! are `host run`'s — into the [`Config`] that `main` runs, with the
//! dashboard fed by the demo's orders and trickle ([`DemoFeed`]).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::FromArgMatches;

use super::feed::DemoFeed;
use super::leftovers::Leftovers;
use super::plugins::PluginFiles;
use super::redis_child::{RedisChild, RedisChildError};
use super::{Keys, OUTBOX, Probe, TOTALS, probe, reset};
use crate::cli::RunArgs;
use crate::cli::demo::DemoArgs;
use crate::config::{
    Config, ConfigError, Dashboard, HttpAdmin, HttpListen, RedisConfig, RunConfig,
};

/// How long `--open` waits for the dashboard to listen before opening it anyway.
const OPEN_WAIT: Duration = Duration::from_secs(30);

/// A demo ready to run: its configuration and what must live as long as it does.
#[derive(Debug)]
pub struct Demo {
    /// What to run.
    pub config: Config,
    /// What the dashboard produces from.
    pub feed: Arc<DemoFeed>,
    /// The private redis-server, if one was started.
    redis_child: Option<RedisChild>,
    /// The plugin files the pipelines load (removed on drop).
    _plugins: PluginFiles,
}

impl Demo {
    /// Stops what the demo started besides the runtime: the private redis-server.
    pub fn stop(self) {
        if let Some(child) = self.redis_child {
            child.stop();
            eprintln!("stopped the private redis-server");
        }
    }
}

/// The exit status for an error of [`start`]: 69 (`EX_UNAVAILABLE`) when no
/// Redis can be had, 64 for unusable flags, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<RedisChildError>().is_some() {
        69
    } else if e.downcast_ref::<ConfigError>().is_some() {
        64
    } else {
        1
    }
}

/// Finds or starts the Redis, resets the demo's keys unless told not to,
/// writes the plugins out and builds the configuration; prints the
/// dashboard's link on stdout. What it starts and writes is registered in
/// `leftovers` as it is made, and removed when the returned [`Demo`] (or
/// this future, dropped half-way) is dropped.
pub async fn start(args: DemoArgs, leftovers: &Arc<Leftovers>) -> anyhow::Result<Demo> {
    let given = args.redis.redis_config(&|name| std::env::var(name).ok())?;
    let keys = Keys::of(given.cluster);
    let redis_child = match probe(&given).await? {
        Probe::Nothing if given.cluster => {
            return Err(RedisChildError::NoCluster {
                at: given.redacted_url(),
            }
            .into());
        }
        Probe::Nothing => Some(RedisChild::start(&given.redacted_url(), leftovers).await?),
        Probe::Answers => None,
        Probe::Unknown(why) => {
            tracing::warn!(redis = %given.redacted_url(), error = %why,
                "cannot tell whether Redis is there; using it anyway");
            None
        }
    };
    let redis = match &redis_child {
        Some(child) => RedisConfig::from_url(child.url()),
        None => given.clone(),
    };
    if !args.no_reset {
        let deleted = reset(&redis, &keys)
            .await
            .with_context(|| format!("resetting the demo's keys at {}", redis.redacted_url()))?;
        if deleted > 0 {
            eprintln!(
                "reset: deleted {deleted} demo key(s) of earlier runs ({}); --no-reset keeps them",
                keys.all.join(", ")
            );
        }
    }
    let plugins = PluginFiles::write(leftovers)
        .context("writing the demo plugins to a temporary directory")?;
    // The demo prints the link itself, on stdout; the listener need not log it.
    let admin = HttpAdmin {
        announce: false,
        ..HttpAdmin::from_env(&|name| std::env::var(name).ok())
    };
    let token = admin.token.clone();
    let config = Config {
        pipelines: pipelines(&redis, &keys, &plugins, args.cache_dir.as_deref())?,
        source: None,
        http: Some(args.http.clone()),
        dashboard: Dashboard {
            admin: Some(admin),
            allowed_hosts: Vec::new(),
        },
    };
    config.validate()?;

    let url = format!("http://{}/#token={token}", args.http);
    println!("dashboard: {url}");
    match &redis_child {
        Some(child) => println!(
            "redis: {} (private redis-server, pid {}, data in {}; stopped on exit)",
            child.url(),
            child.pid(),
            child.dir().display()
        ),
        None if given.cluster => println!(
            "redis: cluster seeded by {} (given); the emits to {OUTBOX} and {TOTALS}, in other slots, go through {}",
            given.redacted_url(),
            crate::vocab::partition::outbox_key(&keys.stream).unwrap_or_default()
        ),
        None => println!("redis: {} (given)", given.redacted_url()),
    }
    println!(
        "stream {}: groups notifications (notifications-1, notifications-2) and analytics (analytics-1), {} events/s",
        keys.stream, args.rate
    );
    println!("Ctrl-C stops the demo.");
    if args.open {
        tokio::spawn(open_when_listening(args.http, url));
    }
    Ok(Demo {
        config,
        feed: Arc::new(DemoFeed::new(&keys.stream, args.rate)),
        redis_child,
        _plugins: plugins,
    })
}

/// The demo's pipelines: `notifications` with two consumers and `analytics`
/// with one, reclaiming a crashed consumer's entries after 5s.
fn pipelines(
    redis: &RedisConfig,
    keys: &Keys,
    plugins: &PluginFiles,
    cache_dir: Option<&Path>,
) -> anyhow::Result<Vec<RunConfig>> {
    let notify = plugins.notify();
    let analytics = plugins.analytics();
    let outbox = format!("outbox={}", OUTBOX);
    let totals = format!("output={}", TOTALS);
    let notifications = |name: &str| -> Vec<String> {
        let mut flags = vec![
            "--group",
            "notifications",
            "--plugin-config",
            outbox.as_str(),
            "--plugin-config",
            "log=debug",
            "--emit-allow",
            "notifications:*",
        ];
        flags.extend(["--name", name, "--consumer", name]);
        flags.into_iter().map(String::from).collect()
    };
    [
        (notifications("notifications-1"), notify.as_path()),
        (notifications("notifications-2"), notify.as_path()),
        (
            [
                "--group",
                "analytics",
                "--name",
                "analytics-1",
                "--consumer",
                "analytics-1",
                "--plugin-config",
                totals.as_str(),
                "--emit-allow",
                "analytics:*",
            ]
            .map(String::from)
            .to_vec(),
            analytics.as_path(),
        ),
    ]
    .into_iter()
    .map(|(mut flags, plugin)| {
        if let Some(dir) = cache_dir {
            flags.extend(["--cache-dir".into(), dir.display().to_string()]);
        }
        pipeline(redis, keys, plugin, &flags)
    })
    .collect()
}

/// One pipeline from `host run` flags (environment variables ignored: the
/// demo is the same everywhere), over settings every demo pipeline shares.
fn pipeline(
    redis: &RedisConfig,
    keys: &Keys,
    plugin: &Path,
    flags: &[String],
) -> anyhow::Result<RunConfig> {
    let shared = [
        "run",
        "--stream",
        keys.stream.as_str(),
        "--dlq",
        keys.dlq.as_str(),
        // A crashed consumer's entries come back within seconds, not the
        // default half minute; the handler deadline must stay below it.
        "--claim-idle",
        "5s",
        "--claim-interval",
        "1s",
        "--handler-timeout",
        "2s",
        "--max-deliveries",
        "3",
        // A few events a second need no more workers.
        "--concurrency",
        "2",
        // The dashboard shows progress; the log need not.
        "--stats-interval",
        "0s",
    ];
    let argv = shared
        .into_iter()
        .map(String::from)
        .chain(["--plugin".into(), plugin.display().to_string()])
        .chain(flags.iter().cloned());
    let matches = crate::cli::file::run_command()
        .try_get_matches_from(argv)
        .context("the demo's pipeline flags")?;
    let args = RunArgs::from_arg_matches(&matches).context("the demo's pipeline flags")?;
    Ok(args.into_config(redis.clone(), Vec::new())?)
}

/// Opens `url` in a browser once something listens at `listen`; a failure is
/// only a warning (the link is printed anyway).
async fn open_when_listening(listen: HttpListen, url: String) {
    let deadline = tokio::time::Instant::now() + OPEN_WAIT;
    while tokio::net::TcpStream::connect((listen.host.as_str(), listen.port))
        .await
        .is_err()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(opener)
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            tracing::warn!(opener, status = %s, "cannot open the dashboard; open the printed link")
        }
        Err(e) => {
            tracing::warn!(opener, error = %e, "cannot open the dashboard; open the printed link")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipelines_are_the_reference_scenario_with_run_defaults() {
        let plugins = PluginFiles::write(&Leftovers::new()).unwrap();
        let redis = RedisConfig::from_url("redis://127.0.0.1:1");
        let ps = pipelines(&redis, &Keys::of(false), &plugins, None).unwrap();
        let names: Vec<_> = ps
            .iter()
            .map(|p| (p.name.as_str(), p.group.as_str(), p.consumer.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("notifications-1", "notifications", "notifications-1"),
                ("notifications-2", "notifications", "notifications-2"),
                ("analytics-1", "analytics", "analytics-1"),
            ]
        );
        for p in &ps {
            assert_eq!(p.stream, super::super::STREAM);
            assert_eq!(p.dlq, super::super::DLQ, "the DLQ the reset deletes");
            assert_eq!(p.claim_idle, Duration::from_secs(5));
            assert_eq!(p.max_deliveries, 3);
            assert_eq!(p.batch, 500, "host run's default");
            assert_eq!(p.validate(), Ok(()));
        }
        assert_eq!(ps[0].plugin_config["outbox"], OUTBOX);
        assert_eq!(ps[2].plugin_config["output"], TOTALS);
        assert_eq!(ps[2].plugin, plugins.analytics());
    }

    #[test]
    fn exit_codes_tell_missing_redis_from_bad_flags() {
        let missing = anyhow::Error::from(RedisChildError::NotInstalled { at: "x".into() });
        assert_eq!(exit_code(&missing), 69);
        let bad = anyhow::Error::from(ConfigError::Invalid {
            flag: "redis",
            problem: "bad".into(),
        })
        .context("while starting");
        assert_eq!(exit_code(&bad), 64);
    }
}
