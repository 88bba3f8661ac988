//! A handler that accepts every event without looking at it: the baseline for
//! measuring the host's own overhead.

use streamhost_sdk::{Event, Failure, Handler};

struct Noop;

impl Handler for Noop {
    fn handle(_event: Event) -> Result<(), Failure> {
        Ok(())
    }
}

streamhost_sdk::export!(Noop);
