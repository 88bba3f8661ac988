//! One pipeline — a stream, a group, a plugin and its settings — as a value:
//! [`Pipeline::start`] wires its tasks under the pipeline's own cancellation
//! token and supervisor and returns a [`Pipeline`];
//! [`Pipeline::drain`] stops it in order within a bounded time. The
//! process holds one per name and replaces them as its configuration
//! changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dead_letters::DlqTarget;
use super::holdings::Holdings;
use super::plugin_log::PluginLog;
use super::port::{PipelineHealth, PipelineView};
use super::prepare::Prepared;
use super::stats::{Stats, StatsSnapshot};
use super::supervise::{Supervisor, Task, TaskEnd};
use super::wiring::{TASK_TIMEOUT, Wiring};
use super::{RunError, hygiene};
use crate::config::RunConfig;
use crate::stream::RedisLink;
use crate::stream::cluster::Router;
/// What a drain may take beyond `--shutdown-grace`: the last flush of an
/// abandoned drain, releasing retries, and consumer clean-up, together.
pub const DRAIN_AFTER_GRACE: Duration = Duration::from_secs(5);
/// Consumer clean-up's share of whatever time is left.
const HYGIENE_BUDGET: Duration = Duration::from_secs(3);

/// What a drained pipeline did.
#[derive(Debug, Clone)]
pub struct PipelineReport {
    /// Final counters.
    pub stats: StatsSnapshot,
    /// Whether in-flight work had to be abandoned at the end of the grace period.
    pub abandoned: bool,
}

/// The tasks of one running pipeline.
#[derive(Debug)]
struct Tasks {
    reader: Task,
    reaper: Task,
    trimmer: Option<Task>,
    watcher: Task,
    progress: Option<Task>,
    committer: Task,
    holder: Task,
    /// The outbox's forwarder (on a cluster) and its stop, given once the
    /// committer is done.
    forwarder: Option<(Task, CancellationToken)>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    config: Arc<RunConfig>,
    /// Cancels this pipeline's tasks (a child of the process's token).
    token: CancellationToken,
    tasks: Tasks,
    /// Ends the sentinel did not report: returned by it when the drain begins.
    sentinel: tokio::task::JoinHandle<Supervisor>,
    stats: Arc<Stats>,
    abandon_flag: Arc<AtomicBool>,
    abandon: CancellationToken,
    dlq: DlqTarget,
    cleanup_link: RedisLink,
    view: PipelineView,
}

/// A task of a pipeline that ended before the pipeline was stopped.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The pipeline.
    pub pipeline: String,
    /// The task and how it ended.
    pub end: TaskEnd,
}

impl Pipeline {
    /// Starts `config`'s tasks under `token`. The first task to end before
    /// `token` is cancelled (or any panic) is sent to `failures`. It joins
    /// `holdings`, the process's view of what its pipelines hold.
    pub fn start(
        config: RunConfig,
        prepared: Prepared,
        token: CancellationToken,
        failures: mpsc::UnboundedSender<Failure>,
        plugin_log: Arc<PluginLog>,
        holdings: &Holdings,
        router: Option<&Arc<Router>>,
    ) -> Result<Self, RunError> {
        let Prepared {
            engine,
            settings,
            plugin,
        } = prepared;
        let mut parts = Wiring::new(config, plugin, token, plugin_log, holdings, router)?;
        let (work_tx, work_rx) = flume::unbounded();
        let (settled_tx, settled_rx) = mpsc::unbounded_channel();
        let dispatcher = parts.dispatcher(work_tx, settled_tx.clone());
        let (committer, holder) = parts.commit_side(settled_rx, dispatcher.downgrade())?;
        let watcher = parts.watcher(engine, settings);
        let workers = parts.workers(work_rx, settled_tx)?;
        let read = parts.read_side(dispatcher);
        let forwarder = parts.forwarder();
        let cleanup_link = parts.link(TASK_TIMEOUT);
        let health = Arc::new(PipelineHealth::default());
        let view = parts.view(health.clone());
        let Wiring {
            config,
            token,
            supervisor,
            stats,
            abandon_flag,
            abandon,
            dlq,
            ..
        } = parts;
        let sentinel = tokio::spawn(sentinel(
            supervisor,
            config.name.clone(),
            token.clone(),
            failures,
            health,
        ));
        Ok(Self {
            config,
            token,
            tasks: Tasks {
                reader: read.reader,
                reaper: read.reaper,
                trimmer: read.trimmer,
                watcher,
                progress: read.progress,
                committer,
                holder,
                forwarder,
                workers,
            },
            sentinel,
            stats,
            abandon_flag,
            abandon,
            dlq,
            cleanup_link,
            view,
        })
    }
}

