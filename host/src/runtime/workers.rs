//! Worker threads: each owns one warm plugin instance and turns jobs into
//! settled outcomes. Plain OS threads, because handler calls are CPU work
//! that must not stall the async runtime; each drives its calls on a small
//! runtime of its own, so a call blocked in a host function can be cut off
//! at its deadline. A panic of the host while handling an entry costs that
//! entry a retry and the worker a fresh instance, nothing more.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::job::{Job, Settled};
use super::stats::Stats;
use super::supervise::Supervisor;
use crate::plugin::{CallFault, Event, PluginInstance, PluginSlot};
use crate::stream::GroupRef;
use crate::vocab::entry::Payload;
use crate::vocab::outcome::{DeadLetterKind, Outcome};

/// What every worker needs; cloned into each thread.
#[derive(Debug, Clone)]
pub struct WorkerSet {
    /// The plugin version in service (replaced by hot swaps).
    pub plugin: Arc<PluginSlot>,
    /// Shared job queue.
    pub jobs: flume::Receiver<Job>,
    /// The committer's inbox.
    pub settled: UnboundedSender<Settled>,
    /// Set when the shutdown grace period is over: remaining jobs are dropped
    /// unhandled (they stay pending in Redis for the next owner).
    pub abandon: Arc<AtomicBool>,
    /// Names copied into every event.
    pub group: GroupRef,
    /// Run counters.
    pub stats: Arc<Stats>,
    /// Discard the instance after every call (`--fresh-instance`).
    pub fresh_instance: bool,
}

impl WorkerSet {
    /// Starts `n` worker threads under `supervisor`; they exit when the job
    /// queue closes.
    pub fn spawn(
        self,
        n: usize,
        supervisor: &Supervisor,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        (0..n)
            .map(|i| {
                let set = self.clone();
                supervisor.thread(format!("worker-{i}"), move || set.work())
            })
            .collect()
    }

    fn work(self) {
        let Some(mut worker) = Worker::start(&self) else {
            return;
        };
        while let Ok(Job {
            mut entry,
            permit,
            queued,
        }) = self.jobs.recv()
        {
            if self.abandon.load(Ordering::Relaxed) {
                continue;
            }
            worker.follow_swaps(&self.plugin);
            let outcome = match std::mem::replace(&mut entry.payload, Payload::Trimmed) {
                Payload::Fields(fields) => {
                    self.stats
                        .wait_times()
                        .record(Instant::now().saturating_duration_since(queued));
                    worker.handle(&self, &mut entry, fields)
                }
                // The dispatcher only queues entries with fields; anything
                // else is a host bug, dead-lettered rather than lost.
                other => {
                    entry.payload = other;
                    Outcome::dead_letter(
                        DeadLetterKind::Invalid,
                        "entry reached a worker without fields",
                    )
                }
            };
            let settled = Settled {
                entry,
                outcome,
                plugin: worker.instance.plugin().clone(),
                permit: Some(permit),
            };
            if self.settled.send(settled).is_err() {
                break;
            }
        }
        if worker.instance.replaced() > 0 {
            tracing::debug!(replaced = worker.instance.replaced(), "worker stopping");
        }
    }
}

/// One worker thread's state: its runtime, its warm instance and the event
/// it reuses for every call.
struct Worker {
    rt: tokio::runtime::Runtime,
    generation: u64,
    instance: PluginInstance,
    /// Reused for every call: stream/group/consumer are set once, id and
    /// fields are moved in and back out, so a call copies nothing.
    event: Event,
}

impl Worker {
    /// `None` (logged) when the thread cannot have a runtime.
    fn start(set: &WorkerSet) -> Option<Self> {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "a worker cannot start its runtime");
                return None;
            }
        };
        Some(Self {
            rt,
            generation: set.plugin.generation(),
            instance: PluginInstance::new(set.plugin.current()),
            event: Event {
                stream: set.group.stream.clone(),
                id: String::new(),
                group: set.group.group.clone(),
                consumer: set.group.consumer.clone(),
                fields: Vec::new(),
                delivery_count: 0,
            },
        })
    }

    /// After a hot swap the next call runs on the new version (the call
    /// that was running finished on the old one).
    fn follow_swaps(&mut self, plugin: &PluginSlot) {
        let now = plugin.generation();
        if now != self.generation {
            self.generation = now;
            self.instance = PluginInstance::new(plugin.current());
        }
    }

    /// Calls the handler on `entry`, whose payload `fields` was taken out:
    /// the call borrows the id and fields, which go back into the entry.
    fn handle(
        &mut self,
        set: &WorkerSet,
        entry: &mut crate::vocab::entry::Entry,
        fields: Vec<(String, Vec<u8>)>,
    ) -> Outcome {
        self.event.id = std::mem::take(&mut entry.id);
        self.event.fields = fields;
        self.event.delivery_count = entry.delivery_count;
        let started = Instant::now();
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
            crate::fault::panic_once("worker-panic");
            self.instance.call_on(&self.rt, &self.event)
        }));
        set.stats.call_times().record(started.elapsed());
        match called.as_ref().ok().and(self.instance.fault()) {
            Some(CallFault::Trap) => set.stats.trapped(),
            Some(CallFault::Timeout) => set.stats.timed_out(),
            None => {}
        }
        let outcome = called.unwrap_or_else(|panic| {
            let why = super::supervise::panic_message(&*panic);
            tracing::error!(entry = %self.event.id, panic = %why, "the host panicked handling an entry; it will be retried on a fresh instance");
            self.instance = PluginInstance::new(set.plugin.current());
            Outcome::Retry {
                reason: format!("the host panicked handling this entry: {why}"),
            }
        });
        if set.fresh_instance {
            self.instance.discard();
        }
        entry.id = std::mem::take(&mut self.event.id);
        entry.payload = Payload::Fields(std::mem::take(&mut self.event.fields));
        set.stats.handled(1);
        outcome
    }
}
