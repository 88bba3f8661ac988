//! The benchmark's latency probe: for every event carrying `sent_ns` (the
//! producer's wall clock at XADD, in nanoseconds since the Unix epoch) it
//! emits when the handler was called and how long after the XADD that was.
//!
//! The clock is WASI's wall clock, the same system clock the producer read,
//! so no clock translation is involved. Events without `sent_ns` are acked
//! silently (the probe can sit behind any producer).
//!
//! Config: `output` — stream for the samples (default `bench:latency`).

use std::time::{SystemTime, UNIX_EPOCH};

use streamhost_sdk::{Event, Failure, Handler};

struct Probe;

impl Handler for Probe {
    fn handle(event: Event) -> Result<(), Failure> {
        let called_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let Some(sent) = event.opt_str("sent_ns")? else {
            return Ok(());
        };
        let sent: u64 = sent
            .parse()
            .map_err(|_| Failure::permanent(format!("sent_ns {sent:?} is not a number")))?;
        let output = streamhost_sdk::config("output").unwrap_or_else(|| "bench:latency".into());
        let latency = called_ns.saturating_sub(sent).to_string();
        let called = called_ns.to_string();
        streamhost_sdk::emit(
            &output,
            [
                ("called_ns", called.as_bytes()),
                ("latency_ns", latency.as_bytes()),
            ],
        );
        Ok(())
    }
}

streamhost_sdk::export!(Probe);
