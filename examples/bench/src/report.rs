//! Results: the JSON file, an SVG chart, and the Markdown section that is
//! pasted into the README between its benchmark markers.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::latency::LatencyStats;
use crate::swap::SwapStats;
use crate::throughput::Measurement;

/// Everything one benchmark run produced.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Pre-filled entries per throughput run (slow variants use fewer).
    pub entries: usize,
    /// Interleaved rounds of the throughput runs.
    pub rounds: usize,
    /// Throughput scenarios, the native baseline first.
    pub throughput: Vec<Scenario>,
    /// Latency at fixed rates.
    pub latency: Vec<LatencyRow>,
    /// Hot-swap pause.
    pub swap: Option<SwapStats>,
}

/// The machine and software measured.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Memory in GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// redis-server version.
    pub redis: String,
    /// UTC date of the run.
    pub date: String,
    /// One-minute load average when the run started: other work on the
    /// machine skews every figure, the ratios less than the rates.
    pub load: f64,
}

impl Machine {
    /// Reads the machine description from /proc and `uname`.
    pub fn describe(redis: &str) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_gib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1048576.0);
        let run = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib,
            kernel: run("uname", &["-sr"]),
            redis: redis.to_owned(),
            date: run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            load: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .unwrap_or(f64::NAN),
        }
    }
}

/// One throughput scenario over all rounds.
#[derive(Debug, Serialize)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it runs.
    pub what: String,
    /// One measurement per round.
    pub runs: Vec<Measurement>,
    /// Rate divided by the native loop's rate of the same round.
    pub ratios: Vec<f64>,
}

impl Scenario {
    /// Median entries/s.
    pub fn rate(&self) -> f64 {
        median(self.runs.iter().map(|m| m.rate))
    }
    /// Median ratio to the native loop.
    pub fn ratio(&self) -> f64 {
        median(self.ratios.iter().copied())
    }
    /// Median consumer CPU per entry, µs.
    pub fn consumer_us(&self) -> Option<f64> {
        per_entry(&self.runs, |m| m.consumer_cpu_s)
    }
    /// Median redis-server CPU per entry, µs.
    pub fn redis_us(&self) -> Option<f64> {
        per_entry(&self.runs, |m| m.redis_cpu_s)
    }
    /// Largest peak RSS over the rounds, MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        self.runs
            .iter()
            .filter_map(|m| m.peak_rss_mib)
            .reduce(f64::max)
    }
}

fn per_entry(runs: &[Measurement], cpu: impl Fn(&Measurement) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = runs
        .iter()
        .map(|m| cpu(m).map(|s| s * 1e6 / m.entries.max(1) as f64))
        .collect::<Option<_>>()?;
    (!v.is_empty()).then(|| median(v.into_iter()))
}

