//! What a command line asks for, with `host run`'s flags already turned into
//! configuration — or the config file to read instead, refusing run flags
//! given beside it (the file would silently win over them).

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::demo::DemoArgs;
use super::ops::Ops;
use super::{CheckArgs, Cli, Command, ConfigCommand};
use crate::config::{Config, ConfigError};
use crate::telemetry::LogFormat;

/// The parsed command line.
#[derive(Debug)]
pub struct Invocation {
    /// `--log`.
    pub log: String,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// `--perf-map`.
    pub perf_map: bool,
    /// The subcommand, or why its flags cannot work.
    pub action: Result<Action, ConfigError>,
}

/// The subcommand.
#[derive(Debug)]
pub enum Action {
    /// `host run`.
    Run {
        /// Where the pipelines come from.
        source: RunSource,
        /// `--check`: validate and print, do not run.
        check_only: bool,
    },
    /// `host check PLUGIN`.
    Check(CheckArgs),
    /// `host config check FILE`.
    ConfigCheck(PathBuf),
    /// An operator command (`status`, `produce`, `dlq`, `trim`).
    Ops(Box<Ops>),
    /// `host demo`.
    Demo(Box<DemoArgs>),
}

/// Where `host run`'s pipelines come from.
#[derive(Debug)]
pub enum RunSource {
    /// One pipeline from flags (not yet validated).
    Flags(Box<Config>),
    /// A config file (not yet read).
    File(PathBuf),
}

/// Parses the process's arguments; exits with clap's message on a malformed line.
pub fn invocation() -> Invocation {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let action = match cli.command {
        Command::Check(args) => Ok(Action::Check(args)),
        Command::Config(ConfigCommand::Check { file }) => Ok(Action::ConfigCheck(file)),
        Command::Status(a) => Ok(ops(Ops::Status(a), &matches)),
        Command::Produce(a) => Ok(ops(Ops::Produce(a), &matches)),
        Command::Dlq(c) => Ok(ops(Ops::Dlq(c), &matches)),
        Command::Trim(a) => Ok(ops(Ops::Trim(a), &matches)),
        Command::Groups(c) => Ok(ops(Ops::Groups(c), &matches)),
        Command::Replay(a) => Ok(ops(Ops::Replay(a), &matches)),
        Command::Demo(a) => Ok(Action::Demo(a)),
        Command::Run(args) => {
            let run_matches = matches.subcommand_matches("run").expect("run was parsed");
            let check_only = args.check;
            match args.config.clone() {
                Some(file) => refuse_flags_beside(run_matches).map(|()| Action::Run {
                    source: RunSource::File(file),
                    check_only,
                }),
                None => {
                    let http = args.http.clone();
                    let dashboard = crate::config::Dashboard {
                        admin: args.http_admin.then(|| {
                            crate::config::HttpAdmin::from_env(&|n| std::env::var(n).ok())
                        }),
                        allowed_hosts: args.http_allowed_hosts.clone(),
                    };
                    args.redis
                        .redis_config(&|name| std::env::var(name).ok())
                        .and_then(|redis| args.into_config(redis, super::env_plugin_config()))
                        .map(|c| Action::Run {
                            source: RunSource::Flags(Box::new(Config {
                                http,
                                dashboard,
                                ..Config::single(c)
                            })),
                            check_only,
                        })
                }
            }
        }
    };
    Invocation {
        log: cli.log,
        log_format: cli.log_format.into(),
        perf_map: cli.perf_map,
        action,
    }
}

/// An operator command, told which `--redis*` flag was typed (refused beside `--config`).
fn ops(mut command: Ops, matches: &ArgMatches) -> Action {
    command.connect_mut().typed_redis_flag = super::ops::typed_redis_flag(matches);
    Action::Ops(Box::new(command))
}

/// Refuses run flags typed beside `--config`. Their `STREAMHOST_*`
/// variables are ignored instead: a file can use them as `${VAR}`.
fn refuse_flags_beside(matches: &ArgMatches) -> Result<(), ConfigError> {
    let command = Cli::command();
    let run = command.find_subcommand("run").expect("run is a subcommand");
    let typed = run
        .get_arguments()
        .filter(|a| !a.is_global_set())
        .filter_map(|a| a.get_long().map(|long| (a.get_id().as_str(), long)))
        .filter(|(_, long)| !matches!(*long, "config" | "check"))
        .find(|(id, _)| matches.value_source(id) == Some(ValueSource::CommandLine));
    match typed {
        Some((_, long)) => {
            let instead = if matches!(long, "redis" | "cluster" | "sentinel" | "sentinel-master")
                || long.starts_with("redis-")
            {
                "set the connection in the file's [redis] table instead".to_owned()
            } else if long == "http" {
                "set `listen` in the file's [http] table instead".to_owned()
            } else if long == "http-admin" {
                "set `admin = true` in the file's [http] table instead".to_owned()
            } else {
                format!("set `{long}` in the file instead")
            };
            Err(ConfigError::Conflict {
                flags: &["config"],
                message: format!("--{long} cannot be combined with --config: {instead}"),
            })
        }
        None => Ok(()),
    }
}
