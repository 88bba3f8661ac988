//! A consumer process — `host run`, or a peer (the guides' loops in Node.js
//! and Python) — started as a child, its CPU time and peak memory read from
//! /proc, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What to run under the host.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// The `host` binary.
    pub bin: PathBuf,
    /// Redis URL.
    pub redis: String,
    /// The component to load.
    pub plugin: PathBuf,
    /// Extra `host run` flags (plugin config, concurrency, ...).
    pub args: Vec<String>,
    /// Compiled-artifact cache shared by all runs (start-up is not measured).
    pub cache_dir: PathBuf,
    /// Where each process's log goes.
    pub log_dir: PathBuf,
}

/// A running consumer process.
#[derive(Debug)]
pub struct HostProc {
    child: Child,
    log: PathBuf,
}

impl HostProc {
    /// Starts `host run` on `stream`/`group` as consumer `consumer`.
    pub fn start(spec: &HostSpec, stream: &str, group: &str, consumer: &str) -> Result<Self> {
        let mut cmd = Command::new(&spec.bin);
        cmd.arg("run")
            .args(["--redis", &spec.redis, "--stream", stream, "--group", group])
            .args(["--consumer", consumer, "--block", "500ms", "--log", "warn"])
            .arg("--plugin")
            .arg(&spec.plugin)
            .arg("--cache-dir")
            .arg(&spec.cache_dir)
            // A benchmark host has nothing to trim or hand over; defaults otherwise.
            .args(&spec.args);
        Self::spawn(cmd, &spec.log_dir.join(format!("{group}-{consumer}.log")))
    }

    /// Starts a peer: `program script URL STREAM GROUP CONSUMER`.
    pub fn peer(
        program: &Path,
        script: &Path,
        url: &str,
        (stream, group, consumer): (&str, &str, &str),
        log_dir: &Path,
    ) -> Result<Self> {
        let mut cmd = Command::new(program);
        cmd.arg(script).args([url, stream, group, consumer]);
        Self::spawn(cmd, &log_dir.join(format!("{group}-{consumer}.log")))
    }

    fn spawn(mut cmd: Command, log: &Path) -> Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the host's log if it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "consumer exited early ({status}); its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Peak resident memory so far, in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        crate::procstat::peak_rss_bytes(self.pid())
    }

    /// SIGTERM, then waits for the clean shutdown (SIGKILL after 30 s).
    pub fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!(
                        "warning: consumer exited with {status}; log in {}",
                        self.log.display()
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("consumer did not stop within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The host's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }
}
