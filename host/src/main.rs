//! `host`: the streamhost command line.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use streamhost::cli::{self, Action, RunSource};
use streamhost::config::{self, Config};
use streamhost::demo::leftovers::Leftovers;
use streamhost::http::HttpServer;
use streamhost::http::feed::Feed;
use streamhost::runtime::port::Face;
use streamhost::runtime::{self, RunError};
use tokio_util::sync::CancellationToken;

// Every field of every entry, and every field a handler emits, is an
// allocation of its own, made on one thread and freed on another (reader,
// worker, committer): jemalloc's thread caches make that cheap where the
// system allocator contends. The README's performance section has the
// measured trade (CPU per entry against RSS).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status for configuration errors (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;
/// Exit status for a refused plugin (BSD `EX_DATAERR`).
const EXIT_DATAERR: u8 = 65;
/// Exit status after a task of the runtime failed (BSD `EX_SOFTWARE`).
const EXIT_SOFTWARE: u8 = 70;
/// How long the end of `main` waits for blocking work (a plugin compile cut
/// short by a signal) before leaving it behind.
const RUNTIME_EXIT: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let invocation = cli::invocation();
    streamhost::telemetry::init(&invocation.log, invocation.log_format);
    if invocation.perf_map {
        streamhost::plugin::write_perf_map();
    }
    match invocation.action {
        Err(e) => usage(&e.to_string()),
        Ok(Action::Check(args)) => check(&args),
        Ok(Action::Ops(command)) => cli::ops::execute(*command),
        Ok(Action::Demo(args)) => demo(*args),
        Ok(Action::ConfigCheck(file)) => match load_file(&file) {
            Ok(config) => print_effective(&config),
            Err(code) => code,
        },
        Ok(Action::Run { source, check_only }) => {
            let config = match source {
                RunSource::Flags(config) => match config.validate() {
                    Ok(()) => *config,
                    // One pipeline from flags: the flag names it all.
                    Err(e) => return usage(&e.error.to_string()),
                },
                RunSource::File(file) => match load_file(&file) {
                    Ok(config) => config,
                    Err(code) => return code,
                },
            };
            if check_only {
                print_effective(&config)
            } else {
                run(config)
            }
        }
    }
}

fn load_file(file: &Path) -> Result<Config, ExitCode> {
    cli::file::load(file).map_err(|e| usage(&e.to_string()))
}

fn print_effective(config: &Config) -> ExitCode {
    print!("{}", config::render(config));
    ExitCode::SUCCESS
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

fn check(args: &cli::CheckArgs) -> ExitCode {
    match streamhost::ops::plugin_check::check(&args.plugin) {
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

fn run(config: Config) -> ExitCode {
    with_runtime(|shutdown| async move {
        if let Err(e) = streamhost::shutdown::install(shutdown.clone()) {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        let face = match http_face(&config, None).await {
            Ok(face) => face,
            Err(code) => return code,
        };
        match runtime::run(config, face, shutdown).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => report(e),
        }
    })
}

fn demo(args: cli::demo::DemoArgs) -> ExitCode {
    with_runtime(|shutdown| async move {
        // Installed first: a second signal at any moment removes whatever
        // the demo has made so far (its exit runs no destructors).
        let leftovers = Leftovers::new();
        let last_words = {
            let leftovers = leftovers.clone();
            move || leftovers.clean_up()
        };
        if let Err(e) = streamhost::shutdown::install_with_last_words(shutdown.clone(), last_words)
        {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        // A signal during start-up drops what was started so far.
        let started = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                eprintln!("stopped while starting");
                return ExitCode::SUCCESS;
            }
            started = streamhost::demo::start(args, &leftovers) => started,
        };
        let demo = match started {
            Ok(demo) => demo,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(streamhost::demo::exit_code(&e));
            }
        };
        let feed: Arc<dyn Feed> = demo.feed.clone();
        let face = match http_face(&demo.config, Some(feed)).await {
            Ok(face) => face,
            Err(code) => return code,
        };
        let result = runtime::run(demo.config.clone(), face, shutdown).await;
        demo.stop();
        match result {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => report(e),
        }
    })
}

/// The HTTP side of `config` (its dashboard producing from `feed`, if
/// any), its listener bound here, before any plugin is compiled: a taken
/// address is a start-up error (exit 64).
async fn http_face(
    config: &Config,
    feed: Option<Arc<dyn Feed>>,
) -> Result<Option<Box<dyn Face>>, ExitCode> {
    let Some(listen) = &config.http else {
        return Ok(None);
    };
    match HttpServer::bind(listen, config.dashboard.clone()).await {
        Ok(server) => Ok(Some(Box::new(match feed {
            Some(feed) => server.with_feed(feed),
            None => server,
        }))),
        Err(e) => {
            tracing::error!(error = %e, "cannot run");
            Err(usage(&e.to_string()))
        }
    }
}

/// Runs `body` on a multi-threaded runtime with a fresh shutdown token.
fn with_runtime<F, Fut>(body: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = ExitCode>,
{
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
    let code = rt.block_on(body(CancellationToken::new()));
    // A compile still running in a blocking thread must not hold the exit.
    rt.shutdown_timeout(RUNTIME_EXIT);
    code
}

fn report(e: RunError) -> ExitCode {
    let code = match &e {
        RunError::Config(_) | RunError::Pipeline(_) => EXIT_USAGE,
        RunError::Plugin(_) => EXIT_DATAERR,
        RunError::Spawn(_) => 1,
        RunError::TaskFailed { .. } | RunError::ProcessTaskFailed { .. } => EXIT_SOFTWARE,
    };
    tracing::error!(error = %e, "cannot run");
    eprintln!("error: {e}");
    ExitCode::from(code)
}
