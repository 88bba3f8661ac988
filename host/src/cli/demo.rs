//! `host demo`'s flags; what it runs is `crate::demo`.

use std::path::PathBuf;

use clap::Args;

use super::{RedisArgs, http_listen};
use crate::config::HttpListen;

/// Flags of `host demo`.
#[derive(Debug, Args)]
#[command(after_help = "\
What runs: stream demo:events:orders; group `notifications` with consumers notifications-1 and \
notifications-2 (notify plugin: one message per order to notifications:outbox); group `analytics` \
with consumer analytics-1 (analytics plugin: running totals to analytics:totals); a steady trickle \
of order events (--rate; every 50th malformed, so the dead-letter stream fills too). Entries of a \
crashed consumer are reclaimed after 5s idle; an entry failing 3 times is dead-lettered.

If nothing listens at --redis, a private redis-server (from PATH) is started on a free loopback \
port, with its data in a temporary directory (nothing persisted); otherwise the demo's own keys \
are reset there first (see --no-reset). With --cluster, --redis is a seed node of a running Redis \
Cluster: the stream is {demo:events:orders} (its dead letters {demo:events:orders}:dlq, in the \
same slot), and the notifications and totals, in other slots, are forwarded through the stream's \
outbox effectively once.

The dashboard's link carries the admin token after `#` (it never leaves the browser); set \
STREAMHOST_HTTP_TOKEN to choose the token. SIGINT/SIGTERM drain the pipelines and exit 0 (a \
private redis-server is stopped then, and its data removed); a second signal exits 130 at once, \
after the same clean-up and the removal of the plugins' temporary directory.")]
pub struct DemoArgs {
    /// Where and as whom to connect to Redis.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Serve the dashboard on ADDR: `HOST:PORT`, or a bare `PORT` for 127.0.0.1:PORT.
    #[arg(
        long,
        env = "STREAMHOST_HTTP",
        value_name = "ADDR",
        default_value = "127.0.0.1:8083",
        value_parser = http_listen
    )]
    pub http: HttpListen,
    /// Order events the trickle produces per second (0: none until the dashboard starts it).
    #[arg(
        long,
        env = "STREAMHOST_DEMO_RATE",
        value_name = "N",
        default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(0..=1000)
    )]
    pub rate: u32,
    /// Open the dashboard in a browser (xdg-open, or open on macOS) once it listens.
    #[arg(long, env = "STREAMHOST_DEMO_OPEN")]
    pub open: bool,
    /// Keep the demo's data from earlier runs. By default the demo's own keys are deleted at
    /// start — demo:events:orders, demo:events:orders:dlq, notifications:outbox,
    /// analytics:totals (with --cluster: the stream's and DLQ's hash-tagged names, the stream's
    /// outbox and the forwarder's idempotence keys) — and nothing else.
    #[arg(long, env = "STREAMHOST_DEMO_NO_RESET")]
    pub no_reset: bool,
    /// Directory for compiled plugins, so restarts skip compilation [default: $XDG_CACHE_HOME/streamhost or ~/.cache/streamhost].
    #[arg(long, env = "STREAMHOST_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}
