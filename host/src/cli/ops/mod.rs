//! The operator commands (`status`, `produce`, `dlq`, `trim`, `groups`,
//! `replay`): their flags,
//! where their connection and stream come from (flags or a config file), and
//! their drivers, which print what [`crate::ops`] computes. Errors are
//! `anyhow` here, at the edge; an [`OpsError`] inside one picks the exit
//! status.

mod dlq;
mod groups;
mod output;
mod produce;
mod replay;
mod status;
mod trim;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};

pub use self::dlq::{DlqCommand, FilterArgs};
pub use self::groups::GroupsCommand;
pub use self::produce::ProduceArgs;
pub use self::replay::ReplayArgs;
pub use self::status::StatusArgs;
pub use self::trim::TrimArgs;
use super::RedisArgs;
use crate::config::{RedisConfig, RunConfig};
use crate::ops::{self, OpsError};
use crate::vocab::partition;
use crate::vocab::retention::Retention;

/// One operator command.
#[derive(Debug)]
pub enum Ops {
    /// `host status`.
    Status(Box<StatusArgs>),
    /// `host produce`.
    Produce(Box<ProduceArgs>),
    /// `host dlq …`.
    Dlq(DlqCommand),
    /// `host trim`.
    Trim(Box<TrimArgs>),
    /// `host groups …`.
    Groups(GroupsCommand),
    /// `host replay`.
    Replay(Box<ReplayArgs>),
}

/// Where to connect: the `--redis*` flags, or a config file's `[redis]`.
#[derive(Debug, Clone, Args)]
pub struct Connect {
    /// The connection flags.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Take the connection (the file's [redis] table) and the stream, dead-letter stream and
    /// retention from this config file (the one of `host run --config`). --redis* flags cannot
    /// be combined with it.
    #[arg(long, value_name = "FILE", help_heading = "Redis connection")]
    pub config: Option<PathBuf>,
    /// With --config: the pipeline of this name (its `name`, else its group) [default: the
    /// only one; `status`: every one].
    #[arg(
        long,
        value_name = "NAME",
        requires = "config",
        help_heading = "Redis connection"
    )]
    pub pipeline: Option<String>,
    /// The first `--redis*` flag typed on the command line (filled in by the parser).
    #[arg(skip)]
    pub typed_redis_flag: Option<String>,
}

/// The stream a command works on and its dead-letter stream.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Stream key [default with --config: the pipeline's stream].
    #[arg(long, value_name = "KEY")]
    pub stream: Option<String>,
    /// Dead-letter stream [default: <stream>:dlq, or the pipeline's `dlq`; with partitions,
    /// each partition's {STREAM:i}:dlq].
    #[arg(long, value_name = "KEY")]
    pub dlq: Option<String>,
    /// The stream is read as N partitions, {STREAM:0} … {STREAM:N-1} (`host run --partitions`):
    /// the command works on all of them [default with --config: the pipeline's `partitions`].
    #[arg(long, value_name = "N")]
    pub partitions: Option<u32>,
    /// With partitions: work on partition I alone.
    #[arg(long, value_name = "I")]
    pub partition: Option<u32>,
}

/// A stream to work on, resolved.
#[derive(Debug, Clone)]
pub struct Target {
    /// Stream key.
    pub stream: String,
    /// Dead-letter stream.
    pub dlq: String,
    /// Retention of the pipeline, when from a config file.
    pub retention: Option<Retention>,
    /// How many partitions the stream is read as (`--partitions`, or the
    /// pipeline's).
    pub partitions: Option<u32>,
    /// The one partition to work on (`--partition`).
    pub only: Option<u32>,
}

impl Target {
    /// The keys to work on: the stream, or its partitions (or the one
    /// chosen).
    pub fn parts(&self) -> Vec<ops::Part> {
        ops::parts(&self.stream, &self.dlq, self.partitions, self.only)
    }

    /// What the command's output calls the stream: with one partition
    /// chosen, that partition's key.
    pub fn label(&self) -> String {
        match (self.partitions, self.only) {
            (Some(_), Some(i)) => partition::stream_key(&self.stream, i),
            (Some(n), None) => format!("{} ({n} partitions)", self.stream),
            _ => self.stream.clone(),
        }
    }
}

impl Ops {
    /// The connection flags, for the parser to fill in `typed_redis_flag`.
    pub fn connect_mut(&mut self) -> &mut Connect {
        match self {
            Ops::Status(a) => &mut a.connect,
            Ops::Produce(a) => &mut a.connect,
            Ops::Dlq(c) => c.connect_mut(),
            Ops::Trim(a) => &mut a.connect,
            Ops::Groups(c) => c.connect_mut(),
            Ops::Replay(a) => &mut a.connect,
        }
    }
}

/// The first `--redis*` flag typed on the command line of the innermost
/// subcommand of `matches`.
pub fn typed_redis_flag(matches: &ArgMatches) -> Option<String> {
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    m.ids()
        .map(|id| id.as_str())
        .filter(|id| {
            matches!(*id, "redis" | "cluster" | "sentinels" | "sentinel_master")
                || id.starts_with("redis_")
        })
        .find(|id| m.value_source(id) == Some(ValueSource::CommandLine))
        .map(|id| format!("--{}", id.replace('_', "-")))
}

