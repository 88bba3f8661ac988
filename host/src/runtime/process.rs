//! The process: every pipeline of the configuration, supervised, under one
//! root token; live reload of the config file (on change or SIGHUP) applied
//! as a diff; and the first task to fail drains everything and ends the run
//! with an error, so a supervisor such as systemd restarts the process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::file_watch::{FileWatch, Trigger, Version};
use super::holdings::Holdings;
use super::pipeline::{Failure, Pipeline, PipelineHandle, PipelineReport};
use super::port::{Control, ControlError, Face, Port};
use super::prepare::{Prepared, prepare};
use super::reload::{self, Plan};
use super::supervise::{Supervisor, Task};
use super::{RunError, RunReport};
use crate::config::{Config, RunConfig, Source};

/// How often the config file is stat'ed when notifications are missed.
const CONFIG_POLL: Duration = Duration::from_secs(2);
/// How long the config file must stay unchanged before it is read again:
/// a file written in several steps is applied whole, not half-written.
const CONFIG_SETTLE: Duration = Duration::from_secs(1);
/// How long a face gets to finish answers after the drain.
const FACE_STOP: Duration = Duration::from_secs(1);

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
    let (failures_tx, mut failures) = mpsc::unbounded_channel();
    let port = Port::new(
        declared(&config),
        config.pipelines.first().map(|p| p.redis.clone()),
    );
    let (controls_tx, mut controls) = mpsc::unbounded_channel();
    port.take_controls(controls_tx);
    let mut process = Process {
        running: BTreeMap::new(),
        draining: JoinSet::new(),
        config: config.clone(),
        root: shutdown.clone(),
        failures: failures_tx,
        report: RunReport::default(),
        port: port.clone(),
        holdings: Holdings::default(),
    };
    port.set_http(config.dashboard.clone());
    // Served during the (slow) plugin compiles: the endpoints answer (not
    // ready) meanwhile.
    let mut face = face.map(|face| ProcessTasks::serve(face, port));
    let prepared = tokio::select! {
        biased;
        _ = shutdown.cancelled() => {
            tracing::info!("shutdown requested while compiling plugins; nothing was started");
            ProcessTasks::stop(face).await;
            return Ok(process.report);
        }
        p = prepare_all(config.pipelines.clone()) => p,
    };
    let started = prepared.and_then(|prepared| {
        prepared
            .into_iter()
            .try_for_each(|(pipeline, prepared)| process.start(pipeline, prepared, "started"))
    });
    if let Err(e) = started {
        // Nothing is left running behind an error.
        process.drain_all().await;
        ProcessTasks::stop(face).await;
        return Err(e);
    }
    let mut reloads = config.source.as_ref().map(|s| {
        FileWatch::new(s.path(), true, CONFIG_POLL, "config file").settle_for(CONFIG_SETTLE)
    });
    let failure = loop {
        let reload = async {
            match reloads.as_mut() {
                Some(w) => {
                    let trigger = w.next().await;
                    (trigger, w.version().clone())
                }
                None => std::future::pending().await,
            }
        };
        let process_task_end = async {
            match face.as_mut() {
                Some(tasks) => tasks.supervisor.next_end().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break None,
            Some(failure) = failures.recv() => break Some(Err(failure)),
            end = process_task_end => break Some(Ok(end)),
            (trigger, version) = reload => process.reload(trigger, version).await,
            Some(control) = controls.recv() => process.control(control).await,
        }
    };
    match &failure {
        Some(Err(f)) => {
            tracing::error!(pipeline = %f.pipeline, task = %f.end.task, how = %f.end.how,
                "a task ended unexpectedly; draining every pipeline and stopping");
        }
        Some(Ok(end)) => {
            tracing::error!(task = %end.task, how = %end.how,
                "a process task ended unexpectedly; draining every pipeline and stopping");
        }
        None => {}
    }
    process.port.draining();
    process.drain_all().await;
    ProcessTasks::stop(face).await;
    // A panic found while draining was sent to the same channel.
    match failure.or_else(|| failures.try_recv().ok().map(Err)) {
        Some(Err(f)) => Err(RunError::TaskFailed {
            pipeline: f.pipeline,
            task: f.end.task,
            how: f.end.how,
        }),
        Some(Ok(end)) => Err(RunError::ProcessTaskFailed {
            task: end.task,
            how: end.how,
        }),
        None => Ok(process.report),
    }
}

