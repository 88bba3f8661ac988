//! A private `redis-server` for `host demo` when nothing answers at the given
//! address: a child process on a free loopback port, with its data (none is
//! persisted) and log in a temporary directory, killed on drop — or by the
//! demo's [`Leftovers`] on a second signal, where it is registered as it is
//! spawned.
//!
//! A `std` child, not tokio's: killing it is one signal and a wait of
//! milliseconds, and it keeps tokio's `process` feature (and a rebuild of
//! everything above tokio) out of the dependency graph.

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::leftovers::{LeftoverDir, Leftovers};

/// How long a starting server gets to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports tried before giving up: a port found free can be taken by another
/// process before the server binds it.
const ATTEMPTS: usize = 3;

/// Why no private server could be started.
#[derive(Debug, thiserror::Error)]
pub enum RedisChildError {
    /// `redis-server` is not on PATH.
    #[error(
        "nothing answers at {at} and redis-server is not installed (not found on PATH) to start a private one; \
         install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`) \
         or pass --redis URL of a running Redis"
    )]
    NotInstalled {
        /// The address that refused.
        at: String,
    },
    /// `--cluster` was given and nothing answers at the seed: a private
    /// server would not be a cluster.
    #[error(
        "nothing answers at {at}: with --cluster the demo runs on a cluster that is already up \
         (README: \"Trying it on a local cluster\"); without --cluster it starts a private redis-server"
    )]
    NoCluster {
        /// The seed that refused.
        at: String,
    },
    /// The temporary directory or the process could not be created.
    #[error("cannot start a private redis-server: {0}")]
    Spawn(#[source] io::Error),
    /// It started but never answered, or exited.
    #[error("the private redis-server did not come up: {reason}{log}")]
    NotReady {
        /// What was seen.
        reason: String,
        /// The end of its log, if it wrote one.
        log: String,
    },
}

/// A running private `redis-server`; killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct RedisChild {
    port: u16,
    /// Its working directory (removed once the child is killed, on drop).
    dir: LeftoverDir,
    child: Child,
    /// Where the child is registered.
    leftovers: Arc<Leftovers>,
}

impl RedisChild {
    /// Starts `redis-server` from PATH on a free loopback port and waits
    /// until it answers. `at` names the address that refused, for the
    /// message when redis-server is missing. The child and its directory
    /// are registered in `leftovers`.
    pub async fn start(at: &str, leftovers: &Arc<Leftovers>) -> Result<Self, RedisChildError> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let dir = leftovers
                .tempdir("streamhost-demo-redis-")
                .map_err(RedisChildError::Spawn)?;
            let port = free_port().map_err(RedisChildError::Spawn)?;
            let child = leftovers
                .spawn(&mut command(port, dir.path()))
                .map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => RedisChildError::NotInstalled { at: at.to_owned() },
                    _ => RedisChildError::Spawn(e),
                })?;
            let mut server = Self {
                port,
                dir,
                child,
                leftovers: leftovers.clone(),
            };
            match server.ready().await {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills it and waits for it to be gone, so its port is free when this
    /// returns. Its data is throwaway: no shutdown save to wait for.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Err(e) = self.leftovers.end_child(&mut self.child) {
            tracing::warn!(error = %e, pid = self.child.id(), "cannot stop the private redis-server");
        }
    }

    async fn ready(&mut self) -> Result<(), RedisChildError> {
        let start = Instant::now();
        let client = redis::Client::open(self.url()).map_err(|e| self.not_ready(e.to_string()))?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.not_ready(format!("it exited ({status})")));
            }
            if let Ok(mut con) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                self.kill();
                return Err(self.not_ready(format!("no answer within {START_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn not_ready(&self, reason: String) -> RedisChildError {
        let log = std::fs::read_to_string(log_path(self.dir.path()))
            .map(|l| {
                let tail: Vec<&str> = l.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("; its log ends:\n{}", tail.join("\n"))
            })
            .unwrap_or_default();
        RedisChildError::NotReady { reason, log }
    }
}

fn command(port: u16, dir: &Path) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        // A throwaway: no snapshots, no append-only file.
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(log_path(dir))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: Ctrl-C in the terminal reaches only the
        // host, which drains against this server before stopping it.
        .process_group(0);
    command
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        // Already reaped (stopped, or exited at start): nothing to kill,
        // but it is forgotten by the registry all the same.
        self.kill();
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("redis.log")
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