/// Runs an operator command to its exit status.
pub fn execute(ops: Ops) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match ops {
            Ops::Status(a) => status::run(*a).await,
            Ops::Produce(a) => produce::run(*a).await,
            Ops::Dlq(c) => dlq::run(c).await,
            Ops::Trim(a) => trim::run(*a).await,
            Ops::Groups(c) => groups::run(c).await,
            Ops::Replay(a) => replay::run(*a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // Every error here says all in its own message (a chain would repeat it).
            eprintln!("error: {e}");
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<OpsError>())
                .map_or(1, exit_code);
            ExitCode::from(code)
        }
    }
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    OpsError::Usage(message.into()).into()
}

/// The connection and the streams a command works on. `several`: every
/// pipeline of a config file may be meant (`status`); otherwise exactly one
/// stream must come out.
pub fn resolve(
    connect: &Connect,
    target: &StreamArgs,
    several: bool,
) -> anyhow::Result<(RedisConfig, Vec<Target>)> {
    let Some(file) = &connect.config else {
        let redis = connect
            .redis
            .redis_config(&|name| std::env::var(name).ok())
            .map_err(OpsError::from)?;
        let stream = target
            .stream
            .as_deref()
            .ok_or_else(|| usage("--stream KEY is required (or --config FILE)"))?;
        let t = target.of(stream, None)?;
        return Ok((redis, vec![t]));
    };
    if let Some(flag) = &connect.typed_redis_flag {
        return Err(usage(format!(
            "{flag} cannot be combined with --config: the connection comes from the file's [redis] table"
        )));
    }
    let config = super::file::load(file).map_err(|e| usage(e.to_string()))?;
    let redis = config
        .pipelines
        .first()
        .map(|p| p.redis.clone())
        .context("the config file declares no pipeline")?;
    let pipelines = chosen(&config.pipelines, connect.pipeline.as_deref(), file)?;
    let mut targets: Vec<Target> = match &target.stream {
        Some(stream) => {
            let of = pipelines.iter().copied().find(|p| &p.stream == stream);
            vec![target.of(stream, of)?]
        }
        None => pipelines
            .iter()
            .map(|p| target.of(&p.stream, Some(p)))
            .collect::<anyhow::Result<_>>()?,
    };
    targets.dedup_by(|a, b| a.stream == b.stream && a.dlq == b.dlq);
    if !several && targets.len() > 1 {
        let names: Vec<_> = pipelines.iter().map(|p| p.name.as_str()).collect();
        return Err(usage(format!(
            "{} declares {} pipelines: choose one with --pipeline NAME ({}) or give --stream",
            file.display(),
            names.len(),
            names.join(", ")
        )));
    }
    Ok((redis, targets))
}

/// The pipelines of a config file a command means: the one `--pipeline`
/// names, or all.
fn chosen<'a>(
    pipelines: &'a [RunConfig],
    name: Option<&str>,
    file: &std::path::Path,
) -> anyhow::Result<Vec<&'a RunConfig>> {
    let Some(name) = name else {
        return Ok(pipelines.iter().collect());
    };
    let chosen: Vec<_> = pipelines.iter().filter(|p| p.name == name).collect();
    if chosen.is_empty() {
        let names: Vec<_> = pipelines.iter().map(|p| p.name.as_str()).collect();
        return Err(usage(format!(
            "no pipeline named {name:?} in {} (it has: {})",
            file.display(),
            names.join(", ")
        )));
    }
    Ok(chosen)
}

impl StreamArgs {
    /// `stream` as a command's target: its DLQ is `--dlq`, else the
    /// pipeline's that consumes it (`of`), else `<stream>:dlq`; its
    /// retention is that pipeline's.
    fn of(&self, stream: &str, of: Option<&RunConfig>) -> anyhow::Result<Target> {
        let partitions = self
            .partitions
            .or_else(|| of.and_then(|p| p.partitions.map(|parts| parts.count)));
        match partitions {
            Some(n) if n == 0 || n > partition::MAX_PARTITIONS => {
                return Err(usage(format!(
                    "--partitions must be between 1 and {}",
                    partition::MAX_PARTITIONS
                )));
            }
            Some(_) if self.dlq.is_some() => {
                return Err(usage(
                    "--dlq cannot be combined with partitions: each partition's dead letters are {STREAM:i}:dlq",
                ));
            }
            Some(_) => {
                if let Some(why) = partition::refuse_name(stream) {
                    return Err(usage(format!("--stream {stream:?}: {why}")));
                }
            }
            None if self.partition.is_some() => {
                return Err(usage(
                    "--partition needs --partitions N (or a --config pipeline with `partitions`)",
                ));
            }
            None => {}
        }
        if let (Some(n), Some(i)) = (partitions, self.partition)
            && i >= n
        {
            return Err(usage(format!(
                "--partition {i}: the stream has partitions 0 to {}",
                n - 1
            )));
        }
        Ok(Target {
            stream: stream.to_owned(),
            dlq: self
                .dlq
                .clone()
                .or_else(|| of.map(|p| p.dlq.clone()))
                .unwrap_or_else(|| format!("{stream}:dlq")),
            retention: of.and_then(RunConfig::retention),
            partitions,
            only: self.partition,
        })
    }
}

/// The process exit status an operator command's error maps to (BSD
/// sysexits: 64 usage, 65 bad data, 69 service unavailable).
fn exit_code(e: &OpsError) -> u8 {
    match e {
        OpsError::Config(_) | OpsError::Usage(_) => 64,
        OpsError::Data(_) => 65,
        OpsError::Redis(_) => 69,
    }
}
