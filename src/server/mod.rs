//! The running proxy: listener sockets, their accept loops, each connection's
//! HTTP/1.1 or HTTP/2 server, and graceful shutdown.

mod bind;
mod certs;
mod connection;
mod h2;
mod idle;
mod listeners;
mod signals;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::admin::{self, AdminError};
use crate::config::Config;
use crate::lifecycle::Tracker;
use crate::reload::ReloadState;
use crate::runtime::Shared;
use crate::tls::{self, TlsError, TlsListener};
use crate::workers::Workers;
pub use bind::bind;
use listeners::RunningListener;
pub use signals::{run, wait_for_stop};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// The proxy while it runs.
pub struct Server {
    pub shared: Arc<Shared>,
    pub tracker: Tracker,
    listeners: Mutex<HashMap<SocketAddr, RunningListener>>,
    /// The listeners that terminate TLS, by address: a connection accepted
    /// on an address found here does a TLS handshake first. Every worker
    /// reads it at every accept, so it is swapped whole, never locked.
    tls: ArcSwap<HashMap<SocketAddr, Arc<TlsListener>>>,
    /// Flipped once to ask every connection to finish gracefully.
    shutdown: watch::Sender<bool>,
    pub reload: ReloadState,
    /// Each listening address has a socket and an accept loop in every
    /// worker.
    pub workers: Workers,
}

impl Server {
    /// Loads every certificate of `config`, binds every listener and starts
    /// serving, all on the runtime this is called on.
    pub async fn start(config: Config) -> Result<Arc<Server>, ServerError> {
        Server::start_on(config, Workers::current()).await
    }

    /// [`Server::start`] with a listening socket in every one of `workers`.
    pub async fn start_on(config: Config, workers: Workers) -> Result<Arc<Server>, ServerError> {
        let certs = tls::load(&config)?;
        let mut bound = Vec::new();
        for l in &config.listeners {
            bound.push((l.listen, bind(l.listen, workers.count()).await?));
        }
        let admin_listener = match &config.admin {
            Some(a) => Some(admin::bind(a.listen).await?),
            None => None,
        };
        let server = Arc::new(Server {
            shared: Shared::new(config),
            tracker: Tracker::default(),
            listeners: Mutex::new(HashMap::new()),
            tls: ArcSwap::default(),
            shutdown: watch::channel(false).0,
            reload: ReloadState::default(),
            workers,
        });
        server.apply_tls(certs)?;
        crate::cluster::start(&server.shared)?;
        for (addr, listener) in bound {
            server.serve(addr, listener);
        }
        if let Some(listener) = admin_listener {
            admin::spawn(listener, server.clone());
        }
        Ok(server)
    }

    /// Whether [`Server::shutdown`] has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Stops accepting, asks connections to finish (HTTP/1.1 closes idle
    /// keep-alive connections, HTTP/2 sends GOAWAY) and waits up to `timeout`
    /// for every tracked connection and tunnel. Returns whether all finished.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        for addr in self.listening() {
            self.stop_listener(addr);
        }
        let _ = self.shutdown.send(true);
        self.tracker.begin_shutdown(timeout);
        let finished = tokio::time::timeout(timeout, self.tracker.idle())
            .await
            .is_ok();
        if !finished {
            tracing::warn!(
                remaining = self.tracker.active(),
                "shutdown_timeout passed; closing the remaining connections"
            );
        }
        finished
    }
}
