//! The orders demo's `analytics` consumer: counts events by type and `emit`s
//! the running totals after each event.
//!
//! Totals live in the instance's memory, which the host keeps across calls of
//! one worker; each instance therefore reports the totals it has seen, tagged
//! with an `instance` id so a downstream reader can sum the latest record of
//! every instance. Totals restart when the host replaces an instance (after a
//! trap or a restart).
//!
//! Config: `output` — the stream to emit totals to (default `analytics:totals`).

use std::cell::RefCell;
use std::collections::BTreeMap;

use streamhost_sdk::{Event, Failure, Handler};

#[derive(Default)]
struct Totals {
    instance: String,
    events: u64,
    by_type: BTreeMap<String, u64>,
}

thread_local! {
    static TOTALS: RefCell<Totals> = RefCell::new(Totals::default());
}

struct Analytics;

impl Handler for Analytics {
    fn handle(event: Event) -> Result<(), Failure> {
        let kind = event.str("type")?.to_owned();
        let output = streamhost_sdk::config("output").unwrap_or_else(|| "analytics:totals".into());
        TOTALS.with_borrow_mut(|totals| {
            if totals.instance.is_empty() {
                // The first event this instance sees names it: unique per
                // instance without needing a random source.
                totals.instance = event.id.clone();
            }
            totals.events += 1;
            let count = totals.by_type.entry(kind.clone()).or_default();
            *count += 1;
            let count = count.to_string();
            let events = totals.events.to_string();
            streamhost_sdk::emit(
                &output,
                [
                    ("instance", totals.instance.as_bytes()),
                    ("type", kind.as_bytes()),
                    ("count", count.as_bytes()),
                    ("events", events.as_bytes()),
                    ("source_id", event.id.as_bytes()),
                ],
            );
        });
        Ok(())
    }
}

streamhost_sdk::export!(Analytics);
