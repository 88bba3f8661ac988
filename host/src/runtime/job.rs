//! What travels between the runtime's tasks: a [`Job`] from the dispatcher
//! to a worker, and a [`Settled`] entry from a worker (or the dispatcher,
//! when the host decided) to the committer.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use crate::plugin::LoadedPlugin;
use crate::vocab::entry::Entry;
use crate::vocab::outcome::Outcome;

/// An entry on its way to a worker, holding its slot in the in-flight window.
#[derive(Debug)]
pub struct Job {
    /// The entry; its payload is `Payload::Fields`.
    pub entry: Entry,
    /// Released when the entry is settled.
    pub permit: OwnedSemaphorePermit,
    /// When it was routed to the workers (after a read, a reclaim or a
    /// retry's backoff): its wait for a worker, and with `--order-by` for
    /// the earlier entries of its key, counts from here.
    pub queued: Instant,
}

/// An entry with its decided outcome, on its way to the committer.
#[derive(Debug)]
pub struct Settled {
    /// The entry (payload kept for dead-letter records).
    pub entry: Entry,
    /// What to do with it.
    pub outcome: Outcome,
    /// The plugin version in service when it was decided.
    pub plugin: Arc<LoadedPlugin>,
    /// The window slot: freed once the entry is acked or dead-lettered,
    /// kept through a retry backoff.
    pub permit: Option<OwnedSemaphorePermit>,
}
