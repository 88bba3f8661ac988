//! SIGINT/SIGTERM → the root cancellation token. A second signal during the
//! drain exits at once (entries not yet acked stay pending in Redis).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM; exits the process with
/// status 130 on the second.
pub fn install(token: CancellationToken) -> std::io::Result<()> {
    install_with_last_words(token, || {})
}

/// [`install`], calling `last_words` right before the exit on a second
/// signal: `exit` runs no destructors, so whatever must not outlive the
/// process (a child it started) is ended there.
pub fn install_with_last_words(
    token: CancellationToken,
    last_words: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        for n in 0.. {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if n == 0 {
                tracing::info!(signal = name, "shutdown requested");
                token.cancel();
            } else {
                tracing::warn!(
                    signal = name,
                    "second signal: exiting now; unfinished entries stay pending"
                );
                last_words();
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
