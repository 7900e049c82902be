//! The wiring of a running sluice: it builds the proxy's listeners, then
//! starts what runs beside them (health checks, cluster tasks, reload
//! triggers, the admin API) and runs until a signal. It is the only module
//! that knows all of them; none of them knows it.

use std::sync::Arc;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::admin::{self, AdminError};
use crate::cluster::{self, Cluster, ClusterError};
use crate::config::Config;
use crate::health;
use crate::reload::{self, Reloader};
use crate::runtime::pool;
use crate::server::{Server, ServerError};
use crate::workers::Workers;

/// Why sluice could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
}

/// Runs `config` on `workers` until SIGTERM or SIGINT, then shuts down
/// gracefully (every worker stops accepting, and all their connections are
/// waited for); a second signal exits at once.
pub async fn run(config: Config, workers: Workers) -> Result<(), AppError> {
    // Installed before the listeners bind: a SIGHUP sent as soon as the proxy
    // answers must reload, not take the default action (exit).
    let hangups = signal(SignalKind::hangup()).expect("installing a SIGHUP handler");
    let reloader = start(config, workers, hangups).await?;
    let server = &reloader.server;
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

/// Binds every listener and the admin address before anything is served,
/// so that any of them taken fails start-up with nothing half-running;
/// then starts the checks, the cluster, the pools' sweep, the listeners,
/// the reload triggers and the admin API.
async fn start(
    config: Config,
    workers: Workers,
    hangups: Signal,
) -> Result<Arc<Reloader>, AppError> {
    let admin_addr = config.admin.as_ref().map(|a| a.listen);
    let cluster = Cluster::new(&config).map(Arc::new);
    let bound = Server::prepare(config, workers).await?;
    let admin_listener = match admin_addr {
        Some(addr) => Some(admin::bind(addr).await?),
        None => None,
    };
    let shared = &bound.server().shared;
    if let Some(cluster) = &cluster {
        cluster::start(shared, cluster)?;
    }
    health::start(shared);
    tokio::spawn(pool::sweep(Arc::downgrade(shared)));
    let reloader = Reloader::new(bound.serve());
    reload::start(&reloader, hangups);
    if let Some(listener) = admin_listener {
        admin::spawn(listener, reloader.clone(), cluster);
    }
    Ok(reloader)
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn wait_for_stop() {
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
