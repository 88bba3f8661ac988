//! CPU time and peak memory of a process, read from /proc (Linux only; on
//! other systems the figures are reported as unknown).

use std::sync::OnceLock;

/// Clock ticks per second for /proc/<pid>/stat times (`getconf CLK_TCK`).
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds consumed so far by `pid` (all its threads).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line (1-based),
    // i.e. 11 and 12 after the state field that follows ')'.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

/// Nanoseconds all live threads of `pid` have spent on a CPU, from the
/// scheduler's own accounting (`/proc/<pid>/task/*/schedstat`): exact where
/// `cpu_seconds` counts clock ticks, which over a few idle seconds is too
/// coarse to tell 0.1% of a core from 1%.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        // A thread that ended meanwhile has no file any more; its time is lost
        // either way.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Peak resident set size of `pid` in bytes (VmHWM).
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU seconds of a set of processes between two moments.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    start: Vec<(u32, f64)>,
}

impl CpuMeter {
    /// Starts measuring `pids` now.
    pub fn start(pids: &[u32]) -> Self {
        Self {
            start: pids
                .iter()
                .filter_map(|&p| cpu_seconds(p).map(|s| (p, s)))
                .collect(),
        }
    }

    /// CPU seconds used by the measured processes since `start`; `None` if
    /// any could not be read.
    pub fn elapsed(&self) -> Option<f64> {
        if self.start.is_empty() {
            return None;
        }
        let mut total = 0.0;
        for &(pid, s0) in &self.start {
            total += cpu_seconds(pid)? - s0;
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let before = cpu_seconds(me).expect("own stat");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(me).expect("own stat") > before);
        assert!(peak_rss_bytes(me).expect("own status") > 1 << 20);
        let ns = cpu_ns(me).expect("own schedstat");
        std::hint::black_box(
            (0..10_000_000u64).fold(0u64, |a, i| a.wrapping_add(std::hint::black_box(i))),
        );
        assert!(cpu_ns(me).expect("own schedstat") > ns);
    }
}
