//! Running until a signal: graceful shutdown on SIGTERM or SIGINT.

use super::{Server, ServerError};
use crate::config::Config;
use crate::reload;
use crate::workers::Workers;

/// Runs `config` on `workers` until SIGTERM or SIGINT, then shuts down
/// gracefully (every worker stops accepting, and all their connections are
/// waited for); a second signal exits at once.
pub async fn run(config: Config, workers: Workers) -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the listeners bind: a SIGHUP sent as soon as the proxy
    // answers must reload, not take the default action (exit).
    let hangups = signal(SignalKind::hangup()).expect("installing a SIGHUP handler");
    let server = Server::start_on(config, workers).await?;
    reload::start(&server, hangups);
    wait_for_stop().await;
    // The timeout of the config running now, which a reload may have changed.
    let shutdown_timeout = server.shared.load().config.global.shutdown_timeout;
    tracing::info!(
        ?shutdown_timeout,
        "shutting down: finishing in-flight requests"
    );
    tokio::select! {
        _ = server.shutdown(shutdown_timeout) => {}
        _ = wait_for_stop() => {
            tracing::warn!("second signal: exiting now");
        }
    }
    Ok(())
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