/// Reports the first task of a pipeline to end before the pipeline is
/// cancelled (ends after are the drain's doing), then hands the supervisor
/// back for the drain to look for panics.
async fn sentinel(
    mut supervisor: Supervisor,
    pipeline: String,
    token: CancellationToken,
    failures: mpsc::UnboundedSender<Failure>,
    health: Arc<PipelineHealth>,
) -> Supervisor {
    let end = tokio::select! {
        biased;
        _ = token.cancelled() => return supervisor,
        end = supervisor.next_end() => end,
    };
    // A task may end on its own once the drain began (a signal that raced
    // this select); before that, or by a panic, it is a failure.
    if !token.is_cancelled() || end.how.starts_with("panicked") {
        health.failed(&end);
        let _ = failures.send(Failure { pipeline, end });
    }
    supervisor
}

impl Pipeline {
    /// What the metrics and health endpoints see of this pipeline.
    pub fn view(&self) -> PipelineView {
        self.view.clone()
    }

    /// Stops the pipeline: reading stops at once, in-flight entries get
    /// `--shutdown-grace` to finish, then whatever is left is abandoned
    /// (it stays pending for the next owner). Takes at most the grace plus
    /// [`DRAIN_AFTER_GRACE`]. `Err` names a task that panicked meanwhile.
    pub async fn drain(self) -> Result<PipelineReport, Failure> {
        let span = tracing::info_span!("pipeline", name = %self.config.name);
        self.drain_in_span().instrument(span).await
    }

    async fn drain_in_span(mut self) -> Result<PipelineReport, Failure> {
        let started = Instant::now();
        let grace_end = started + self.config.shutdown_grace;
        let end = grace_end + DRAIN_AFTER_GRACE;
        let until_end = || left(end);
        self.token.cancel();
        tracing::info!(grace = %humantime::format_duration(self.config.shutdown_grace), "draining: reading stopped, finishing in-flight entries");
        self.tasks.stop_reading(grace_end).await;
        let abandoned = !self.finish_work(grace_end, end).await;
        let hygiene = hygiene::clean_up(
            self.cleanup_link,
            &self.dlq,
            self.config.claim_idle,
            self.config.handover,
            &self.stats,
        );
        if tokio::time::timeout(until_end().min(HYGIENE_BUDGET), hygiene)
            .await
            .is_err()
        {
            tracing::warn!("consumer clean-up cut short by the shutdown deadline");
        }
        let panicked = match self.sentinel.await {
            Ok(mut supervisor) => {
                if !supervisor.all_ended(until_end()).await {
                    tracing::warn!("tasks still running at the shutdown deadline are left behind");
                }
                supervisor.panicked()
            }
            Err(e) => Some(TaskEnd {
                task: "sentinel".into(),
                how: format!("ended abnormally: {e}"),
            }),
        };
        let snapshot = self.stats.snapshot();
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            read = snapshot.read,
            acked = snapshot.acked,
            dead_lettered = snapshot.dead_lettered(),
            retried = snapshot.retried,
            avg_read_batch = snapshot.avg_read_batch(),
            avg_commit_batch = snapshot.avg_commit_batch(),
            abandoned,
            "stopped"
        );
        match panicked {
            Some(end) => Err(Failure {
                pipeline: self.config.name.clone(),
                end,
            }),
            None => Ok(PipelineReport {
                stats: snapshot,
                abandoned,
            }),
        }
    }

    /// Lets the workers finish what was read and the committer flush it
    /// until `grace_end`, then abandons the rest; the holder releases what
    /// waits for a retry. `false` if work was abandoned.
    async fn finish_work(&mut self, grace_end: Instant, end: Instant) -> bool {
        let tasks = &mut self.tasks;
        let finished = tasks.committer.finish_within_quietly(left(grace_end)).await;
        if finished {
            // Workers have all exited once the committer saw its inbox close.
            for w in tasks.workers.drain(..) {
                let _ = w.join();
            }
        } else {
            tracing::warn!(
                "shutdown grace period over: abandoning unfinished entries (they stay pending for the next owner)"
            );
            self.abandon_flag.store(true, Ordering::Relaxed);
            self.abandon.cancel();
            tasks.committer.finish_within(left(end)).await;
        }
        // The committer is gone, so the holder's inbox is closed: it releases
        // what it still holds and ends.
        tasks.holder.finish_within(left(end)).await;
        // Everything committed is in the outbox now: one last pass.
        if let Some((mut forwarder, stop)) = tasks.forwarder.take() {
            stop.cancel();
            forwarder.finish_within(left(end)).await;
        }
        finished
    }
}

impl Tasks {
    /// Stops everything that reads or watches. Reader and reaper hold the
    /// job queue open; once both are gone the workers drain what was read,
    /// then the committer sees its inbox close.
    async fn stop_reading(&mut self, grace_end: Instant) {
        let stoppers = [
            Some(&mut self.reader),
            Some(&mut self.reaper),
            self.trimmer.as_mut(),
            Some(&mut self.watcher),
            self.progress.as_mut(),
        ];
        for task in stoppers.into_iter().flatten() {
            task.finish_within(left(grace_end)).await;
        }
    }
}

/// Time left until `deadline` (zero once past).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
