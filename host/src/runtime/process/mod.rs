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

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::changes::Process;
use super::file_watch::FileWatch;
use super::holdings::Holdings;
use super::pipeline::Failure;
use super::port::{Control, Face, Port};
use super::prepare::{Prepared, prepare};
use super::supervise::{Supervisor, Task, TaskEnd};
use super::{RunError, RunReport};
use crate::config::{Config, RunConfig};

/// How often the config file is stat'ed when notifications are missed.
const CONFIG_POLL: Duration = Duration::from_secs(2);
/// How long the config file must stay unchanged before it is read again:
/// a file written in several steps is applied whole, not half-written.
const CONFIG_SETTLE: Duration = Duration::from_secs(1);
/// How long a face gets to finish answers after the drain.
const FACE_STOP: Duration = Duration::from_secs(1);

/// Why the process stops.
enum Ending {
    /// A signal (or the caller) asked it to.
    Shutdown,
    /// A task of a pipeline ended unexpectedly.
    PipelineFailed(Failure),
    /// The face ended unexpectedly.
    FaceEnded(TaskEnd),
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
    let (mut process, mut inbox) = new_process(&config, shutdown);
    // Served during the (slow) plugin compiles: the endpoints answer (not
    // ready) meanwhile.
    let mut face = face.map(|face| ProcessTasks::serve(face, process.port.clone()));
    if let Err(e) = process.start_all(config.clone()).await {
        // Nothing is left running behind an error.
        process.drain_all().await;
        ProcessTasks::stop(face).await;
        return e.map_or(Ok(process.report), Err);
    }
    let ending = serve(&mut process, &mut inbox, face.as_mut(), &config).await;
    log_ending(&ending);
    process.port.draining();
    process.drain_all().await;
    ProcessTasks::stop(face).await;
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
        Ending::FaceEnded(end) => Err(RunError::ProcessTaskFailed {
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
}

/// A process about to run `config` (nothing started yet), and its inbox.
fn new_process(config: &Config, root: CancellationToken) -> (Process, Inbox) {
    let (failures_tx, failures) = mpsc::unbounded_channel();
    let (controls_tx, controls) = mpsc::unbounded_channel();
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
    };
    changes::declare(&process.port, config);
    (process, Inbox { failures, controls })
}

/// Serves reloads of the config file and a face's controls until a signal,
/// a pipeline's failure or the face's end.
async fn serve(
    process: &mut Process,
    inbox: &mut Inbox,
    mut face: Option<&mut ProcessTasks>,
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
        let face_end = async {
            match face.as_mut() {
                Some(tasks) => tasks.supervisor.next_end().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ending::Shutdown,
            Some(failure) = inbox.failures.recv() => return Ending::PipelineFailed(failure),
            end = face_end => return Ending::FaceEnded(end),
            (trigger, version) = reload => process.reload(trigger, version).await,
            Some(control) = inbox.controls.recv() => process.control(control).await,
        }
    }
}

fn log_ending(ending: &Ending) {
    match ending {
        Ending::PipelineFailed(f) => {
            tracing::error!(pipeline = %f.pipeline, task = %f.end.task, how = %f.end.how,
                "a task ended unexpectedly; draining every pipeline and stopping");
        }
        Ending::FaceEnded(end) => {
            tracing::error!(task = %end.task, how = %end.how,
                "a process task ended unexpectedly; draining every pipeline and stopping");
        }
        Ending::Shutdown => {}
    }
}

/// The process-level task: a face, under a supervisor of its own.
struct ProcessTasks {
    supervisor: Supervisor,
    face: Task,
    stop: CancellationToken,
}

impl ProcessTasks {
    /// Starts `face` serving `port` until [`ProcessTasks::stop`].
    fn serve(face: Box<dyn Face>, port: Arc<Port>) -> Self {
        let name = face.name();
        let supervisor =
            Supervisor::new("process".into(), tracing::info_span!("face", face = name));
        let stop = CancellationToken::new();
        let face = supervisor.spawn(name, face.serve(port, stop.clone()));
        Self {
            supervisor,
            face,
            stop,
        }
    }

    /// Stops the face, last (so `/healthz` says "draining" during the
    /// drain), within [`FACE_STOP`].
    async fn stop(tasks: Option<Self>) {
        if let Some(mut tasks) = tasks {
            tasks.stop.cancel();
            if !tasks.face.finish_within(FACE_STOP).await {
                tracing::warn!("a face did not stop in time and was aborted");
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
