//! A purpose-built misbehaving handler for the host's tests: each event's
//! `action` field says what to do, so one component exercises every limit and
//! outcome as obeyed/violated pairs.
//!
//! Actions: `ok` (default), `permanent`, `retryable`, `trap`, `loop`, `oom`,
//! `alloc` (holds `mb` MiB for the call),
//! `emit`, `emit-then-fail`, `emit-then-trap`, `sleep` (busy-waits `ms`),
//! `print` (stdout + stderr), `log`, `config` (emits the value of config `key`),
//! `count` (emits how many calls this instance has served), `fail-until`
//! (retryable while `delivery-count` < `n`). Emits go to the `emit_to` field's
//! stream (default `misbehave:out`). Any action waits `sleep_ms` first, if given.

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
        let action = event.opt_str("action")?.unwrap_or("ok");
        let reason = event
            .opt_str("reason")?
            .unwrap_or("asked to fail")
            .to_owned();
        let out = event
            .opt_str("emit_to")?
            .unwrap_or("misbehave:out")
            .to_owned();
        let delivery = event.delivery_count.to_string();
        let emit_marker = || {
            streamhost_sdk::emit(
                &out,
                [
                    ("source_id", event.id.as_bytes()),
                    ("delivery", delivery.as_bytes()),
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
            other => Err(Failure::permanent(format!("unknown action {other:?}"))),
        }
    }
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
