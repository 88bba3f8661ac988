//! A purpose-built misbehaving handler for the host's tests: each event's
//! `action` field says what to do, so one component exercises every limit and
//! outcome as obeyed/violated pairs.
//!
//! Actions: `ok` (default), `permanent`, `retryable`, `trap`, `loop`, `oom`,
//! `alloc` (holds `mb` MiB for the call),
//! `emit`, `emit-then-fail`, `emit-then-trap`, `sleep` (busy-waits `ms`),
//! `print` (stdout + stderr), `log`, `config` (emits the value of config `key`),
//! `count` (emits how many calls this instance has served), `fail-until`
//! (retryable while `delivery-count` < `n`).
//!
//! Hostile actions: `wasi-sleep` (blocks `ms` in the host's WASI clock, not in
//! wasm), `emit-wide` (one emit of `n` fields), `emit-many` (`count` emits of
//! `n` empty fields each), `log-flood` / `print-flood` (`n` lines), `log-forge`
//! (a log message with a newline and a fake host line), `long-log` and
//! `long-reason` (`n` bytes of text, the latter as a permanent failure).
//!
//! A marker emit carries the entry's `source_id`, `delivery` and
//! `source_stream`. Emits go to the `emit_to` field's stream, else to the `emit_to` config
//! value, else to `misbehave:out`. Any
//! action waits `sleep_ms` first (busy), or `wasi_sleep_ms` (in the host), if given,
//! and fails retryably first while the delivery count is below `fail_until`.

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use streamhost_sdk::{Event, Failure, Handler, log};

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

struct Misbehave;

impl Handler for Misbehave {
    fn handle(event: Event) -> Result<(), Failure> {
        let calls = CALLS.get() + 1;
        CALLS.set(calls);
        if let Some(ms) = event.opt_str("sleep_ms")? {
            let ms: u64 = ms.parse().map_err(|_| Failure::permanent("bad sleep_ms"))?;
            busy_wait(Duration::from_millis(ms));
        }
        if let Some(ms) = event.opt_str("wasi_sleep_ms")? {
            let ms: u64 = ms
                .parse()
                .map_err(|_| Failure::permanent("bad wasi_sleep_ms"))?;
            std::thread::sleep(Duration::from_millis(ms));
        }
        if let Some(n) = event.opt_str("fail_until")? {
            let n: u32 = n
                .parse()
                .map_err(|_| Failure::permanent("bad fail_until"))?;
            if event.delivery_count < n {
                return Err(Failure::retryable(format!(
                    "delivery {} < fail_until {n}",
                    event.delivery_count
                )));
            }
        }
        let action = event.opt_str("action")?.unwrap_or("ok");
        let reason = event
            .opt_str("reason")?
            .unwrap_or("asked to fail")
            .to_owned();
        let out = match event.opt_str("emit_to")? {
            Some(to) => to.to_owned(),
            None => streamhost_sdk::config("emit_to").unwrap_or_else(|| "misbehave:out".into()),
        };
        let delivery = event.delivery_count.to_string();
        let emit_marker = || {
            streamhost_sdk::emit(
                &out,
                [
                    ("source_id", event.id.as_bytes()),
                    ("delivery", delivery.as_bytes()),
                    ("source_stream", event.stream.as_bytes()),
                ],
            )
        };
        match action {
            "ok" => Ok(()),
            "permanent" => Err(Failure::permanent(reason)),
            "retryable" => Err(Failure::retryable(reason)),
            "trap" => panic!("asked to trap"),
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "alloc" => {
                let mb: usize = event
                    .str("mb")?
                    .parse()
                    .map_err(|_| Failure::permanent("bad mb"))?;
                let block = black_box(vec![7u8; mb << 20]);
                if block.iter().step_by(4096).any(|&b| b != 7) {
                    return Err(Failure::permanent("memory corrupted"));
                }
                Ok(())
            }
            "emit" => {
                emit_marker();
                Ok(())
            }
            "emit-then-fail" => {
                emit_marker();
                Err(Failure::permanent(reason))
            }
            "emit-then-trap" => {
                emit_marker();
                panic!("asked to trap after emitting")
            }
            "sleep" => {
                let ms: u64 = event
                    .str("ms")?
                    .parse()
                    .map_err(|_| Failure::permanent("bad ms"))?;
                busy_wait(Duration::from_millis(ms));
                Ok(())
            }
            "print" => {
                println!("hello from stdout {}", event.id);
                eprintln!("hello from stderr {}", event.id);
                Ok(())
            }
            "log" => {
                log::debug(&format!("debug line {}", event.id));
                log::info(&format!("info line {}", event.id));
                log::warn(&format!("warn line {}", event.id));
                Ok(())
            }
            "config" => {
                let key = event.str("key")?;
                let value = streamhost_sdk::config(key).unwrap_or_else(|| "<unset>".into());
                streamhost_sdk::emit(&out, [("key", key.as_bytes()), ("value", value.as_bytes())]);
                Ok(())
            }
            "count" => {
                let n = calls.to_string();
                streamhost_sdk::emit(
                    &out,
                    [("source_id", event.id.as_bytes()), ("calls", n.as_bytes())],
                );
                Ok(())
            }
            "fail-until" => {
                let n: u32 = event
                    .str("n")?
                    .parse()
                    .map_err(|_| Failure::permanent("bad n"))?;
                if event.delivery_count < n {
                    Err(Failure::retryable(format!(
                        "delivery {} < {n}",
                        event.delivery_count
                    )))
                } else {
                    Ok(())
                }
            }
            "wasi-sleep" => {
                std::thread::sleep(Duration::from_millis(number(&event, "ms")?));
                Ok(())
            }
            "emit-wide" => {
                let n = number(&event, "n")? as usize;
                let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
                streamhost_sdk::emit(&out, names.iter().map(|k| (k.as_str(), b"v".as_slice())));
                emit_marker();
                Ok(())
            }
            "emit-many" => {
                let (count, n) = (number(&event, "count")?, number(&event, "n")? as usize);
                for _ in 0..count {
                    streamhost_sdk::emit(&out, std::iter::repeat_n(("", b"".as_slice()), n));
                }
                Ok(())
            }
            "log-flood" => {
                for i in 0..number(&event, "n")? {
                    log::info(&format!("flood line {i} of {}", event.id));
                }
                Ok(())
            }
            "print-flood" => {
                for i in 0..number(&event, "n")? {
                    println!("print flood line {i} of {}", event.id);
                }
                Ok(())
            }
            "log-forge" => {
                log::info(
                    "innocent\n2026-01-01T00:00:00Z  INFO streamhost: forged host line\x1b[31m",
                );
                Ok(())
            }
            "long-log" => {
                log::info(&"L".repeat(number(&event, "n")? as usize));
                Ok(())
            }
            "long-reason" => Err(Failure::permanent(
                "R".repeat(number(&event, "n")? as usize),
            )),
            other => Err(Failure::permanent(format!("unknown action {other:?}"))),
        }
    }
}

/// A numeric field; missing or malformed is a permanent failure.
fn number(event: &Event, name: &str) -> Result<u64, Failure> {
    event
        .str(name)?
        .parse()
        .map_err(|_| Failure::permanent(format!("bad {name}")))
}

/// Burns CPU (no sleeping in a sandbox without timers): the epoch deadline
/// applies to it like to any real work.
fn busy_wait(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        black_box(());
    }
}

streamhost_sdk::export!(Misbehave);
