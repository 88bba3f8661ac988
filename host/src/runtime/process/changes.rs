//! The running pipelines and the one path every change of them takes — the
//! start, a reload of the config file, a consumer added or removed from a
//! face: the new configuration is validated, the plugins of what comes are
//! compiled (a change whose plugin does not load changes nothing), then the
//! diff is applied ([`super::super::reload::diff`]): what goes and what
//! changed drain side by side, then what comes and what changed start.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::super::file_watch::{Trigger, Version};
use super::super::holdings::Holdings;
use super::super::leases::{LeaseChange, LeaseSpec};
use super::super::pipeline::{Failure, Pipeline, PipelineReport};
use super::super::port::{Control, ControlError, PartitionedView, Port};
use super::super::prepare::Prepared;
use super::super::reload::{self, Plan};
use super::super::{RunError, RunReport};
use super::{consumers, prepare_all};
use crate::config::{Config, Owned, RunConfig, Source};
use crate::stream::cluster::Router;

/// A pipeline's name and how its drain ended.
type Drained = (String, Result<PipelineReport, Failure>);

/// Why a change was not (wholly) applied.
#[derive(Debug, thiserror::Error)]
enum ChangeError {
    /// The new configuration does not validate.
    #[error("{0}")]
    Invalid(String),
    /// A plugin of what comes did not load: nothing changed.
    #[error("{0}")]
    Refused(RunError),
    /// These pipelines could not start; the rest of the change holds.
    #[error("pipelines {0:?} could not start")]
    NotStarted(Vec<String>),
    /// A shutdown came first.
    #[error("the process is stopping")]
    Stopping,
}

/// How long partitions whose pipelines could not start wait before the
/// next try.
pub(super) const RETRY_LEASED: std::time::Duration = std::time::Duration::from_secs(5);

/// Who asked for a change, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The config file.
    Reload,
    /// A face (the dashboard).
    Face,
    /// The lease keeper took or gave up partitions.
    Leases,
}

/// The running pipelines and what they came from.
pub(super) struct Process {
    pub(super) running: BTreeMap<String, Pipeline>,
    /// Drains under way: a change's, until they end or the shutdown drain
    /// takes them over.
    pub(super) draining: JoinSet<Drained>,
    /// What runs now (a pipeline that could not start is left out, so the
    /// next change sees it as new and tries again).
    pub(super) config: Config,
    pub(super) root: CancellationToken,
    pub(super) failures: mpsc::UnboundedSender<Failure>,
    pub(super) report: RunReport,
    /// What the faces see.
    pub(super) port: Arc<Port>,
    /// What every pipeline holds, by group: reapers skip all of it.
    pub(super) holdings: Holdings,
    /// The partitions whose leases the keeper holds and whose pipelines
    /// run here.
    pub(super) owned: Owned,
    /// The partitions whose leases the keeper holds: `owned`, plus any
    /// whose pipeline could not be started (a plugin that does not load);
    /// those are tried again every [`RETRY_LEASED`] and declared (so
    /// `/readyz` names them) meanwhile.
    pub(super) wanted: Owned,
    /// When to try the partitions of `wanted` not in `owned` again.
    pub(super) retry_at: Option<tokio::time::Instant>,
    /// The lease-assigned pipelines of the configuration in force, for the
    /// keeper; sent once a change is applied (drains included).
    pub(super) lease_specs: watch::Sender<Vec<LeaseSpec>>,
    /// The cluster's slot map, when the connection is to a cluster.
    pub(super) router: Option<Arc<Router>>,
}

impl Process {
    /// Starts every pipeline of `config`, all or nothing: `Err(None)` when a
    /// shutdown came during the compiles (nothing was started).
    pub(super) async fn start_all(&mut self, config: Config) -> Result<(), Option<RunError>> {
        let prepared = tokio::select! {
            biased;
            _ = self.root.cancelled() => {
                tracing::info!("shutdown requested while compiling plugins; nothing was started");
                return Err(None);
            }
            p = prepare_all(config.running(&self.owned).pipelines) => p.map_err(Some)?,
        };
        for (pipeline, prepared) in prepared {
            self.start(pipeline, prepared, "started").map_err(Some)?;
        }
        self.config = config;
        self.publish_leases();
        Ok(())
    }

