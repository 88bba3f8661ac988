//! End-to-end latency at a fixed arrival rate: a producer thread XADDs
//! entries stamped with `sent_ns` on a steady schedule; the consumer under
//! test records, for each entry, how long after the XADD it was handed to
//! its handler (the native loop: when decoded; the host: when the probe
//! plugin's handler started, emitted to a samples stream). Before the
//! producer starts, the consumer's process is also measured sitting idle on
//! the empty stream: what waiting costs when nothing arrives.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use redis::Value;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

use crate::hostproc::{HostProc, HostSpec};
use crate::server::{self, Server};

/// Latency percentiles of one run, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStats {
    /// Requested arrival rate (entries/s).
    pub rate: u64,
    /// Rate the producer actually achieved.
    pub achieved_rate: f64,
    /// Samples after the warm-up.
    pub samples: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Worst sample.
    pub max_us: f64,
    /// CPU the consumer's process used while it waited on the empty stream,
    /// in percent of one core (`None` where it was not measured).
    pub idle_cpu_percent: Option<f64>,
}

/// Percentiles of `latencies_ns` (sorted in place).
pub fn stats(rate: u64, achieved_rate: f64, latencies_ns: &mut [u64]) -> LatencyStats {
    latencies_ns.sort_unstable();
    let pick = |q: f64| -> f64 {
        if latencies_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies_ns.len() as f64 * q).ceil() as usize).clamp(1, latencies_ns.len());
        latencies_ns[i - 1] as f64 / 1000.0
    };
    LatencyStats {
        rate,
        achieved_rate,
        samples: latencies_ns.len(),
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        p999_us: pick(0.999),
        max_us: pick(1.0),
        idle_cpu_percent: None,
    }
}

/// How long a consumer is watched sitting idle on the empty stream.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// CPU used by `pid` over the next `window`, in percent of one core.
async fn idle_cpu(pid: u32, window: Duration) -> Option<f64> {
    let before = crate::procstat::cpu_ns(pid)?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let used = crate::procstat::cpu_ns(pid)?.saturating_sub(before);
    Some(used as f64 / started.elapsed().as_nanos() as f64 * 100.0)
}

/// A producer thread adding `rate` entries/s to `stream` for `duration`.
pub struct Producer {
    handle: std::thread::JoinHandle<Result<(u64, Duration)>>,
    /// Wall clock (ns) when production started.
    pub started_ns: u64,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Producer")
    }
}

impl Producer {
    /// Starts producing now. Entries are sent every millisecond in one
    /// pipeline, each stamped just before the pipeline is written.
    pub fn start(url: &str, stream: &str, rate: u64, duration: Duration) -> Result<Self> {
        let mut con = redis::Client::open(url)?.get_connection()?;
        let stream = stream.to_owned();
        let started_ns = crate::now_ns();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut sent = 0u64;
            let total = (rate as f64 * duration.as_secs_f64()) as u64;
            while sent < total {
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                if due > sent {
                    let mut pipe = redis::pipe();
                    let now = crate::now_ns();
                    for i in sent..due {
                        server::add_order(&mut pipe, &stream, i as usize, Some(now));
                    }
                    let _: () = pipe.query(&mut con)?;
                    sent = due;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            Ok((sent, start.elapsed()))
        });
        Ok(Self { handle, started_ns })
    }

    /// Waits for the producer; returns (entries sent, achieved rate).
    pub fn finish(self) -> Result<(u64, f64)> {
        let (sent, took) = self
            .handle
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        Ok((sent, sent as f64 / took.as_secs_f64()))
    }
}

/// Which consumer a latency run measures.
#[derive(Debug, Clone, Copy)]
pub enum Consumer<'a> {
    /// The native loop, in this process.
    Native,
    /// The native loop handing entries to a pool of this many threads.
    NativePool(usize),
    /// `host run` with the probe plugin.
    Host(&'a HostSpec),
}