/// Median of a non-empty set (NaN for an empty one).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Latency of one consumer at one rate.
#[derive(Debug, Serialize)]
pub struct LatencyRow {
    /// "native loop" or "host + probe".
    pub consumer: String,
    /// Percentiles.
    pub stats: LatencyStats,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// The README section.
    pub fn markdown(&self, command: &str) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Measured {} on {} ({} cores, {:.0} GiB, load average {:.2} at the start), {}, \
             redis-server {} (private, no persistence), with `{command}`. Throughput: {} entries pre-filled (5 fields, ~100 bytes each), every \
             scenario reads them all on a fresh consumer group; {} interleaved round(s), medians shown, \
             ratio = rate / native rate of the same round (min–max over rounds in brackets). CPU is \
             user+system time over the timed window per entry handled.\n",
            m.date,
            m.cpu,
            m.cores,
            m.memory_gib,
            m.load,
            m.kernel,
            m.redis,
            self.entries,
            self.rounds
        );
        let _ = writeln!(
            s,
            "| scenario | entries/s | × native | consumer CPU µs/entry | redis CPU µs/entry | peak RSS MiB |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
        for sc in &self.throughput {
            let (lo, hi) = sc
                .ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &r| (a.min(r), b.max(r)));
            let _ = writeln!(
                s,
                "| {} — {} | {} | {:.2} [{:.2}–{:.2}] | {} | {} | {} |",
                sc.name,
                sc.what,
                thousands(sc.rate()),
                sc.ratio(),
                lo,
                hi,
                opt(sc.consumer_us(), 2),
                opt(sc.redis_us(), 2),
                opt(sc.rss_mib(), 0)
            );
        }
        if let Some((med, lo, hi)) = self.relative("noop-ordered", "noop") {
            let _ = writeln!(
                s,
                "\nPer-key ordering (`--order-by`, 1,000 keys) against the unordered no-op run of \
                 the same round: {med:.2}× [{lo:.2}–{hi:.2}]."
            );
        }
        let emitting: Vec<String> = [("analytics", "native-emit"), ("emit-x5", "native-emit-x5")]
            .into_iter()
            .filter_map(|(host, native)| {
                let (med, lo, hi) = self.relative(host, native)?;
                Some(format!("{host} ÷ {native} {med:.2}× [{lo:.2}–{hi:.2}]"))
            })
            .collect();
        if !emitting.is_empty() {
            let _ = writeln!(
                s,
                "\nHandlers that emit, against the native loop making the same appends in the \
                 same round (atomic with its ack by MULTI/EXEC, but not fenced against a peer \
                 that took the entry, and with no OOM or wrong-type checks): {}.",
                emitting.join(", ")
            );
        }
        if !self.latency.is_empty() {
            let _ = writeln!(
                s,
                "\nEnd-to-end latency, XADD → handler call, at fixed arrival rates (a producer \
                 thread XADDs every millisecond; the first second is warm-up). The native loop's \
                 handler call is the moment it has decoded the entry; `native loop + pool` hands \
                 each decoded entry through one queue to a pool of {} threads (the host's default \
                 `--concurrency`) and is timed when a thread has it. Idle CPU: the consumer's \
                 process, waiting on the empty stream for 3 s before the producer starts, in % of \
                 one core (the native loops' process is the benchmark runner, doing nothing else \
                 meanwhile):\n",
                self.machine.cores
            );
            let _ = writeln!(
                s,
                "| rate/s | consumer | samples | p50 µs | p99 µs | p99.9 µs | max µs | idle CPU % |"
            );
            let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|");
            for row in &self.latency {
                let l = &row.stats;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                    l.rate,
                    row.consumer,
                    l.samples,
                    l.p50_us,
                    l.p99_us,
                    l.p999_us,
                    l.max_us,
                    opt(l.idle_cpu_percent, 2)
                );
            }
        }
        if let Some(sw) = &self.swap {
            let _ = writeln!(
                s,
                "\nHot swap: {} swaps ({} applied) of the probe plugin, each a new build (so each \
                 one compiles), under {}/s: longest pause between handler calls {:.1} ms (median \
                 {:.1} ms) vs longest gap {:.1} ms in steady state; latency over the run p50 {:.0} µs, \
                 p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs.",
                sw.swaps,
                sw.swaps_applied,
                sw.rate,
                sw.max_pause_ms(),
                median(sw.pause_ms.iter().copied()),
                sw.max_steady_gap_ms(),
                sw.latency.p50_us,
                sw.latency.p99_us,
                sw.latency.p999_us,
                sw.latency.max_us
            );
        }
        s
    }

    /// Median, min and max over the rounds of `name`'s rate divided by
    /// `base`'s rate of the same round, when both ran.
    fn relative(&self, name: &str, base: &str) -> Option<(f64, f64, f64)> {
        let find = |n: &str| self.throughput.iter().find(|sc| sc.name == n);
        let (a, b) = (find(name)?, find(base)?);
        let ratios: Vec<f64> = a
            .runs
            .iter()
            .zip(&b.runs)
            .map(|(x, y)| x.rate / y.rate)
            .collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &r| (l.min(r), h.max(r)));
        (!ratios.is_empty()).then(|| (median(ratios.into_iter()), lo, hi))
    }

    /// A two-panel SVG chart: throughput and latency.
    pub fn svg(&self) -> String {
        let width = 900.0;
        let bar_h = 22.0;
        let left = 300.0;
        let plot_w = width - left - 140.0;
        let n = self.throughput.len() as f64;
        let top1 = 50.0;
        let h1 = n * (bar_h + 8.0);
        let lat_rows = self.latency.len() as f64;
        let top2 = top1 + h1 + 80.0;
        let h2 = lat_rows * (bar_h + 8.0);
        let height = top2 + h2 + 40.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="13">"#
        );
        let _ = writeln!(
            s,
            r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="25" font-size="16" font-weight="bold">Throughput (entries/s, median of {} rounds) — {} on {} cores, redis {}</text>"#,
            self.rounds,
            xml(&self.machine.date),
            self.machine.cores,
            xml(&self.machine.redis)
        );
        let max_rate = self
            .throughput
            .iter()
            .map(Scenario::rate)
            .fold(1.0, f64::max);
        let native = self.throughput.first().map_or(1.0, Scenario::rate);
        for (i, sc) in self.throughput.iter().enumerate() {
            let y = top1 + i as f64 * (bar_h + 8.0);
            let w = plot_w * sc.rate() / max_rate;
            let baseline = is_baseline(&sc.name);
            let color = if baseline { "#6b7280" } else { "#2563eb" };
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{left}" y="{y}" width="{w:.1}" height="{bar_h}" fill="{color}"/><text x="{:.1}" y="{}">{}  ({:.2}×)</text>"#,
                left - 8.0,
                y + 16.0,
                xml(&sc.name),
                left + w + 6.0,
                y + 16.0,
                thousands(sc.rate()),
                sc.ratio()
            );
        }
        let target = left + plot_w * 0.85 * native / max_rate;
        let _ = writeln!(
            s,
            r##"<line x1="{target:.1}" y1="{}" x2="{target:.1}" y2="{}" stroke="#dc2626" stroke-dasharray="4 3"/><text x="{target:.1}" y="{}" fill="#dc2626" text-anchor="middle">0.85× native</text>"##,
            top1 - 6.0,
            top1 + h1,
            top1 + h1 + 16.0
        );
        if !self.latency.is_empty() {
            let _ = writeln!(
                s,
                r##"<text x="10" y="{}" font-size="16" font-weight="bold">Latency XADD → handler call (µs, log scale): <tspan fill="#1d4ed8">■ p50</tspan> <tspan fill="#60a5fa">■ p99</tspan> <tspan fill="#bfdbfe">■ p99.9</tspan></text>"##,
                top2 - 20.0
            );
            let max = self
                .latency
                .iter()
                .map(|r| r.stats.p999_us)
                .fold(10.0, f64::max);
            let scale = |us: f64| plot_w * (us.max(1.0).log10() / max.log10());
            for (i, row) in self.latency.iter().enumerate() {
                let y = top2 + i as f64 * (bar_h + 8.0);
                let l = &row.stats;
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{}" text-anchor="end">{} @ {}/s</text>"#,
                    left - 8.0,
                    y + 16.0,
                    xml(&row.consumer),
                    l.rate
                );
                for (v, color) in [
                    (l.p999_us, "#bfdbfe"),
                    (l.p99_us, "#60a5fa"),
                    (l.p50_us, "#1d4ed8"),
                ] {
                    let _ = writeln!(
                        s,
                        r#"<rect x="{left}" y="{y}" width="{:.1}" height="{bar_h}" fill="{color}"/>"#,
                        scale(v)
                    );
                }
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{}">{:.0} / {:.0} / {:.0}</text>"#,
                    left + scale(l.p999_us) + 6.0,
                    y + 16.0,
                    l.p50_us,
                    l.p99_us,
                    l.p999_us
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

/// The hand-written loops the host is measured against.
fn is_baseline(name: &str) -> bool {
    name.starts_with("native") || name.starts_with("guide")
}

/// 213295.4 -> "213,295".
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Markers around the generated section in the README.
pub const BEGIN: &str = "<!-- bench:begin (generated by examples/bench.sh; do not edit) -->";
/// End marker.
pub const END: &str = "<!-- bench:end -->";

/// Replaces the text between the markers in `readme`.
pub fn update_readme(readme: &Path, section: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!(
            "{} has no benchmark markers ({BEGIN} … {END})",
            readme.display()
        );
    };
    let mut out = String::with_capacity(text.len() + section.len());
    out.push_str(&text[..b + BEGIN.len()]);
    out.push('\n');
    out.push_str(section.trim_end());
    out.push('\n');
    out.push_str(&text[e..]);
    std::fs::write(readme, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(213295.4), "213,295");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }

    #[test]
    fn median_of_even_and_odd_sets() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
    }

    fn scenario(name: &str, rates: &[f64]) -> Scenario {
        Scenario {
            name: name.into(),
            what: String::new(),
            runs: rates
                .iter()
                .map(|&rate| Measurement {
                    entries: 1000,
                    seconds: 1000.0 / rate,
                    rate,
                    consumer_cpu_s: None,
                    redis_cpu_s: None,
                    peak_rss_mib: None,
                })
                .collect(),
            ratios: Vec::new(),
        }
    }

    #[test]
    fn emitting_scenarios_are_also_compared_with_the_native_loop_that_emits() {
        let report = Report {
            machine: Machine::describe("7.0.15"),
            entries: 1000,
            rounds: 2,
            throughput: vec![
                scenario("native", &[200.0, 100.0]),
                scenario("native-emit", &[100.0, 80.0]),
                scenario("analytics", &[50.0, 56.0]),
            ],
            latency: Vec::new(),
            swap: None,
        };
        let md = report.markdown("examples/bench.sh");
        // Per round 0.50 and 0.70: median 0.60; emit-x5 did not run, so it
        // is not mentioned.
        assert!(
            md.contains("analytics ÷ native-emit 0.60× [0.50–0.70]."),
            "{md}"
        );
        assert!(!md.contains("emit-x5"), "{md}");
        assert!(is_baseline("native-emit-x5") && !is_baseline("noop"));
    }

    #[test]
    fn the_chart_holds_only_svg() {
        let report = Report {
            machine: Machine::describe("7.0.15"),
            entries: 1000,
            rounds: 1,
            throughput: vec![
                scenario("native", &[200.0]),
                scenario("noop", &[200.0]),
                scenario("noop-ordered", &[190.0]),
                scenario("native-emit", &[100.0]),
                scenario("analytics", &[90.0]),
            ],
            latency: Vec::new(),
            swap: None,
        };
        let svg = report.svg();
        // Every line is an element; the README's sentences belong in the
        // Markdown section only.
        for line in svg.lines().filter(|l| !l.trim().is_empty()) {
            assert!(line.trim_start().starts_with('<'), "stray text: {line}");
        }
    }

    #[test]
    fn readme_section_is_replaced_between_markers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("README.md");
        std::fs::write(&path, format!("a\n{BEGIN}\nold\n{END}\nb\n")).unwrap();
        update_readme(&path, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("a\n{BEGIN}\nnew\n{END}\nb\n")
        );
    }
}
