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
use crate::outcome::{DeadLetterKind, Outcome};
use crate::plugin::{CallFault, Event, PluginInstance, PluginSlot};
use crate::stream::{GroupRef, Payload};

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
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "a worker cannot start its runtime");
                return;
            }
        };
        let mut generation = self.plugin.generation();
        let mut instance = PluginInstance::new(self.plugin.current());
        // One event reused for every call: stream/group/consumer are set once,
        // id and fields are moved in and back out, so a call copies nothing.
        let mut event = Event {
            stream: self.group.stream.clone(),
            id: String::new(),
            group: self.group.group.clone(),
            consumer: self.group.consumer.clone(),
            fields: Vec::new(),
            delivery_count: 0,
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
            // A hot swap happened: the next call runs on the new version
            // (the call that was running finished on the old one).
            let now = self.plugin.generation();
            if now != generation {
                generation = now;
                instance = PluginInstance::new(self.plugin.current());
            }
            let outcome = match std::mem::replace(&mut entry.payload, Payload::Trimmed) {
                Payload::Fields(fields) => {
                    event.id = std::mem::take(&mut entry.id);
                    event.fields = fields;
                    event.delivery_count = entry.delivery_count;
                    let started = Instant::now();
                    self.stats
                        .wait_times()
                        .record(started.saturating_duration_since(queued));
                    let called = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        crate::fault::panic_once("worker-panic");
                        instance.call_on(&rt, &event)
                    }));
                    self.stats.call_times().record(started.elapsed());
                    match called.as_ref().ok().and(instance.fault()) {
                        Some(CallFault::Trap) => self.stats.trapped(),
                        Some(CallFault::Timeout) => self.stats.timed_out(),
                        None => {}
                    }
                    let outcome = match called {
                        Ok(outcome) => outcome,
                        Err(panic) => {
                            let why = super::supervise::panic_message(&*panic);
                            tracing::error!(entry = %event.id, panic = %why, "the host panicked handling an entry; it will be retried on a fresh instance");
                            instance = PluginInstance::new(self.plugin.current());
                            Outcome::Retry {
                                reason: format!("the host panicked handling this entry: {why}"),
                            }
                        }
                    };
                    if self.fresh_instance {
                        instance.discard();
                    }
                    entry.id = std::mem::take(&mut event.id);
                    entry.payload = Payload::Fields(std::mem::take(&mut event.fields));
                    self.stats.handled(1);
                    outcome
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
                plugin: instance.plugin().clone(),
                permit: Some(permit),
            };
            if self.settled.send(settled).is_err() {
                break;
            }
        }
        if instance.replaced() > 0 {
            tracing::debug!(replaced = instance.replaced(), "worker stopping");
        }
    }
}
