//! The streamhost benchmark suite: `host run` against native Rust consumer
//! loops on one Redis — throughput (with CPU time and peak memory), latency
//! at fixed arrival rates, and the hot-swap pause. Writes JSON, an SVG chart
//! and the README's performance section. `examples/bench.sh` builds
//! everything and runs it.

mod hostproc;
mod latency;
mod native;
mod procstat;
mod report;
mod server;
mod swap;
mod throughput;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::hostproc::{HostProc, HostSpec};
use crate::native::{AckStyle, Emits};
use crate::report::{LatencyRow, Machine, Report, Scenario};

/// Benchmark `host run` against native consumer loops on the same Redis.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Redis to use; by default a private redis-server (no persistence) is
    /// started on a free loopback port.
    #[arg(long)]
    redis: Option<String>,
    /// Entries pre-filled for the throughput runs (the slow scenarios use a
    /// fraction: guide loop 1/10, emit ×5 (host and native) 1/2, Python 1/4,
    /// JavaScript 1/10).
    #[arg(long, default_value_t = 200_000)]
    entries: usize,
    /// Interleaved rounds of all throughput scenarios; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Throughput scenarios to run (default: all; `native` always runs).
    /// Names: native, guide-rust, guide-node, guide-python, noop, noop-fresh,
    /// noop-ordered, noop-x2, notify, native-emit, analytics, native-emit-x5,
    /// emit-x5, python, js.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Fixed arrival rates for the latency runs (entries/s); `0` skips them.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000")]
    rates: Vec<u64>,
    /// Measured seconds per latency run (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    latency_seconds: u64,
    /// Hot swaps in the swap run (0 skips it).
    #[arg(long, default_value_t = 8)]
    swaps: usize,
    /// Arrival rate during the swap run (entries/s).
    #[arg(long, default_value_t = 5000)]
    swap_rate: u64,
    /// Directory with the built plugins (noop, notify, analytics, fanout,
    /// probe, fraud, enrich .wasm).
    #[arg(long, default_value = "plugins/dist")]
    plugins: PathBuf,
    /// Extra flag for every `host run` (repeatable), e.g. `--host-arg=--concurrency=4`.
    #[arg(long = "host-arg", allow_hyphen_values = true)]
    host_args: Vec<String>,
    /// Where results.json, chart.svg, section.md and the host logs (logs/) go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Replace the README's performance section with this run's figures.
    #[arg(long)]
    update_readme: bool,
}

/// Wall-clock nanoseconds since the Unix epoch (the clock the probe plugin
/// reads through WASI).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A throughput scenario to run each round.
struct Plan {
    name: &'static str,
    what: &'static str,
    kind: Kind,
    /// Fraction of the pre-filled entries it handles.
    divisor: usize,
}

enum Kind {
    Baseline(usize, AckStyle),
    Host {
        plugin: &'static str,
        args: &'static [&'static str],
        processes: usize,
        cleanup: &'static [&'static str],
    },
    /// A peer consumer process: `peers/<program> peers/<script>`.
    Peer {
        program: &'static str,
        script: &'static str,
    },
}