/// Runs `consumer` at `rate` for `warmup + duration`; percentiles cover
/// entries sent after the warm-up.
pub async fn run(
    server: &Server,
    consumer: Consumer<'_>,
    rate: u64,
    warmup: Duration,
    duration: Duration,
) -> Result<LatencyStats> {
    let (stream, group, samples_key) = ("bench:live", "live", "bench:latency");
    let mut con = server.connect().await?;
    server::delete(&mut con, &[stream, samples_key]).await?;
    server::fresh_group(&mut con, stream, group).await?;
    let total = warmup + duration;
    let expected = (rate as f64 * total.as_secs_f64()) as u64;
    let warmup_ns = warmup.as_nanos() as u64;
    let (samples, achieved, cutoff, idle) = match consumer {
        Consumer::Native | Consumer::NativePool(_) => {
            let mut own = server.connect_blocking().await?;
            // On this (single-threaded) runtime: while the idle window's
            // sleep runs, the loop waiting in XREADGROUP is all this process
            // does — the producer thread starts after it (the pool's
            // threads sleep on their queue meanwhile).
            let expected = expected as usize;
            let pool = match consumer {
                Consumer::NativePool(workers) => Some(workers),
                _ => None,
            };
            let consuming = tokio::spawn(async move {
                match pool {
                    Some(workers) => {
                        crate::native::consume_live_pooled(
                            &mut own, stream, group, expected, workers,
                        )
                        .await
                    }
                    None => crate::native::consume_live(&mut own, stream, group, expected).await,
                }
            });
            let idle = idle_cpu(std::process::id(), IDLE_WINDOW).await;
            let producer = Producer::start(&server.url, stream, rate, total)?;
            let cutoff = producer.started_ns + warmup_ns;
            let samples = consuming.await.context("native loop")??;
            let (_, achieved) = producer.finish()?;
            (samples, achieved, cutoff, idle)
        }
        Consumer::Host(spec) => {
            let mut host = HostProc::start(spec, stream, group, "bench-0")?;
            wait_for_consumer(&mut con, &mut host, stream, group).await?;
            let idle = idle_cpu(host.pid(), IDLE_WINDOW).await;
            let producer = Producer::start(&server.url, stream, rate, total)?;
            let cutoff = producer.started_ns + warmup_ns;
            let (sent, achieved) = tokio::task::spawn_blocking(move || producer.finish())
                .await
                .context("producer")??;
            wait_settled(&mut con, &mut host, stream, group, sent).await?;
            host.stop()?;
            let samples = read_samples(&mut con, samples_key).await?;
            (
                samples
                    .into_iter()
                    .map(|(called, latency)| (called - latency, latency))
                    .collect(),
                achieved,
                cutoff,
                idle,
            )
        }
    };
    if samples.len() as u64 != expected {
        bail!("expected {expected} latency samples, got {}", samples.len());
    }
    let mut measured: Vec<u64> = samples
        .into_iter()
        .filter(|(sent, _)| *sent >= cutoff)
        .map(|(_, latency)| latency)
        .collect();
    server::delete(&mut con, &[stream, samples_key]).await?;
    Ok(LatencyStats {
        idle_cpu_percent: idle,
        ..stats(rate, achieved, &mut measured)
    })
}

/// Waits until the host has registered its consumer (it is reading).
pub async fn wait_for_consumer(
    con: &mut MultiplexedConnection,
    host: &mut HostProc,
    stream: &str,
    group: &str,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !server::has_consumer(con, stream, group).await {
        host.check_alive()?;
        if Instant::now() > deadline {
            bail!("the host did not start reading within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The consumer is registered just before the first read is issued.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Waits until `sent` entries were read by `group` and none is pending.
pub async fn wait_settled(
    con: &mut MultiplexedConnection,
    host: &mut HostProc,
    stream: &str,
    group: &str,
    sent: u64,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        host.check_alive()?;
        let (read, pending) = server::group_progress(con, stream, group).await?;
        if read >= sent && pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the host did not settle {sent} entries (read {read}, pending {pending})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The probe plugin's samples: (called_ns, latency_ns) per handled entry.
pub async fn read_samples(con: &mut MultiplexedConnection, key: &str) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut from = "-".to_owned();
    loop {
        let reply: Value = redis::cmd("XRANGE")
            .arg(key)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query_async(con)
            .await?;
        let entries = crate::native::decode(wrap(reply, key));
        let Some((last, _)) = entries.last() else {
            break;
        };
        from = format!("({last}");
        for (_, fields) in entries {
            let get = |name: &[u8]| -> Option<u64> {
                let (_, v) = fields.iter().find(|(k, _)| k == name)?;
                std::str::from_utf8(v).ok()?.parse().ok()
            };
            if let (Some(called), Some(latency)) = (get(b"called_ns"), get(b"latency_ns")) {
                out.push((called, latency));
            }
        }
    }
    Ok(out)
}

/// XRANGE replies are a bare entry list; `decode` expects XREADGROUP's
/// per-stream wrapping.
fn wrap(entries: Value, key: &str) -> Value {
    Value::Array(vec![Value::Array(vec![
        Value::BulkString(key.as_bytes().to_vec()),
        entries,
    ])])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let s = stats(1, 1.0, &mut v);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.p999_us, 999.0);
        assert_eq!(s.max_us, 1000.0);
    }
}
