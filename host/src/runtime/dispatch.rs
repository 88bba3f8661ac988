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
use crate::outcome::{DeadLetterKind, Outcome};
use crate::plugin::PluginSlot;
use crate::stream::{Cancelled, Entry, EntryLimits, Payload};
use crate::units::ByteSize;

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

/// Limits applied before an entry reaches a plugin.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Deliveries after which an entry is dead-lettered without another call.
    pub max_deliveries: u32,
    /// Largest entry handed to a plugin (`--max-entry-size`).
    pub max_entry_size: ByteSize,
    /// Most fields of an entry handed to a plugin (`--max-fields`).
    pub max_fields: usize,
}

impl Admission {
    /// The limits the reader enforces while decoding.
    pub fn entry_limits(&self) -> EntryLimits {
        EntryLimits {
            max_fields: self.max_fields,
            max_bytes: usize::try_from(self.max_entry_size.0).unwrap_or(usize::MAX),
        }
    }
}

impl Admission {
    /// The host's own verdict on an entry, or `None` if a plugin should decide.
    /// `last_failure` is asked only when the delivery limit is exceeded.
    pub fn verdict(
        &self,
        entry: &Entry,
        last_failure: impl FnOnce() -> Option<String>,
    ) -> Option<Outcome> {
        let dead = |kind, reason: String| Some(Outcome::dead_letter(kind, reason));
        match &entry.payload {
            // No payload left: nothing any number of retries could do.
            Payload::Trimmed => dead(
                DeadLetterKind::Trimmed,
                "payload was trimmed from the stream before it could be processed".into(),
            ),
            _ if entry.delivery_count > self.max_deliveries => {
                let tries = entry.delivery_count - 1;
                let times = if tries == 1 { "once" } else { "times" };
                let tries = if tries == 1 {
                    String::new()
                } else {
                    format!("{tries} ")
                };
                let reason = match last_failure() {
                    Some(last) => {
                        format!("delivered {tries}{times} without success; last failure: {last}")
                    }
                    None => format!("delivered {tries}{times} without success"),
                };
                dead(DeadLetterKind::MaxDeliveries, reason)
            }
            Payload::Raw(fields) => {
                let bad = fields
                    .iter()
                    .find(|(k, _)| std::str::from_utf8(k).is_err())
                    .map(|(k, _)| String::from_utf8_lossy(&k[..k.len().min(64)]).into_owned())
                    .unwrap_or_default();
                dead(
                    DeadLetterKind::Invalid,
                    format!("field name {bad:?} is not valid UTF-8"),
                )
            }
            Payload::Withheld { fields, .. } if *fields > self.max_fields => dead(
                DeadLetterKind::Invalid,
                format!(
                    "entry has {fields} fields, over --max-fields {}",
                    self.max_fields
                ),
            ),
            Payload::Withheld { bytes, .. } => dead(
                DeadLetterKind::Invalid,
                format!(
                    "entry is {bytes} bytes (names and values plus 48 per field), over --max-entry-size {}",
                    self.max_entry_size
                ),
            ),
            Payload::Fields(_) => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(payload: Payload, deliveries: u32) -> Entry {
        Entry {
            id: "1-0".into(),
            payload,
            delivery_count: deliveries,
        }
    }

    const ADMIT: Admission = Admission {
        max_deliveries: 3,
        max_entry_size: ByteSize(10),
        max_fields: 2,
    };

    fn kind(o: Option<Outcome>) -> Option<DeadLetterKind> {
        match o {
            Some(Outcome::DeadLetter { kind, .. }) => Some(kind),
            _ => None,
        }
    }

    #[test]
    fn admits_ordinary_entries() {
        let e = entry(Payload::Fields(vec![("a".into(), b"1".to_vec())]), 3);
        assert_eq!(ADMIT.verdict(&e, || None), None);
    }

    #[test]
    fn dead_letters_what_no_plugin_should_see() {
        let big = entry(
            Payload::Withheld {
                fields: 1,
                bytes: 99,
            },
            1,
        );
        match ADMIT.verdict(&big, || None) {
            Some(Outcome::DeadLetter { kind, reason }) => {
                assert_eq!(kind, DeadLetterKind::Invalid);
                assert!(
                    reason.contains("99 bytes") && reason.contains("--max-entry-size 10B"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let wide = entry(
            Payload::Withheld {
                fields: 3,
                bytes: 9,
            },
            1,
        );
        match ADMIT.verdict(&wide, || None) {
            Some(Outcome::DeadLetter { reason, .. }) => {
                assert_eq!(reason, "entry has 3 fields, over --max-fields 2");
            }
            other => panic!("{other:?}"),
        }
        let raw = entry(Payload::Raw(vec![(vec![0xff], vec![])]), 1);
        assert_eq!(
            kind(ADMIT.verdict(&raw, || None)),
            Some(DeadLetterKind::Invalid)
        );
        assert_eq!(
            kind(ADMIT.verdict(&entry(Payload::Trimmed, 1), || None)),
            Some(DeadLetterKind::Trimmed)
        );
        let tired = entry(Payload::Fields(vec![]), 4);
        match ADMIT.verdict(&tired, || None) {
            Some(Outcome::DeadLetter { kind, reason }) => {
                assert_eq!(kind, DeadLetterKind::MaxDeliveries);
                assert_eq!(reason, "delivered 3 times without success");
            }
            other => panic!("{other:?}"),
        }
        match ADMIT.verdict(&tired, || Some("card declined".into())) {
            Some(Outcome::DeadLetter { reason, .. }) => {
                assert_eq!(
                    reason,
                    "delivered 3 times without success; last failure: card declined"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
