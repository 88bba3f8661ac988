//! Routes each entry read from Redis: to a worker when a plugin can handle it,
//! or straight to the committer when the host has already decided (trimmed,
//! too many deliveries, not representable).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::{UnboundedSender, WeakUnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::controls::Controls;
use super::inflight::{InFlight, LastFailures};
use super::job::{Job, Settled};
use super::ordering::KeyOrder;
use crate::plugin::PluginSlot;
use crate::stream::Cancelled;
use crate::vocab::admission::Admission;
use crate::vocab::entry::Entry;

/// `n` slots of the in-flight `window`, once free; taken before a read, so
/// whatever it returns has room.
pub async fn window_slots(
    window: &Arc<Semaphore>,
    n: usize,
    cancel: &CancellationToken,
) -> Result<OwnedSemaphorePermit, Cancelled> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Cancelled),
        p = window.clone().acquire_many_owned(n as u32) => p.map_err(|_| Cancelled),
    }
}

/// Sends entries to workers or to the committer, and registers every entry
/// it routes as held by this process.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    /// Queue shared by all workers.
    pub work: flume::Sender<Job>,
    /// The committer's inbox.
    pub settled: UnboundedSender<Settled>,
    /// The plugin in service.
    pub plugin: Arc<PluginSlot>,
    /// Pre-plugin limits.
    pub admission: Admission,
    /// Entries this process holds.
    pub inflight: Arc<InFlight>,
    /// Last failure reasons, for max-deliveries records.
    pub failures: Arc<LastFailures>,
    /// Per-key ordering (`--order-by`), if configured.
    pub order: Option<Arc<KeyOrder>>,
    /// The dashboard's "crash next N".
    pub controls: Arc<Controls>,
}

impl Dispatcher {
    /// Routes a batch, one window slot per entry taken from `permits`.
    /// Entries this process already holds are skipped: our own reaper took
    /// back something we are still working on. `false` once shutting down.
    pub fn dispatch(&self, entries: Vec<Entry>, permits: &mut OwnedSemaphorePermit) -> bool {
        let fresh = self.inflight.hold_new(entries);
        for entry in fresh {
            let Some(permit) = permits.split(1) else {
                // Never happens: callers take one slot per entry read.
                self.inflight.drop_all([entry.id.as_str()]);
                continue;
            };
            if self.controls.take_crash() {
                // As a consumer that died after reading: the entry stays
                // pending under our name, and since this process no longer
                // holds it, any reaper (ours included) claims it once idle.
                self.inflight.drop_all([entry.id.as_str()]);
                tracing::info!(entry = %entry.id, deliveries = entry.delivery_count, "crash next N: delivery dropped unacked");
                continue;
            }
            if !self.route(entry, permit) {
                return false;
            }
        }
        true
    }

    /// Routes one entry this process holds, with its window slot: to the
    /// committer if the host decides, else to a worker once its key lets it
    /// run. The holder calls it directly for an entry claimed again for its
    /// retry. `false` once shutting down.
    pub fn route(&self, entry: Entry, permit: OwnedSemaphorePermit) -> bool {
        match self
            .admission
            .verdict(&entry, || self.failures.get(&entry.id))
        {
            Some(outcome) => self
                .settled
                .send(Settled {
                    entry,
                    outcome,
                    plugin: self.plugin.current(),
                    permit: Some(permit),
                })
                .is_ok(),
            None => {
                let job = Job {
                    entry,
                    permit,
                    queued: Instant::now(),
                };
                match &self.order {
                    Some(order) => order
                        .admit(job)
                        .is_none_or(|job| self.work.send(job).is_ok()),
                    None => self.work.send(job).is_ok(),
                }
            }
        }
    }

    /// A handle that does not keep the queues open: the committer and the
    /// holder route through it, and they must not outlive the readers'
    /// senders, or the workers would never see the queue close.
    pub fn downgrade(&self) -> WeakDispatcher {
        WeakDispatcher {
            work: self.work.downgrade(),
            settled: self.settled.downgrade(),
            plugin: self.plugin.clone(),
            admission: self.admission,
            inflight: self.inflight.clone(),
            failures: self.failures.clone(),
            order: self.order.clone(),
            controls: self.controls.clone(),
        }
    }
}

/// A [`Dispatcher`] that lapses once the reader and the reaper are gone.
#[derive(Debug, Clone)]
pub struct WeakDispatcher {
    work: flume::WeakSender<Job>,
    settled: WeakUnboundedSender<Settled>,
    plugin: Arc<PluginSlot>,
    admission: Admission,
    inflight: Arc<InFlight>,
    failures: Arc<LastFailures>,
    order: Option<Arc<KeyOrder>>,
    controls: Arc<Controls>,
}

impl WeakDispatcher {
    /// The dispatcher, unless the pipeline stopped reading.
    pub fn upgrade(&self) -> Option<Dispatcher> {
        Some(Dispatcher {
            work: self.work.upgrade()?,
            settled: self.settled.upgrade()?,
            plugin: self.plugin.clone(),
            admission: self.admission,
            inflight: self.inflight.clone(),
            failures: self.failures.clone(),
            order: self.order.clone(),
            controls: self.controls.clone(),
        })
    }

    /// The entry's ordering key, if entries are ordered and it has one.
    pub fn key_of(&self, entry: &Entry) -> Option<Vec<u8>> {
        self.order.as_ref()?.key_of(entry)
    }

    /// Entry `id`, of `key`, left this host's hands (acked, dead-lettered,
    /// not ours any more): the next waiting entry of its key starts. If the
    /// pipeline stopped reading, that one stays pending for the next owner.
    pub fn finished(&self, id: &str, key: &[u8]) {
        let Some(next) = self.order.as_ref().and_then(|o| o.finished(id, key)) else {
            return;
        };
        match self.work.upgrade() {
            Some(work) => {
                let _ = work.send(next);
            }
            None => self.inflight.drop_all([next.entry.id.as_str()]),
        }
    }
}
