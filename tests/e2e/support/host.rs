//! The real `host` binary as a child process, with its log captured.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::eventually;

/// A running `host` process; SIGKILLed on drop if still alive.
pub struct Host {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Lines printed on stdout, when captured ([`Host::spawn_capturing`]).
    stdout: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    /// `host run` with the given plugin and extra flags, against `redis_url`.
    pub fn run(redis_url: &str, stream: &str, group: &str, plugin: &Path, extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--redis".into(),
            redis_url.into(),
            "--stream".into(),
            stream.into(),
            "--group".into(),
            group.into(),
            "--plugin".into(),
            plugin.display().to_string(),
            "--block".into(),
            "200ms".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&args)
    }

    /// `host run` with the misbehaving test plugin, group `g`.
    pub fn misbehave(redis: &super::RedisServer, stream: &str, extra: &[&str]) -> Self {
        Self::run(
            &redis.url(),
            stream,
            "g",
            &super::plugin("misbehave"),
            extra,
        )
    }

    /// `host run` with the misbehaving test plugin, group `g`, and extra
    /// environment variables (e.g. `STREAMHOST_FAULT`).
    pub fn misbehave_env(
        redis: &super::RedisServer,
        stream: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut args: Vec<String> = [
            "run",
            "--redis",
            &redis.url(),
            "--stream",
            stream,
            "--group",
            "g",
            "--block",
            "200ms",
            "--plugin",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(super::plugin("misbehave").display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn_env(&args, env)
    }

    /// The binary with arbitrary arguments.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Self {
        Self::spawn_env(args, &[])
    }

    /// The binary with arbitrary arguments and extra environment variables.
    /// Every host of one test shares a compiled-plugin cache of that test's
    /// own (a `--cache-dir` flag still wins).
    pub fn spawn_env<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Self {
        Self::spawn_inner(args, env, false)
    }

    /// [`Host::spawn_env`], keeping what the process prints on stdout
    /// ([`Host::stdout`]).
    pub fn spawn_capturing<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Self {
        Self::spawn_inner(args, env, true)
    }

    fn spawn_inner<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        env: &[(&str, &str)],
        capture_stdout: bool,
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
            .args(args)
            .env("STREAMHOST_LOG", "info,streamhost=debug")
            .env("STREAMHOST_CACHE_DIR", test_cache_dir())
            .envs(env.iter().copied())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning host");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("HOST_LOG").is_some() {
                    eprintln!("host| {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let sink = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Self {
            child,
            log,
            stdout,
            reader: Some(reader),
        }
    }

    /// Lines printed on stdout so far (only for [`Host::spawn_capturing`]).
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Runs the binary to completion and returns (status, stderr).
    pub fn output<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (ExitStatus, String) {
        let (status, _, stderr) = Self::output_env(args, &[]);
        (status, stderr)
    }

    /// Runs the binary to completion with extra environment variables and
    /// returns (status, stdout, stderr).
    pub fn output_env<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        env: &[(&str, &str)],
    ) -> (ExitStatus, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_host"))
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("running host");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.proc_status_bytes("VmHWM:")
    }

    /// Resident set size now (`VmRSS`), in bytes.
    pub fn rss(&self) -> u64 {
        self.proc_status_bytes("VmRSS:")
    }

    fn proc_status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/<pid>/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"));
        kib * 1024
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        eventually(
            timeout,
            &format!("host log line containing {needle:?}"),
            || {
                self.log
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains(needle))
                    .then_some(())
            },
        );
    }

    /// Handler calls for entry `id` that failed retryably (its retry lines).
    pub fn failed_calls(&self, id: &str) -> usize {
        self.count_log(&format!(
            "handler failed; entry stays pending for retry entry={id}"
        ))
    }

    /// Number of log lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id() as i32;
        let rc = unsafe_free_kill(pid, sig);
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Whether the process has not exited (yet).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The pipe closes with the process: joining the reader
                // guarantees every last line is in the log.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            if start.elapsed() > timeout {
                panic!("host did not exit within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Two hosts of the misbehaving plugin on `stream` for a handover: `a`
/// (with `--handover` and a 100ms grace) once it holds the one entry of the
/// stream, and `b` once it is registered in the group. Both get `slow`.
pub fn handover_pair(redis: &super::RedisServer, stream: &str, slow: &[&str]) -> (Host, Host) {
    let a = Host::misbehave(
        redis,
        stream,
        &[
            slow,
            &["--consumer", "a", "--handover", "--shutdown-grace", "100ms"],
        ]
        .concat(),
    );
    eventually(Duration::from_secs(30), "a holds the entry", || {
        (redis.pending(stream, "g") == 1).then_some(())
    });
    let b = Host::misbehave(redis, stream, &[slow, &["--consumer", "b"]].concat());
    eventually(Duration::from_secs(30), "b registered in the group", || {
        redis
            .consumers(stream, "g")
            .contains(&"b".to_owned())
            .then_some(())
    });
    (a, b)
}

/// A compiled-plugin cache for the calling test alone (named after its
/// thread, which the test harness names after the test), emptied the first
/// time this process uses it.
fn test_cache_dir() -> std::path::PathBuf {
    static CLEARED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .replace("::", "-");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-caches")
        .join(&test);
    let mut cleared = CLEARED.lock().unwrap_or_else(|e| e.into_inner());
    if !cleared.contains(&test) {
        let _ = std::fs::remove_dir_all(&dir);
        cleared.push(test);
    }
    dir
}

/// `kill(2)` through the `kill` command, keeping the test crate free of `unsafe`.
fn unsafe_free_kill(pid: i32, sig: i32) -> i32 {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    if status.success() { 0 } else { 1 }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
