//! Operator commands run to their end with their peak memory measured: the
//! kernel's `ru_maxrss` of the `host` process alone.
//!
//! A process starts its `ru_maxrss` at the peak of the process it was
//! spawned from (with `vfork`, which std's spawn uses, the parent's whole
//! memory): from this test binary, whose other tests build large streams,
//! that could be hundreds of MiB. So a small python3 (which CI installs)
//! spawns the host and reports the peak of its child alone.

use std::process::{Command, Stdio};

use super::RedisServer;

/// What a measured command did.
#[derive(Debug)]
pub struct Measured {
    /// Exit status (`128 + signal` when killed).
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (without the measuring line).
    pub stderr: String,
    /// Peak resident memory of the host process, in bytes.
    pub peak_rss: u64,
}

const REPORT_PREFIX: &str = "peak_rss_kib=";

/// Runs `host ARGS --redis URL` to its end under the measuring python3.
pub fn host_command(redis: &RedisServer, args: &[&str]) -> Measured {
    const REPORT: &str = "import resource, subprocess, sys\n\
        code = subprocess.run(sys.argv[1:]).returncode\n\
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n\
        print(f'peak_rss_kib={peak}', file=sys.stderr)\n\
        sys.exit(code if code >= 0 else 128 - code)\n";
    let out = Command::new("python3")
        .args(["-c", REPORT, env!("CARGO_BIN_EXE_host")])
        .args(args)
        .args(["--redis", &redis.url()])
        .stdin(Stdio::null())
        .output()
        .expect("running python3 (it reports the host's peak memory)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (report, rest): (Vec<&str>, Vec<&str>) =
        stderr.lines().partition(|l| l.starts_with(REPORT_PREFIX));
    let kib: u64 = report
        .last()
        .and_then(|l| l[REPORT_PREFIX.len()..].trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak reported: {stderr}"));
    Measured {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: rest.join("\n"),
        peak_rss: kib * 1024,
    }
}

/// Bytes as MiB, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}
