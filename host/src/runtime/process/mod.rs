//! The process: every pipeline of the configuration, supervised, under one
//! root token; every change of what runs — a live reload of the config file
//! (on change or SIGHUP), a consumer added or removed from a face — applied
//! through one path as a diff ([`changes`]); a face serving the port beside
//! the pipelines and stopped last; and the first task to fail drains
//! everything and ends the run with an error, so a supervisor such as
//! systemd restarts the process.

mod changes;
mod consumers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::changes::Process;
use super::file_watch::FileWatch;
use super::holdings::Holdings;
use super::leases::{LeaseChange, LeaseKeeper, LeaseSpec};
use super::pipeline::Failure;
use super::port::{Control, Face, Port};
use super::prepare::{Prepared, prepare};
use super::supervise::{Supervisor, Task, TaskEnd};
use super::{RunError, RunReport};
use crate::config::{Config, Owned, RunConfig};
use crate::stream::cluster::Router;

/// How often the config file is stat'ed when notifications are missed.
const CONFIG_POLL: Duration = Duration::from_secs(2);
/// How long the config file must stay unchanged before it is read again:
/// a file written in several steps is applied whole, not half-written.
const CONFIG_SETTLE: Duration = Duration::from_secs(1);
/// How long a face gets to finish answers after the drain.
const FACE_STOP: Duration = Duration::from_secs(1);
/// How long the lease keeper gets to give its leases back after the drain.
const KEEPER_STOP: Duration = Duration::from_secs(5);

/// Why the process stops.
enum Ending {
    /// A signal (or the caller) asked it to.
    Shutdown,
    /// A task of a pipeline ended unexpectedly.
    PipelineFailed(Failure),
    /// A process-level task (the face, the lease keeper) ended unexpectedly.
    ProcessTaskEnded(TaskEnd),
}

/// Runs every pipeline of `config` until `shutdown` fires (or a task fails),
/// then drains them all; `face`, if any, serves the port from the start and
/// stops last. Plugins are compiled before anything connects; a signal
/// during a compile ends the run at once.
pub async fn run(
    config: Config,
    face: Option<Box<dyn Face>>,
    shutdown: CancellationToken,
) -> Result<RunReport, RunError> {
    config.validate()?;
    let redis = &config.pipelines[0].redis;
    let endpoint = redis.endpoint()?;
    let router = (redis.cluster || redis.sentinel.is_some())
        .then(|| Router::new(redis))
        .transpose()?;
    let (mut process, mut inbox, leases) = new_process(&config, shutdown, router.clone());
    let mut tasks = ProcessTasks::new();
    // Served during the (slow) plugin compiles: the endpoints answer (not
    // ready) meanwhile.
    if let Some(face) = face {
        tasks.serve(face, process.port.clone());
    }
    tasks.keep_leases(LeaseKeeper::new(
        Arc::new(endpoint),
        router,
        process.lease_specs.subscribe(),
        leases,
    ));
    if let Err(e) = process.start_all(config.clone()).await {
        // Nothing is left running behind an error.
        process.drain_all().await;
        tasks.stop().await;
        return e.map_or(Ok(process.report), Err);
    }
    let ending = serve(&mut process, &mut inbox, &mut tasks, &config).await;
    log_ending(&ending);
    process.port.draining();
    process.drain_all().await;
    tasks.stop().await;
    // A panic found while draining was sent to the same channel.
    let ending = match ending {
        Ending::Shutdown => inbox
            .failures
            .try_recv()
            .map_or(Ending::Shutdown, Ending::PipelineFailed),
        other => other,
    };
    match ending {
        Ending::Shutdown => Ok(process.report),
        Ending::PipelineFailed(f) => Err(RunError::TaskFailed {
            pipeline: f.pipeline,
            task: f.end.task,
            how: f.end.how,
        }),
        Ending::ProcessTaskEnded(end) => Err(RunError::ProcessTaskFailed {
            task: end.task,
            how: end.how,
        }),
    }
}

/// What reaches the process while it runs, besides signals and reloads.
struct Inbox {
    /// Tasks of pipelines that ended unexpectedly.
    failures: mpsc::UnboundedReceiver<Failure>,
    /// Changes asked for by a face.
    controls: mpsc::UnboundedReceiver<Control>,
    /// What the lease keeper holds.
    leases: mpsc::UnboundedReceiver<LeaseChange>,
}