    /// Runs what the lease keeper now holds of one pipeline, then says so.
    pub(super) async fn leases(&mut self, change: LeaseChange) {
        let LeaseChange {
            pipeline,
            owned,
            applied,
        } = change;
        if owned.is_empty() {
            self.wanted.remove(&pipeline);
        } else {
            self.wanted.insert(pipeline, owned);
        }
        self.run_wanted().await;
        let _ = applied.send(());
    }

    /// Whether some held partition is not running and when to try again.
    pub(super) fn retry_due(&self) -> Option<tokio::time::Instant> {
        self.retry_at.filter(|_| self.wanted != self.owned)
    }

    /// Runs the pipelines of every partition the keeper holds; what cannot
    /// start (its plugin does not load) is left for a later try, while
    /// the partitions given up are drained all the same: the keeper
    /// releases their leases once this returns.
    pub(super) async fn run_wanted(&mut self) {
        self.retry_at = None;
        let config = self.config.clone();
        let wanted = self.wanted.clone();
        let refused = match self.change_to(config.clone(), wanted, Cause::Leases).await {
            Ok(_) | Err(ChangeError::NotStarted(_)) | Err(ChangeError::Stopping) => return,
            Err(e) => e,
        };
        // Keep what runs and is still held; drop what was given up. Only
        // drains: nothing to compile, nothing to refuse.
        let kept: Owned = self
            .owned
            .iter()
            .filter_map(|(pipeline, held)| {
                let still = self.wanted.get(pipeline)?;
                let kept: BTreeMap<_, _> = held
                    .iter()
                    .filter(|(i, f)| still.get(i) == Some(*f))
                    .map(|(i, f)| (*i, f.clone()))
                    .collect();
                (!kept.is_empty()).then(|| (pipeline.clone(), kept))
            })
            .collect();
        let waiting: Vec<String> = self
            .wanted
            .iter()
            .flat_map(|(p, held)| {
                held.keys()
                    .filter(|i| !kept.get(p).is_some_and(|k| k.contains_key(i)))
                    .map(move |i| format!("{p}/{i}"))
            })
            .collect();
        tracing::error!(error = %refused, partitions = %waiting.join(","),
            retry_in = ?RETRY_LEASED,
            "cannot run partitions whose leases this host holds; they wait, and are tried again");
        if let Err(e) = self.change_to(config, kept, Cause::Leases).await
            && !matches!(e, ChangeError::Stopping)
        {
            tracing::error!(error = %e, "could not drain the partitions given up");
        }
        self.retry_at = Some(tokio::time::Instant::now() + RETRY_LEASED);
    }

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
            self.router.as_ref(),
        )?;
        tracing::info!(pipeline = %name, action, "pipeline {action}");
        self.port.started(handle.view());
        self.running.insert(name, handle);
        Ok(())
    }

    /// Reads the config file again (as it settled: `version`) and applies
    /// it; a file that does not parse, validate or compile changes nothing.
    pub(super) async fn reload(&mut self, trigger: Trigger, version: Version) {
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
        match self.change(new, Cause::Reload).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(file = %source.path().display(), "configuration reloaded: no pipeline changed");
            }
            Err(ChangeError::NotStarted(_) | ChangeError::Stopping) => {}
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; the running configuration keeps serving");
            }
        }
    }

    /// Serves a face's request.
    pub(super) async fn control(&mut self, control: Control) {
        match control {
            Control::Add {
                group,
                stream,
                reply,
            } => {
                let _ = reply.send(self.add_consumer(&group, stream.as_deref()).await);
            }
            Control::Remove { name, reply } => {
                let _ = reply.send(self.remove_consumer(&name).await);
            }
        }
    }

    async fn add_consumer(
        &mut self,
        group: &str,
        stream: Option<&str>,
    ) -> Result<String, ControlError> {
        let running = |name: &str| self.running.contains_key(name);
        let template = consumers::template(&self.config, running, group, stream)
            .ok_or_else(|| ControlError::NoSuchGroup(group.to_owned()))?;
        let added = consumers::copy(&self.config, template)
            .await
            .map_err(ControlError::Redis)?;
        let name = added.name.clone();
        // Kept in the configuration so that names stay unique; a reload of
        // the config file removes it (it is not in the file).
        let mut next = self.config.clone();
        next.pipelines.push(added);
        self.change(next, Cause::Face)
            .await
            .map_err(control_error)?;
        Ok(name)
    }

    async fn remove_consumer(&mut self, name: &str) -> Result<(), ControlError> {
        let Some(view) = self.running.get(name).map(Pipeline::view) else {
            return Err(ControlError::NoSuchPipeline(name.to_owned()));
        };
        let peers = self
            .running
            .values()
            .map(Pipeline::view)
            .filter(|v| v.stream == view.stream && v.group == view.group)
            .count();
        if peers < 2 {
            return Err(ControlError::Conflict(format!(
                "{name:?} is the last consumer of group {:?} here; add another first",
                view.group
            )));
        }
        let mut next = self.config.clone();
        next.pipelines.retain(|p| p.name != name);
        self.change(next, Cause::Face)
            .await
            .map(|_| ())
            .map_err(control_error)
    }

    /// The one path of every change: validates `next`, compiles the plugins
    /// of what comes, then drains what goes and starts what comes. `Ok`
    /// says whether any pipeline changed.
    async fn change(&mut self, next: Config, cause: Cause) -> Result<bool, ChangeError> {
        let owned = self.owned.clone();
        self.change_to(next, owned, cause).await
    }

    /// [`Process::change`] to `next` with the partitions of `owned`.
    async fn change_to(
        &mut self,
        mut next: Config,
        owned: Owned,
        cause: Cause,
    ) -> Result<bool, ChangeError> {
        next.validate()
            .map_err(|e| ChangeError::Invalid(e.error.to_string()))?;
        let plan = reload::diff(&self.config.running(&self.owned), &next.running(&owned));
        if plan.is_empty() {
            self.config = next;
            self.owned = owned;
            self.redeclare();
            self.publish_leases();
            return Ok(false);
        }
        let to_start: Vec<RunConfig> = plan
            .added
            .iter()
            .chain(plan.changed.iter().map(|(c, _)| c))
            .cloned()
            .collect();
        let prepared = tokio::select! {
            biased;
            _ = self.root.cancelled() => return Err(ChangeError::Stopping),
            p = prepare_all(to_start) => p.map_err(ChangeError::Refused)?,
        };
        let failed = self.apply(plan, prepared, cause).await?;
        next.pipelines.retain(|p| !failed.contains(&p.name));
        self.config = next;
        self.owned = owned;
        self.redeclare();
        self.publish_leases();
        if failed.is_empty() {
            Ok(true)
        } else {
            Err(ChangeError::NotStarted(failed))
        }
    }

    /// Drains what goes and starts what comes; returns the pipelines that
    /// could not start.
    async fn apply(
        &mut self,
        plan: Plan,
        prepared: Vec<(RunConfig, Prepared)>,
        cause: Cause,
    ) -> Result<Vec<String>, ChangeError> {
        let Plan {
            removed,
            changed,
            unchanged,
            ..
        } = plan;
        log_plan(&removed, &changed, &unchanged, cause);
        let stopping: Vec<String> = removed
            .iter()
            .cloned()
            .chain(changed.iter().map(|(c, _)| c.name.clone()))
            .collect();
        if !self.drain(&stopping).await {
            tracing::info!("shutdown requested during a change: nothing new is started");
            return Err(ChangeError::Stopping);
        }
        let mut failed = Vec::new();
        for (config, prepared) in prepared {
            let action = match (changed.iter().any(|(c, _)| c.name == config.name), cause) {
                (true, _) => "restarted",
                (false, Cause::Face) => "added",
                (false, Cause::Reload | Cause::Leases) => "started",
            };
            let name = config.name.clone();
            if let Err(e) = self.start(config, prepared, action) {
                tracing::error!(pipeline = %name, error = %e, "the pipeline could not start");
                failed.push(name);
            }
        }
        Ok(failed)
    }

    /// Drains the named pipelines side by side, while the process runs:
    /// `false` if a shutdown came first. Their drains then go on, and the
    /// shutdown drain waits for them beside the others' — one bound for the
    /// whole shutdown, not a change's drain and then the shutdown's.
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
                self.report.pipelines.insert(name, report);
            }
            Ok((_, Err(f))) => {
                let _ = self.failures.send(f);
            }
            Err(e) => {
                tracing::error!(error = %e, "a pipeline's drain ended abnormally");
            }
        }
    }

    /// Drains every pipeline, with the drains already under way.
    pub(super) async fn drain_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        self.start_draining(&names);
        while let Some(done) = self.draining.join_next().await {
            self.drained(done);
        }
    }

    /// Tells the port what now runs of the configuration.
    fn redeclare(&self) {
        declare(&self.port, &self.config, &self.wanted);
    }

    /// Tells the lease keeper which pipelines it keeps leases for.
    fn publish_leases(&self) {
        self.lease_specs.send_if_modified(|specs| {
            let now = LeaseSpec::of(&self.config);
            let changed = *specs != now;
            *specs = now;
            changed
        });
    }
}