fn plans() -> Vec<Plan> {
    vec![
        Plan {
            name: "native",
            what: "Rust loop, XREADGROUP COUNT 500 + XACK pipelined with the next read, no-op handler",
            kind: Kind::Baseline(500, AckStyle::Pipelined),
            divisor: 1,
        },
        Plan {
            name: "guide-rust",
            what: "the reference guides' worker loop in Rust (redis-rs): COUNT 10, one awaited XACK per entry",
            kind: Kind::Baseline(10, AckStyle::PerEntry),
            divisor: 10,
        },
        Plan {
            name: "guide-node",
            what: "the node-redis guide's ConsumerWorker loop (Node.js, node-redis): COUNT 10, one awaited XACK per entry",
            kind: Kind::Peer {
                program: "node",
                script: "guide-worker.mjs",
            },
            divisor: 10,
        },
        Plan {
            name: "guide-python",
            what: "the same loop in Python (redis-py)",
            kind: Kind::Peer {
                program: ".venv/bin/python",
                script: "guide_worker.py",
            },
            divisor: 10,
        },
        Plan {
            name: "noop",
            what: "host run, no-op Rust plugin",
            kind: Kind::Host {
                plugin: "noop.wasm",
                args: &[],
                processes: 1,
                cleanup: &[],
            },
            divisor: 1,
        },
        Plan {
            name: "noop-fresh",
            what: "host run --fresh-instance (new instance per entry), no-op Rust plugin",
            kind: Kind::Host {
                plugin: "noop.wasm",
                args: &["--fresh-instance"],
                processes: 1,
                cleanup: &[],
            },
            divisor: 1,
        },
        Plan {
            name: "noop-ordered",
            what: "host run --order-by customer (1,000 customers), no-op Rust plugin",
            kind: Kind::Host {
                plugin: "noop.wasm",
                args: &["--order-by", "customer"],
                processes: 1,
                cleanup: &[],
            },
            divisor: 1,
        },
        Plan {
            name: "noop-x2",
            what: "two host processes on one group, no-op Rust plugin",
            kind: Kind::Host {
                plugin: "noop.wasm",
                args: &[],
                processes: 2,
                cleanup: &[],
            },
            divisor: 1,
        },
        Plan {
            name: "notify",
            what: "host run, notify plugin (Rust, parses and formats each event)",
            kind: Kind::Host {
                plugin: "notify.wasm",
                args: &["--plugin-config=log=off"],
                processes: 1,
                cleanup: &[],
            },
            divisor: 1,
        },
        Plan {
            name: "native-emit",
            what: "the native loop with the analytics plugin's handler in Rust: per entry one XADD of running totals, atomic with the batch's XACK (MULTI/EXEC)",
            kind: Kind::Baseline(
                500,
                AckStyle::Emitting(Emits::Totals("bench:native-totals")),
            ),
            divisor: 1,
        },
        Plan {
            name: "analytics",
            what: "host run, analytics plugin (Rust, one emit per event)",
            kind: Kind::Host {
                plugin: "analytics.wasm",
                args: &["--plugin-config=output=bench:totals"],
                processes: 1,
                cleanup: &["bench:totals"],
            },
            divisor: 1,
        },
        Plan {
            name: "native-emit-x5",
            what: "the native loop with the fanout plugin's handler in Rust: per entry five XADDs, atomic with the batch's XACK (MULTI/EXEC)",
            kind: Kind::Baseline(
                500,
                AckStyle::Emitting(Emits::Forward(&[
                    "bench:native-f1",
                    "bench:native-f2",
                    "bench:native-f3",
                    "bench:native-f4",
                    "bench:native-f5",
                ])),
            ),
            divisor: 2,
        },
        Plan {
            name: "emit-x5",
            what: "host run, fanout plugin (Rust, forwards each event to 5 streams: 5 emits per event)",
            kind: Kind::Host {
                plugin: "fanout.wasm",
                args: &["--plugin-config=outputs=bench:f1,bench:f2,bench:f3,bench:f4,bench:f5"],
                processes: 1,
                cleanup: &["bench:f1", "bench:f2", "bench:f3", "bench:f4", "bench:f5"],
            },
            divisor: 2,
        },
        Plan {
            name: "python",
            what: "host run, fraud plugin (Python, componentize-py)",
            kind: Kind::Host {
                plugin: "fraud.wasm",
                args: &["--plugin-config=max_amount=1000000000"],
                processes: 1,
                cleanup: &[],
            },
            divisor: 4,
        },
        Plan {
            name: "js",
            what: "host run, enrich plugin (JavaScript, componentize-js; one emit per event)",
            kind: Kind::Host {
                plugin: "enrich.wasm",
                args: &["--plugin-config=output=bench:enriched"],
                processes: 1,
                cleanup: &["bench:enriched"],
            },
            divisor: 10,
        },
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    let host_bin = std::env::current_exe()?.with_file_name("host");
    if !host_bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p streamhost`",
            host_bin.display()
        );
    }
    let plans: Vec<Plan> = plans()
        .into_iter()
        .filter(|p| {
            p.name == "native" || args.only.is_empty() || args.only.iter().any(|o| o == p.name)
        })
        .collect();
    let peers = root.join("examples/bench/peers");
    for plan in &plans {
        match plan.kind {
            Kind::Host { plugin, .. } => need(&args.plugins.join(plugin))?,
            Kind::Peer { .. } => {
                for dep in ["node_modules/redis", ".venv/bin/python"] {
                    if !peers.join(dep).exists() {
                        bail!(
                            "{} is missing: run examples/bench/peers/setup.sh (examples/bench.sh does)",
                            peers.join(dep).display()
                        );
                    }
                }
            }
            Kind::Baseline(..) => {}
        }
    }
    let probe = args.plugins.join("probe.wasm");
    if args.rates.iter().any(|&r| r > 0) || args.swaps > 0 {
        need(&probe)?;
    }
    std::fs::create_dir_all(&args.out)?;
    // Every host process's log, kept for a look after the run.
    let logs = args.out.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let work = tempfile::tempdir()?;
    let spec = |plugin: &Path, extra: &[&str]| HostSpec {
        bin: host_bin.clone(),
        redis: String::new(),
        plugin: plugin.to_owned(),
        args: extra
            .iter()
            .map(|s| s.to_string())
            .chain(args.host_args.iter().cloned())
            .collect(),
        cache_dir: args.out.join("cache"),
        log_dir: logs.clone(),
    };

    let server = server::Server::start(args.redis.as_deref()).await?;
    let machine = Machine::describe(&server.version);
    println!(
        "machine: {} ({} cores, {:.0} GiB, load average {:.2}), {}, redis {} at {}",
        machine.cpu,
        machine.cores,
        machine.memory_gib,
        machine.load,
        machine.kernel,
        server.version,
        server.url
    );
    let stream = "bench:orders";
    let mut con = server.connect().await?;
    server::prefill(&mut con, stream, args.entries).await?;
    println!("pre-filled {} entries into {stream}", args.entries);

    // Throughput: every scenario once per round, in the same order, so slow
    // drifts of a noisy machine hit all of them alike.
    let mut scenarios: Vec<Scenario> = plans
        .iter()
        .map(|p| Scenario {
            name: p.name.into(),
            what: p.what.into(),
            runs: Vec::new(),
            ratios: Vec::new(),
        })
        .collect();
    for round in 0..args.rounds {
        let mut native_rate = f64::NAN;
        for (plan, sc) in plans.iter().zip(&mut scenarios) {
            let group = format!("tp-{}-{round}", plan.name);
            let limit = args.entries / plan.divisor;
            let m = match &plan.kind {
                Kind::Baseline(count, style) => {
                    throughput::baseline(&server, stream, &group, *count, *style, limit).await?
                }
                Kind::Host { .. } | Kind::Peer { .. } => {
                    let limited = if plan.divisor > 1 {
                        // A separate, shorter stream: the group reads it all.
                        let short = format!("{stream}:{}", plan.name);
                        if round == 0 {
                            server::prefill(&mut con, &short, limit).await?;
                        }
                        short
                    } else {
                        stream.to_owned()
                    };
                    let (count, cleanup): (usize, &[&str]) = match &plan.kind {
                        Kind::Host {
                            processes, cleanup, ..
                        } => (*processes, cleanup),
                        _ => (1, &[]),
                    };
                    let start = |consumer: &str| -> Result<HostProc> {
                        match &plan.kind {
                            Kind::Host {
                                plugin,
                                args: extra,
                                ..
                            } => {
                                let mut spec = spec(&args.plugins.join(plugin), extra);
                                spec.redis = server.url.clone();
                                HostProc::start(&spec, &limited, &group, consumer)
                            }
                            Kind::Peer { program, script } => HostProc::peer(
                                // A bare name is looked up on PATH.
                                &if program.contains('/') {
                                    peers.join(program)
                                } else {
                                    PathBuf::from(program)
                                },
                                &peers.join(script),
                                &server.url,
                                (&limited, &group, consumer),
                                &logs,
                            ),
                            Kind::Baseline(..) => unreachable!("baselines run in-process"),
                        }
                    };
                    throughput::processes(
                        &server,
                        &start,
                        &limited,
                        &group,
                        limit as u64,
                        count,
                        cleanup,
                    )
                    .await
                    .with_context(|| format!("scenario {}", plan.name))?
                }
            };
            if plan.name == "native" {
                native_rate = m.rate;
            }
            let ratio = m.rate / native_rate;
            println!(
                "round {}/{}  {:<12} {:>7.0} entries/s {:>5.2}x native  cpu {:>15} µs/entry  redis {:>15} µs/entry  rss {:>4} MiB",
                round + 1,
                args.rounds,
                plan.name,
                m.rate,
                ratio,
                fmt_us(m.consumer_cpu_s, m.entries),
                fmt_us(m.redis_cpu_s, m.entries),
                m.peak_rss_mib.map_or("n/a".into(), |r| format!("{r:.0}")),
            );
            sc.runs.push(m);
            sc.ratios.push(ratio);
        }
    }

    let mut latency = Vec::new();
    let warmup = Duration::from_secs(1);
    let measured = Duration::from_secs(args.latency_seconds);
    for &rate in args.rates.iter().filter(|&&r| r > 0) {
        let mut probe_spec = spec(&probe, &["--plugin-config=output=bench:latency"]);
        probe_spec.redis = server.url.clone();
        for (name, consumer) in [
            ("native loop", latency::Consumer::Native),
            // As many threads as the host's default --concurrency.
            (
                "native loop + pool",
                latency::Consumer::NativePool(machine.cores),
            ),
            ("host + probe", latency::Consumer::Host(&probe_spec)),
        ] {
            let stats = latency::run(&server, consumer, rate, warmup, measured)
                .await
                .with_context(|| format!("latency of {name} at {rate}/s"))?;
            println!(
                "latency {:>6}/s  {:<18} p50 {:>7.0} µs  p99 {:>7.0} µs  p99.9 {:>7.0} µs  max {:>7.0} µs  ({} samples, {:.0}/s achieved)  idle cpu {}%",
                rate,
                name,
                stats.p50_us,
                stats.p99_us,
                stats.p999_us,
                stats.max_us,
                stats.samples,
                stats.achieved_rate,
                stats
                    .idle_cpu_percent
                    .map_or("n/a".into(), |p| format!("{p:.2}"))
            );
            latency.push(LatencyRow {
                consumer: name.into(),
                stats,
            });
        }
    }

    let swap = if args.swaps > 0 {
        let mut probe_spec = spec(&probe, &["--plugin-config=output=bench:latency"]);
        probe_spec.redis = server.url.clone();
        let s = swap::run(
            &server,
            &probe_spec,
            &probe,
            args.swap_rate,
            args.swaps,
            work.path(),
        )
        .await
        .context("hot-swap run")?;
        println!(
            "hot swap: {} swaps ({} applied) at {}/s: pauses {} ms (steady-state gaps up to {:.1} ms)",
            s.swaps,
            s.swaps_applied,
            s.rate,
            s.pause_ms
                .iter()
                .map(|p| format!("{p:.1}"))
                .collect::<Vec<_>>()
                .join(" "),
            s.max_steady_gap_ms()
        );
        Some(s)
    } else {
        None
    };

    let report = Report {
        machine,
        entries: args.entries,
        rounds: args.rounds,
        throughput: scenarios,
        latency,
        swap,
    };
    let json = args.out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    let svg = args.out.join("chart.svg");
    std::fs::write(&svg, report.svg())?;
    // The command as the README should show it: the script, with the
    // options that shaped these figures.
    let shown: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--update-readme")
        .collect();
    let command = std::iter::once("examples/bench.sh".to_owned())
        .chain(shown)
        .collect::<Vec<_>>()
        .join(" ");
    let section = report.markdown(&command);
    std::fs::write(args.out.join("section.md"), &section)?;
    println!("\n{section}");
    println!(
        "wrote {}, {} and {}",
        json.display(),
        svg.display(),
        args.out.join("section.md").display()
    );
    if args.update_readme {
        report::update_readme(&root.join("README.md"), &section)?;
        let doc = root.join("docs/bench.svg");
        std::fs::create_dir_all(root.join("docs"))?;
        std::fs::copy(&svg, &doc)?;
        println!("updated README.md and {}", doc.display());
    }
    Ok(())
}

/// CPU seconds and µs per entry, e.g. "1.23 s = 3.08".
fn fmt_us(cpu: Option<f64>, entries: u64) -> String {
    cpu.map_or("n/a".into(), |s| {
        format!("{s:.2} s = {:.2}", s * 1e6 / entries.max(1) as f64)
    })
}

fn need(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!(
            "{} is missing: build the plugins first (examples/bench.sh does: plugins/build.sh, \
             plugins/python-fraud/build.sh, plugins/js-enrich/build.sh)",
            path.display()
        );
    }
    Ok(())
}

fn workspace_root() -> Result<PathBuf> {
    let mut dir = std::env::current_exe()?;
    while dir.pop() {
        if dir.join("Cargo.toml").exists() && dir.join("host").is_dir() {
            return Ok(dir);
        }
    }
    std::env::current_dir().context("current dir")
}
