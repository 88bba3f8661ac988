//! Hot-swap pause: the host handles a steady arrival rate with the probe
//! plugin while the plugin file is replaced several times (each time by a
//! byte-different build, so every swap compiles afresh — the worst case);
//! the pause of a swap is the longest gap between consecutive handler calls
//! in the second after the file was replaced, compared with the longest gap
//! in the half second before it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::hostproc::{HostProc, HostSpec};
use crate::latency::{self, Producer};
use crate::server::{self, Server};

/// What the swap run found.
#[derive(Debug, Clone, Serialize)]
pub struct SwapStats {
    /// Arrival rate during the run.
    pub rate: u64,
    /// Swaps performed (file replacements).
    pub swaps: usize,
    /// Swaps the host reported ("plugin swapped" log lines).
    pub swaps_applied: usize,
    /// Longest gap between handler calls in the second after each swap, ms.
    pub pause_ms: Vec<f64>,
    /// Longest gap in the half second before each swap, ms (steady state).
    pub steady_gap_ms: Vec<f64>,
    /// Latency percentiles over the whole run, swaps included.
    pub latency: latency::LatencyStats,
}

impl SwapStats {
    /// The worst pause.
    pub fn max_pause_ms(&self) -> f64 {
        self.pause_ms.iter().copied().fold(0.0, f64::max)
    }
    /// The worst steady-state gap.
    pub fn max_steady_gap_ms(&self) -> f64 {
        self.steady_gap_ms.iter().copied().fold(0.0, f64::max)
    }
}

/// `wasm` with one more custom section: the same code under a new content
/// hash (custom sections are valid in components and ignored by the engine).
pub fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = wasm.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Longest gap between consecutive sorted `calls` (ns) that touches the
/// window [from, to): the gap into the window's first call counts too.
fn longest_gap(calls: &[u64], from: u64, to: u64) -> f64 {
    let start = calls.partition_point(|&c| c < from);
    let end = calls.partition_point(|&c| c < to);
    let lo = start.saturating_sub(1);
    calls[lo..end.max(lo + 1).min(calls.len())]
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .fold(0.0, f64::max)
}

/// Runs the swap benchmark with the probe plugin at `probe`.
pub async fn run(
    server: &Server,
    spec: &HostSpec,
    probe: &Path,
    rate: u64,
    swaps: usize,
    work: &Path,
) -> Result<SwapStats> {
    let (stream, group, samples_key) = ("bench:swap", "swap", "bench:latency");
    let original = std::fs::read(probe).with_context(|| format!("reading {}", probe.display()))?;
    let live = work.join("probe.wasm");
    std::fs::write(&live, &original)?;
    let mut spec = spec.clone();
    spec.plugin = live.clone();
    spec.args.push("--log=info".into());
    let mut con = server.connect().await?;
    server::delete(&mut con, &[stream, samples_key]).await?;
    server::fresh_group(&mut con, stream, group).await?;
    let mut host = HostProc::start(&spec, stream, group, "bench-0")?;
    latency::wait_for_consumer(&mut con, &mut host, stream, group).await?;

    let warmup = Duration::from_secs(1);
    let spacing = Duration::from_millis(1500);
    let total = warmup + spacing * (swaps as u32 + 1);
    let producer = Producer::start(&server.url, stream, rate, total)?;
    let start_ns = producer.started_ns;
    tokio::time::sleep(warmup).await;
    let mut swapped_at = Vec::new();
    for i in 0..swaps {
        tokio::time::sleep(spacing).await;
        // Deploy the way operators should: write aside, rename over.
        let next = with_custom_section(&original, "streamhost-bench", format!("{i}").as_bytes());
        let tmp = work.join("probe.wasm.tmp");
        std::fs::write(&tmp, next)?;
        std::fs::rename(&tmp, &live)?;
        swapped_at.push(crate::now_ns());
    }
    let (sent, achieved) = tokio::task::spawn_blocking(move || producer.finish())
        .await
        .context("producer")??;
    latency::wait_settled(&mut con, &mut host, stream, group, sent).await?;
    let log = host.log().to_owned();
    host.stop()?;
    let applied = std::fs::read_to_string(&log)?
        .lines()
        .filter(|l| l.contains("plugin swapped"))
        .count();
    let samples = latency::read_samples(&mut con, samples_key).await?;
    server::delete(&mut con, &[stream, samples_key]).await?;
    if samples.len() as u64 != sent {
        bail!("expected {sent} samples, got {}", samples.len());
    }
    let mut calls: Vec<u64> = samples.iter().map(|(c, _)| *c).collect();
    calls.sort_unstable();
    let second = 1_000_000_000;
    let pause_ms = swapped_at
        .iter()
        .map(|&t| longest_gap(&calls, t, t + second))
        .collect();
    let steady_gap_ms = swapped_at
        .iter()
        .map(|&t| longest_gap(&calls, t - second / 2, t))
        .collect();
    let cutoff = start_ns + warmup.as_nanos() as u64;
    let mut latencies: Vec<u64> = samples
        .iter()
        .filter(|(called, latency)| called - latency >= cutoff)
        .map(|(_, l)| *l)
        .collect();
    Ok(SwapStats {
        rate,
        swaps,
        swaps_applied: applied,
        pause_ms,
        steady_gap_ms,
        latency: latency::stats(rate, achieved, &mut latencies),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_includes_the_step_into_the_window() {
        let calls = [0, 10, 20, 100, 110, 300];
        assert_eq!(longest_gap(&calls, 25, 105), 80.0 / 1e6);
        assert_eq!(longest_gap(&calls, 105, 400), 190.0 / 1e6);
        assert_eq!(longest_gap(&calls, 0, 15), 10.0 / 1e6);
    }

    #[test]
    fn custom_section_appends_a_valid_section() {
        let wasm = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        let out = with_custom_section(&wasm, "n", b"xy");
        assert_eq!(&out[8..], &[0, 4, 1, b'n', b'x', b'y']);
    }
}
