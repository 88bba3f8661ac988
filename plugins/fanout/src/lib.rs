//! Fan-out: forwards every event, with its fields unchanged plus a
//! `source_id`, to each stream named in config `outputs` (comma-separated,
//! default `fanout:out`). The emit-heavy reference case: with five outputs
//! every event costs five appends, all atomic with its ack.

use streamhost_sdk::{Emit, Event, Failure, Handler};

struct Fanout;

impl Handler for Fanout {
    fn handle(event: Event) -> Result<(), Failure> {
        let outputs = streamhost_sdk::config("outputs").unwrap_or_else(|| "fanout:out".into());
        for output in outputs.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            Emit::to(output)
                .fields_of(&event)
                .field("source_id", &event.id)
                .send();
        }
        Ok(())
    }
}

streamhost_sdk::export!(Fanout);
