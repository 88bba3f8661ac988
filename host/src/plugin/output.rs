//! What a plugin writes — log messages, stdout/stderr lines, failure
//! reasons — bounded before it reaches the host's log or a DLQ record: cut
//! to `--max-message-size`, control characters escaped (so a plugin cannot
//! forge host log lines), and log lines rate-limited per pipeline
//! (`--max-log-rate`), with the number dropped reported.

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::Instant;

/// Cuts `text` to at most `max` bytes (on a character boundary), saying how
/// much was cut.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… [{} bytes cut]",
        &text[..end],
        text.len() - end
    ))
}

/// [`cut`], then every control character written as an escape (`\n`,
/// `\u{1b}`), so one message is one log line that cannot pass for another.
pub fn for_log(text: &str, max: usize) -> Cow<'_, str> {
    let text = cut(text, max);
    if !text.chars().any(char::is_control) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A token bucket for one pipeline's plugin log lines, shared by all its
/// workers and plugin versions.
#[derive(Debug)]
pub struct LogGate {
    rate: f64,
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    tokens: f64,
    last: Instant,
    dropped: u64,
    reported: Option<Instant>,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDecision {
    /// Log it, after reporting `dropped` lines dropped (0: nothing to
    /// report now).
    Log {
        /// Lines dropped to report now.
        dropped: u64,
    },
    /// Drop it; report `Some(n)` lines dropped.
    Drop {
        /// Lines dropped to report now, this one included.
        report: Option<u64>,
    },
}

impl LogGate {
    /// Admits `rate` lines per second on average, bursts of up to `rate`.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            state: Mutex::new(GateState {
                tokens: f64::from(rate),
                last: Instant::now(),
                dropped: 0,
                reported: None,
            }),
        }
    }

    /// The verdict on one more line now.
    pub fn admit(&self) -> LogDecision {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.last).as_secs_f64() * self.rate;
        s.tokens = (s.tokens + refill).min(self.rate.max(1.0));
        s.last = now;
        let admitted = s.tokens >= 1.0;
        if admitted {
            s.tokens -= 1.0;
        } else {
            s.dropped += 1;
        }
        // Drops are reported at most once a second, so a flood is reported
        // while it lasts, and reports never become a flood of their own.
        let due = s.dropped > 0
            && s.reported
                .is_none_or(|at| now.duration_since(at).as_secs() >= 1);
        let report = if due {
            s.reported = Some(now);
            std::mem::take(&mut s.dropped)
        } else {
            0
        };
        match (admitted, report) {
            (true, dropped) => LogDecision::Log { dropped },
            (false, 0) => LogDecision::Drop { report: None },
            (false, n) => LogDecision::Drop { report: Some(n) },
        }
    }

    /// Logs through `log` if the gate admits it, reporting dropped lines.
    pub fn log(&self, plugin: &str, log: impl FnOnce()) {
        let report = |dropped: u64| {
            tracing::warn!(target: "plugin", plugin, dropped, "plugin log lines dropped (over --max-log-rate)");
        };
        match self.admit() {
            LogDecision::Log { dropped } => {
                if dropped > 0 {
                    report(dropped);
                }
                log();
            }
            LogDecision::Drop { report: Some(n) } => report(n),
            LogDecision::Drop { report: None } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_a_char_boundary_and_says_how_much() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("ééé", 3), "é… [4 bytes cut]");
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(
            for_log("ok\n2026 INFO forged\x1b[31m", 100),
            "ok\\n2026 INFO forged\\u{1b}[31m"
        );
        assert!(matches!(for_log("plain", 100), Cow::Borrowed(_)));
    }

    #[test]
    fn the_gate_admits_the_rate_then_counts_what_it_drops() {
        let gate = LogGate::new(5);
        let verdicts: Vec<LogDecision> = (0..20).map(|_| gate.admit()).collect();
        let logged = verdicts
            .iter()
            .filter(|v| matches!(v, LogDecision::Log { .. }))
            .count();
        assert_eq!(logged, 5);
        assert_eq!(
            verdicts[5],
            LogDecision::Drop { report: Some(1) },
            "the first drop is reported at once"
        );
        assert_eq!(verdicts[6], LogDecision::Drop { report: None });
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(
            gate.admit(),
            LogDecision::Log { dropped: 0 },
            "reports at most once a second"
        );
        std::thread::sleep(std::time::Duration::from_millis(800));
        assert_eq!(
            gate.admit(),
            LogDecision::Log { dropped: 14 },
            "a second later, the next line reports the rest"
        );
    }
}