/// The names of the pipelines `config` declares.
fn declared(config: &Config) -> Vec<String> {
    config.pipelines.iter().map(|p| p.name.clone()).collect()
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

/// The config file as it settled, or `None` (logged) if it does not load
/// or a new write began while it was read — that one is reported once it
/// settles, so a half-written file is never applied.
fn load_settled(source: &Source, version: &Version) -> Option<Config> {
    let loaded = source.load();
    if Version::of(source.path()) != *version {
        tracing::info!(file = %source.path().display(),
            "the config file changed while it was read; it is read again once it settles");
        return None;
    }
    loaded
        .inspect_err(|e| {
            tracing::error!(error = %e, "configuration reload refused; the running configuration keeps serving");
        })
        .ok()
}

/// A pipeline's name and how its drain ended.
type Drained = (String, Result<PipelineReport, Failure>);

/// The running pipelines and what they came from.
struct Process {
    running: BTreeMap<String, PipelineHandle>,
    /// Drains under way: a reload's or a removal's, until they end or the
    /// shutdown drain takes them over.
    draining: JoinSet<Drained>,
    config: Config,
    root: CancellationToken,
    failures: mpsc::UnboundedSender<Failure>,
    report: RunReport,
    /// What the faces see.
    port: Arc<Port>,
    /// What every pipeline holds, by group: reapers skip all of it.
    holdings: Holdings,
}

impl Process {
    fn start(
        &mut self,
        config: RunConfig,
        prepared: Prepared,
        action: &str,
    ) -> Result<(), RunError> {
        let name = config.name.clone();
        let handle = Pipeline::start(
            config,
            prepared,
            self.root.child_token(),
            self.failures.clone(),
            self.port.plugin_log(),
            &self.holdings,
        )?;
        tracing::info!(pipeline = %name, action, "pipeline {action}");
        self.port.started(handle.view());
        self.running.insert(name, handle);
        Ok(())
    }

    /// Reads the config file again (as it settled: `version`) and applies
    /// what changed; a file that does not parse, validate or compile
    /// changes nothing.
    async fn reload(&mut self, trigger: Trigger, version: Version) {
        let Some(source) = self.config.source.clone() else {
            return;
        };
        if trigger == Trigger::Hangup {
            tracing::info!(file = %source.path().display(), "SIGHUP: reloading the configuration");
        }
        let Some(mut new) = load_settled(&source, &version) else {
            return;
        };
        if new.http != self.config.http {
            tracing::warn!(
                listening = %self.config.http.as_ref().map_or("nowhere".into(), ToString::to_string),
                configured = %new.http.as_ref().map_or("nowhere".into(), ToString::to_string),
                "the http listener is process-level: a reload does not move it; restart the process to listen on the configured address (the rest of [http] is applied now)"
            );
            new.http = self.config.http.clone();
        }
        new.dashboard = self.config.dashboard.reloaded(new.dashboard);
        self.port.set_http(new.dashboard.clone());
        let plan = reload::diff(&self.config, &new);
        if plan.is_empty() {
            tracing::info!(file = %source.path().display(), "configuration reloaded: no pipeline changed");
            self.config = new;
            return;
        }
        let to_start: Vec<RunConfig> = plan
            .added
            .iter()
            .chain(plan.changed.iter().map(|(c, _)| c))
            .cloned()
            .collect();
        let prepared = tokio::select! {
            biased;
            _ = self.root.cancelled() => return,
            p = prepare_all(to_start) => p,
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; the running configuration keeps serving");
                return;
            }
        };
        let failed = self.apply(plan, prepared).await;
        // A pipeline that could not start is left out, so that the next
        // reload sees it as new and tries again.
        new.pipelines.retain(|p| !failed.contains(&p.name));
        self.config = new;
        self.redeclare();
    }

    /// Drains what goes and starts what comes; returns the pipelines that
    /// could not start.
    async fn apply(&mut self, plan: Plan, prepared: Vec<(RunConfig, Prepared)>) -> Vec<String> {
        let Plan {
            removed,
            changed,
            unchanged,
            ..
        } = plan;
        for name in &unchanged {
            tracing::info!(pipeline = %name, action = "unchanged", "pipeline unchanged");
        }
        for (config, keys) in &changed {
            tracing::info!(pipeline = %config.name, action = "restarting", changed = %keys.join(","), "pipeline changed: draining it to restart with the new settings");
        }
        for name in &removed {
            tracing::info!(pipeline = %name, action = "removing", "pipeline removed from the configuration: draining it");
        }
        let stopping: Vec<String> = removed
            .iter()
            .cloned()
            .chain(changed.iter().map(|(c, _)| c.name.clone()))
            .collect();
        if !self.drain(&stopping).await {
            tracing::info!("shutdown requested during the reload: nothing new is started");
            return Vec::new();
        }
        let mut failed = Vec::new();
        for (config, prepared) in prepared {
            let action = if changed.iter().any(|(c, _)| c.name == config.name) {
                "restarted"
            } else {
                "started"
            };
            let name = config.name.clone();
            if let Err(e) = self.start(config, prepared, action) {
                tracing::error!(pipeline = %name, error = %e, "the pipeline could not start");
                failed.push(name);
            }
        }
        failed
    }

    /// Drains the named pipelines side by side, while the process runs:
    /// `false` if a shutdown came first. Their drains then go on, and the
    /// shutdown drain waits for them beside the others' — one bound for the
    /// whole shutdown, not a reload's drain and then the shutdown's.
    async fn drain(&mut self, names: &[String]) -> bool {
        self.start_draining(names);
        loop {
            let done = tokio::select! {
                biased;
                _ = self.root.cancelled() => return false,
                done = self.draining.join_next() => done,
            };
            match done {
                Some(done) => self.drained(done),
                None => return true,
            }
        }
    }

    fn start_draining(&mut self, names: &[String]) {
        for name in names {
            if let Some(handle) = self.running.remove(name) {
                self.port.stopping(name);
                let name = name.clone();
                self.draining
                    .spawn(async move { (name, handle.drain().await) });
            }
        }
    }

    /// Records a finished drain; a panic found meanwhile is reported as a
    /// failure like any other, on the failures channel.
    fn drained(&mut self, done: Result<Drained, tokio::task::JoinError>) {
        match done {
            Ok((name, Ok(report))) => {
                tracing::info!(pipeline = %name, action = "stopped", "pipeline stopped");
                self.record(name, report);
            }
            Ok((_, Err(f))) => {
                let _ = self.failures.send(f);
            }
            Err(e) => {
                tracing::error!(error = %e, "a pipeline's drain ended abnormally");
            }
        }
    }

    /// Adds or removes a consumer as the dashboard asks.
    async fn control(&mut self, control: Control) {
        match control {
            Control::Add {
                like,
                name,
                consumer,
                reply,
            } => {
                let _ = reply.send(self.add_consumer(&like, name, consumer).await);
            }
            Control::Remove { name, reply } => {
                let _ = reply.send(self.remove_consumer(&name).await);
            }
        }
    }

    async fn add_consumer(
        &mut self,
        like: &str,
        name: String,
        consumer: String,
    ) -> Result<(), ControlError> {
        let template = self
            .config
            .pipelines
            .iter()
            .find(|p| p.name == like && self.running.contains_key(&p.name))
            .ok_or_else(|| ControlError::NoSuchPipeline(like.to_owned()))?;
        let mut added = template.clone();
        added.name = name;
        added.consumer = consumer;
        let mut next = self.config.clone();
        next.pipelines.push(added.clone());
        next.validate()
            .map_err(|e| ControlError::Conflict(e.error.to_string()))?;
        let prepared = tokio::select! {
            biased;
            _ = self.root.cancelled() => return Err(ControlError::Stopping),
            p = prepare_all(vec![added.clone()]) => p,
        }
        .map_err(|e| ControlError::Failed(e.to_string()))?;
        for (config, prepared) in prepared {
            self.start(config, prepared, "added")
                .map_err(|e| ControlError::Failed(e.to_string()))?;
        }
        // Kept in the configuration so that names stay unique; a reload of
        // the config file removes it (it is not in the file).
        self.config = next;
        self.redeclare();
        Ok(())
    }

    async fn remove_consumer(&mut self, name: &str) -> Result<(), ControlError> {
        let Some(handle) = self.running.get(name) else {
            return Err(ControlError::NoSuchPipeline(name.to_owned()));
        };
        let view = handle.view();
        let peers = self
            .running
            .values()
            .filter(|h| {
                let v = h.view();
                v.stream == view.stream && v.group == view.group
            })
            .count();
        if peers < 2 {
            return Err(ControlError::Conflict(format!(
                "{name:?} is the last consumer of group {:?} here; add another first",
                view.group
            )));
        }
        tracing::info!(pipeline = %name, action = "removing", "consumer removed from the dashboard: draining it");
        let drained = self.drain(&[name.to_owned()]).await;
        self.config.pipelines.retain(|p| p.name != name);
        self.redeclare();
        if drained {
            Ok(())
        } else {
            Err(ControlError::Stopping)
        }
    }

    /// Tells the board what the configuration now declares.
    fn redeclare(&self) {
        self.port.declare(
            declared(&self.config),
            self.config.pipelines.first().map(|p| p.redis.clone()),
        );
    }

    /// Drains every pipeline, with the drains already under way.
    async fn drain_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        self.start_draining(&names);
        while let Some(done) = self.draining.join_next().await {
            self.drained(done);
        }
    }

    fn record(&mut self, name: String, report: PipelineReport) {
        self.report.pipelines.insert(name, report);
    }
}
