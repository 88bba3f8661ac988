//! `host`: the streamhost command line.

use std::process::ExitCode;

use clap::Parser;
use streamhost::cli::{Cli, Command};
use streamhost::runtime::{self, RunError};
use tokio_util::sync::CancellationToken;

/// Exit status for configuration errors (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;
/// Exit status for a refused plugin (BSD `EX_DATAERR`).
const EXIT_DATAERR: u8 = 65;
/// Exit status after a task of the runtime failed (BSD `EX_SOFTWARE`).
const EXIT_SOFTWARE: u8 = 70;

fn main() -> ExitCode {
    let cli = Cli::parse();
    streamhost::telemetry::init(&cli.log, cli.log_format);
    match cli.command {
        Command::Run(args) => run((*args).into_config()),
        Command::Check(args) => check(&args),
    }
}

fn check(args: &streamhost::cli::CheckArgs) -> ExitCode {
    match streamhost::check::check(&args.plugin) {
        Ok(report) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_DATAERR)
        }
    }
}

fn run(config: streamhost::RunConfig) -> ExitCode {
    // Refuse bad configuration and bad plugins before starting anything.
    let prepared = match runtime::prepare(&config) {
        Ok(p) => p,
        Err(e) => return report(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        if let Err(e) = streamhost::shutdown::install(shutdown.clone()) {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        match runtime::run_prepared(config, prepared, shutdown).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => report(e),
        }
    })
}

fn report(e: RunError) -> ExitCode {
    let code = match &e {
        RunError::Config(_) | RunError::RedisUrl(_) => EXIT_USAGE,
        RunError::Plugin(_) => EXIT_DATAERR,
        RunError::Spawn(_) => 1,
        RunError::TaskFailed { .. } => EXIT_SOFTWARE,
    };
    tracing::error!(error = %e, "cannot run");
    eprintln!("error: {e}");
    ExitCode::from(code)
}
