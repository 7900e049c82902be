//! The running proxy: listener sockets, their accept loops, each connection's
//! HTTP/1.1 or HTTP/2 server, and graceful shutdown.

mod bind;
mod cancels;
mod certs;
mod connection;
mod h2;
mod idle;
mod listeners;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Config;
use crate::lifecycle::Tracker;
use crate::runtime::Shared;
use crate::tls::{self, TlsError, TlsListener};
use crate::workers::Workers;
pub use bind::bind;
use listeners::RunningListener;

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
    /// Each listening address has a socket and an accept loop in every
    /// worker.
    pub workers: Workers,
}

/// A server whose certificates are loaded and whose listeners are bound,
/// not yet accepting: what runs beside it (the admin API, the cluster) is
/// started in between, so that a failure there serves nothing.
pub struct Bound {
    server: Arc<Server>,
    sockets: Vec<(SocketAddr, Vec<std::net::TcpListener>)>,
}

impl Bound {
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Starts accepting on every listener.
    pub fn serve(self) -> Arc<Server> {
        for (addr, sockets) in self.sockets {
            self.server.serve(addr, sockets);
        }
        self.server
    }
}

impl Server {
    /// Loads every certificate of `config`, binds every listener and starts
    /// serving, all on the runtime this is called on.
    pub async fn start(config: Config) -> Result<Arc<Server>, ServerError> {
        Ok(Server::prepare(config, Workers::current()).await?.serve())
    }

    /// Loads every certificate of `config` and binds every listener, with a
    /// socket in every one of `workers`.
    pub async fn prepare(config: Config, workers: Workers) -> Result<Bound, ServerError> {
        let mut certs = tls::load(&config)?;
        let upstream_tls = std::mem::take(&mut certs.upstreams);
        let mut sockets = Vec::new();
        for l in &config.listeners {
            sockets.push((l.listen, bind(l.listen, workers.count()).await?));
        }
        let server = Arc::new(Server {
            shared: Shared::new(config, upstream_tls),
            tracker: Tracker::default(),
            listeners: Mutex::new(HashMap::new()),
            tls: ArcSwap::default(),
            shutdown: watch::channel(false).0,
            workers,
        });
        server.apply_tls(certs)?;
        Ok(Bound { server, sockets })
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
        crate::workers::idle::stop_changed();
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
