//! Throughput runs on a pre-filled stream: each run reads every entry on a
//! fresh consumer group, timed from the first entry read to the last one
//! acked, with CPU time of the consumer(s) and of redis-server over the
//! same window.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::hostproc::HostProc;
use crate::native::{self, AckStyle};
use crate::procstat::CpuMeter;
use crate::server::{self, Server};

/// One timed run.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Entries handled in the timed window.
    pub entries: u64,
    /// Length of the window.
    pub seconds: f64,
    /// Entries per second.
    pub rate: f64,
    /// CPU seconds of the consumer process(es) in the window.
    pub consumer_cpu_s: Option<f64>,
    /// CPU seconds of redis-server in the window.
    pub redis_cpu_s: Option<f64>,
    /// Peak resident memory of the consumer process(es), summed, in MiB.
    pub peak_rss_mib: Option<f64>,
}

/// A baseline loop, run in this process.
pub async fn baseline(
    server: &Server,
    stream: &str,
    group: &str,
    count: usize,
    style: AckStyle,
    limit: usize,
) -> Result<Measurement> {
    let mut con = server.connect().await?;
    server::fresh_group(&mut con, stream, group).await?;
    let meter = CpuMeter::start(&[std::process::id()]);
    let redis_meter = CpuMeter::start(&server.pid.into_iter().collect::<Vec<_>>());
    let (entries, took) = native::drain_limit(&mut con, stream, group, count, style, limit).await?;
    let consumer_cpu = meter.elapsed();
    let redis_cpu = redis_meter.elapsed();
    server::destroy_group(&mut con, stream, group).await?;
    if let AckStyle::Emitting(emits) = style {
        // A baseline that lost appends would flatter itself: every target
        // must hold one entry per entry handled.
        for target in emits.targets() {
            let appended: usize = redis::cmd("XLEN").arg(target).query_async(&mut con).await?;
            if appended != entries {
                bail!("{target} holds {appended} entries after {entries} were handled");
            }
        }
        let _: () = redis::cmd("DEL")
            .arg(emits.targets())
            .query_async(&mut con)
            .await?;
    }
    Ok(Measurement {
        entries: entries as u64,
        seconds: took.as_secs_f64(),
        rate: entries as f64 / took.as_secs_f64(),
        consumer_cpu_s: consumer_cpu,
        redis_cpu_s: redis_cpu,
        peak_rss_mib: crate::procstat::peak_rss_bytes(std::process::id())
            .map(|b| b as f64 / 1048576.0),
    })
}

/// `processes` consumer processes (started by `start(consumer)`) on one
/// fresh group, until all `entries` of `stream` are acked. `cleanup` keys
/// (emit targets) are deleted afterwards.
pub async fn processes(
    server: &Server,
    start: &dyn Fn(&str) -> Result<HostProc>,
    stream: &str,
    group: &str,
    entries: u64,
    processes: usize,
    cleanup: &[&str],
) -> Result<Measurement> {
    let mut con = server.connect().await?;
    server::fresh_group(&mut con, stream, group).await?;
    let mut hosts = (0..processes)
        .map(|i| start(&format!("bench-{i}")))
        .collect::<Result<Vec<_>>>()?;
    let pids: Vec<u32> = hosts.iter().map(HostProc::pid).collect();
    let redis_pids: Vec<u32> = server.pid.into_iter().collect();
    // Timed from the first entry read: start-up (loading the component) is
    // not throughput, and is measured separately by `host check`.
    let mut window: Option<(Instant, u64, CpuMeter, CpuMeter)> = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    let result = loop {
        for h in &mut hosts {
            h.check_alive()?;
        }
        if Instant::now() > deadline {
            bail!("the consumer did not finish {entries} entries within 15 minutes");
        }
        let (read, pending) = server::group_progress(&mut con, stream, group).await?;
        if window.is_none() && read > 0 {
            window = Some((
                Instant::now(),
                read,
                CpuMeter::start(&pids),
                CpuMeter::start(&redis_pids),
            ));
        }
        if read >= entries && pending == 0 {
            let (t0, read0, host_cpu, redis_cpu) = window.take().expect("read > 0");
            let seconds = t0.elapsed().as_secs_f64();
            let done = entries - read0;
            let rss: Option<u64> = hosts.iter().map(HostProc::peak_rss).sum();
            break Measurement {
                entries: done,
                seconds,
                rate: done as f64 / seconds,
                consumer_cpu_s: host_cpu.elapsed(),
                redis_cpu_s: redis_cpu.elapsed(),
                peak_rss_mib: rss.map(|b| b as f64 / 1048576.0),
            };
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    for h in hosts {
        h.stop()?;
    }
    server::destroy_group(&mut con, stream, group).await?;
    server::delete(&mut con, cleanup).await?;
    Ok(result)
}
