//! How operator commands print: aligned tables, JSON, compact durations,
//! and progress bars that only a terminal sees.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use comfy_table::{Table, presets};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// A table with a header row and no borders, columns aligned.
pub fn table<H: ToString>(header: &[H], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.iter().map(ToString::to_string).collect::<Vec<_>>());
    for row in rows {
        t.add_row(row);
    }
    // NOTHING pads every cell by one space on both sides: drop the first.
    t.lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(&l).trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Writes `text` to stdout and flushes it, returning the error `println!`
/// would panic on: a reader that went away (`BrokenPipe`: `| head`) is
/// for the caller to take as the end of its output.
pub fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Milliseconds as a short age: `350ms`, `12s`, `3m12s`, `2h05m`, `3d04h`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A duration, as `age` writes it.
pub fn duration(d: Duration) -> String {
    age(d.as_millis() as u64)
}

/// How often a progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Progress over long work: an indicatif bar (count, rate, ETA) when stderr
/// is a terminal; otherwise a plain line every few seconds, so a log shows
/// the work moving without a bar's control characters.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    plain: Option<Plain>,
}

#[derive(Debug)]
struct Plain {
    what: String,
    len: Option<u64>,
    done: AtomicU64,
    started: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    /// Counts `n` more items done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        let Some(p) = &self.plain else { return };
        let done = p.done.fetch_add(n, Ordering::Relaxed) + n;
        let Ok(mut last) = p.last.lock() else { return };
        if last.elapsed() >= PLAIN_EVERY {
            *last = Instant::now();
            let rate = done as f64 / p.started.elapsed().as_secs_f64().max(0.001);
            let of = p.len.map(|l| format!("/{l}")).unwrap_or_default();
            eprintln!("{}: {done}{of} ({rate:.0}/s)", p.what);
        }
    }

    /// Prints `line` on stderr without tearing the bar.
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Runs `f` (which prints) with the bar out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Removes the bar (the command prints its summary next).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Progress over `len` items (a spinner when unknown), described by `what`.
pub fn progress(len: Option<u64>, what: &str) -> Progress {
    if !std::io::stderr().is_terminal() {
        return Progress {
            bar: ProgressBar::hidden(),
            plain: Some(Plain {
                what: what.to_owned(),
                len,
                done: AtomicU64::new(0),
                started: Instant::now(),
                last: Mutex::new(Instant::now()),
            }),
        };
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = match len {
        Some(_) => "{msg} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
        None => "{spinner} {msg} {pos} {per_sec}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    Progress { bar, plain: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_short() {
        assert_eq!(age(350), "350ms");
        assert_eq!(age(12_000), "12s");
        assert_eq!(age(192_000), "3m12s");
        assert_eq!(age(7_500_000), "2h05m");
        assert_eq!(age(273_600_000), "3d04h");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "KIND"],
            vec![
                vec!["1-0".into(), "permanent".into()],
                vec!["10-0".into(), "trimmed".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ID "), "{t}");
        let col = lines[0].find("KIND").unwrap();
        assert_eq!(lines[1].find("permanent"), Some(col), "{t}");
        assert_eq!(lines[2].find("trimmed"), Some(col), "{t}");
    }
}