/// A process about to run `config` (nothing started yet), its inbox, and
/// where the lease keeper tells it what it holds.
fn new_process(
    config: &Config,
    root: CancellationToken,
    router: Option<Arc<Router>>,
) -> (Process, Inbox, mpsc::UnboundedSender<LeaseChange>) {
    let (failures_tx, failures) = mpsc::unbounded_channel();
    let (controls_tx, controls) = mpsc::unbounded_channel();
    let (leases_tx, leases) = mpsc::unbounded_channel();
    let port = Port::new(Vec::new(), None);
    port.take_controls(controls_tx);
    port.set_http(config.dashboard.clone());
    let process = Process {
        running: BTreeMap::new(),
        draining: JoinSet::new(),
        config: Config {
            pipelines: Vec::new(),
            ..config.clone()
        },
        root,
        failures: failures_tx,
        report: RunReport::default(),
        port,
        holdings: Holdings::default(),
        owned: Owned::new(),
        wanted: Owned::new(),
        retry_at: None,
        lease_specs: watch::Sender::new(Vec::<LeaseSpec>::new()),
        router,
    };
    changes::declare(&process.port, config, &process.owned);
    let inbox = Inbox {
        failures,
        controls,
        leases,
    };
    (process, inbox, leases_tx)
}

/// Serves reloads of the config file, a face's controls and the lease
/// keeper's changes until a signal, a pipeline's failure or the end of a
/// process-level task.
async fn serve(
    process: &mut Process,
    inbox: &mut Inbox,
    tasks: &mut ProcessTasks,
    config: &Config,
) -> Ending {
    let mut reloads = config.source.as_ref().map(|s| {
        FileWatch::new(s.path(), true, CONFIG_POLL, "config file").settle_for(CONFIG_SETTLE)
    });
    let shutdown = process.root.clone();
    loop {
        let reload = async {
            match reloads.as_mut() {
                Some(w) => {
                    let trigger = w.next().await;
                    (trigger, w.version().clone())
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ending::Shutdown,
            Some(failure) = inbox.failures.recv() => return Ending::PipelineFailed(failure),
            end = tasks.supervisor.next_end() => return Ending::ProcessTaskEnded(end),
            (trigger, version) = reload => process.reload(trigger, version).await,
            Some(control) = inbox.controls.recv() => process.control(control).await,
            Some(change) = inbox.leases.recv() => process.leases(change).await,
            () = retry(process.retry_due()) => process.run_wanted().await,
        }
    }
}

/// Fires at `at`, never without one.
async fn retry(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn log_ending(ending: &Ending) {
    match ending {
        Ending::PipelineFailed(f) => {
            tracing::error!(pipeline = %f.pipeline, task = %f.end.task, how = %f.end.how,
                "a task ended unexpectedly; draining every pipeline and stopping");
        }
        Ending::ProcessTaskEnded(end) => {
            tracing::error!(task = %end.task, how = %end.how,
                "a process task ended unexpectedly; draining every pipeline and stopping");
        }
        Ending::Shutdown => {}
    }
}

/// The process-level tasks, under a supervisor of their own: the face (if
/// any) and the lease keeper, each with its own stop.
struct ProcessTasks {
    supervisor: Supervisor,
    face: Option<(Task, CancellationToken)>,
    keeper: Option<(Task, CancellationToken)>,
}

impl ProcessTasks {
    fn new() -> Self {
        Self {
            supervisor: Supervisor::new("process".into(), tracing::Span::none()),
            face: None,
            keeper: None,
        }
    }

    /// Starts `face` serving `port` until [`ProcessTasks::stop`].
    fn serve(&mut self, face: Box<dyn Face>, port: Arc<Port>) {
        let name = face.name();
        let stop = CancellationToken::new();
        let serving = face
            .serve(port, stop.clone())
            .instrument(tracing::info_span!("face", face = name));
        let task = self.supervisor.spawn(name, serving);
        self.face = Some((task, stop));
    }

    /// Starts the lease keeper.
    fn keep_leases(&mut self, keeper: LeaseKeeper) {
        let stop = CancellationToken::new();
        let task = self.supervisor.spawn("leases", keeper.run(stop.clone()));
        self.keeper = Some((task, stop));
    }

    /// Stops the lease keeper (it gives its leases back: every pipeline
    /// has drained), then the face, last (so `/healthz` says "draining"
    /// during the drain), each within its bound.
    async fn stop(&mut self) {
        for (slot, limit, what) in [
            (&mut self.keeper, KEEPER_STOP, "the lease keeper"),
            (&mut self.face, FACE_STOP, "a face"),
        ] {
            if let Some((mut task, stop)) = slot.take() {
                stop.cancel();
                if !task.finish_within(limit).await {
                    tracing::warn!("{what} did not stop in time and was aborted");
                }
            }
        }
    }
}

/// Compiles the plugins of `pipelines` off the async runtime, all or
/// nothing; one at a time, because compiling a large component briefly
/// takes hundreds of MiB.
async fn prepare_all(pipelines: Vec<RunConfig>) -> Result<Vec<(RunConfig, Prepared)>, RunError> {
    let mut out = Vec::with_capacity(pipelines.len());
    for p in pipelines {
        let config = p.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(&config))
            .await
            .map_err(|e| RunError::Spawn(std::io::Error::other(e)))??;
        out.push((p, prepared));
    }
    Ok(out)
}
