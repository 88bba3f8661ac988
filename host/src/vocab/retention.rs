//! The retention policy: keep about `maxlen` entries, drop those older than
//! `max_age` — never past what a group still needs (`stream::retention`
//! enforces it; configuration, status and the dashboard speak of it).

use std::time::Duration;

/// The retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep about this many entries.
    pub maxlen: Option<u64>,
    /// Drop entries older than this.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// The policy that `maxlen` and `max_age` set, if either is given.
    pub fn of(maxlen: Option<u64>, max_age: Option<Duration>) -> Option<Self> {
        (maxlen.is_some() || max_age.is_some()).then_some(Self { maxlen, max_age })
    }
}