/// Tells `port` that `config` is what the process runs (or is about to),
/// with the partitions it holds `owned`.
pub(super) fn declare(port: &Port, config: &Config, owned: &Owned) {
    let running = config.running(owned);
    port.declare(
        running.pipelines.iter().map(|p| p.name.clone()).collect(),
        config.pipelines.first().map(|p| p.redis.clone()),
    );
    port.declare_partitioned(
        config
            .pipelines
            .iter()
            .filter_map(|p| {
                Some(PartitionedView {
                    pipeline: p.name.clone(),
                    stream: p.stream.clone(),
                    partitions: p.partitions?.count,
                    group: p.group.clone(),
                    retention: p.retention(),
                })
            })
            .collect(),
    );
}

fn log_plan(
    removed: &[String],
    changed: &[(RunConfig, Vec<String>)],
    unchanged: &[String],
    cause: Cause,
) {
    for name in unchanged {
        tracing::info!(pipeline = %name, action = "unchanged", "pipeline unchanged");
    }
    for (config, keys) in changed {
        tracing::info!(pipeline = %config.name, action = "restarting", changed = %keys.join(","), "pipeline changed: draining it to restart with the new settings");
    }
    for name in removed {
        match cause {
            Cause::Reload => {
                tracing::info!(pipeline = %name, action = "removing", "pipeline removed from the configuration: draining it");
            }
            Cause::Face => {
                tracing::info!(pipeline = %name, action = "removing", "consumer removed from the dashboard: draining it");
            }
            Cause::Leases => {
                tracing::info!(pipeline = %name, action = "removing", "partition no longer held here: draining it");
            }
        }
    }
}

/// A change a face asked for, refused: why, in the face's terms.
fn control_error(e: ChangeError) -> ControlError {
    match e {
        ChangeError::Invalid(why) => ControlError::Conflict(why),
        ChangeError::Stopping => ControlError::Stopping,
        e @ (ChangeError::Refused(_) | ChangeError::NotStarted(_)) => {
            ControlError::Failed(e.to_string())
        }
    }
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
