//! The listener registry: which addresses are served, and each one's
//! accept loop in every worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Server;
use crate::workers::idle;

pub(super) struct RunningListener {
    stop: watch::Sender<bool>,
}

impl Server {
    /// Starts the accept loops of a listener [`bind`] bound, one in each
    /// worker, each on the worker's own socket.
    pub fn serve(self: &Arc<Self>, addr: SocketAddr, sockets: Vec<std::net::TcpListener>) {
        let (stop, stop_rx) = watch::channel(false);
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, RunningListener { stop });
        for (worker, socket) in sockets.into_iter().enumerate() {
            let server = self.clone();
            let stop = stop_rx.clone();
            self.workers.spawn(worker, async move {
                // Registered with the worker's own reactor, so its
                // connections are polled on the worker's thread.
                match TcpListener::from_std(socket) {
                    Ok(listener) => server.accept_loop(addr, worker, listener, stop).await,
                    Err(e) => tracing::error!(%addr, worker, error = %e, "cannot listen"),
                }
            });
        }
        tracing::info!(%addr, "listening");
    }

    /// Stops accepting on `addr` in every worker, closing its sockets; its
    /// connections finish on their own.
    pub fn stop_listener(&self, addr: SocketAddr) {
        if let Some(l) = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr)
        {
            let _ = l.stop.send(true);
            idle::stop_changed();
            tracing::info!(%addr, "listener stopped");
        }
    }

    /// Addresses being served now.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    async fn accept_loop(
        self: Arc<Self>,
        addr: SocketAddr,
        worker: usize,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut cached = None;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        self.workers.accepted(worker);
                        // Gone in a reload not yet seen here: not served.
                        let Some(on) = self.listener_ctx(addr, &stop, &mut cached) else {
                            continue;
                        };
                        tokio::spawn(self.clone().serve_connection(on, stream, peer));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off a little
                        // instead of spinning.
                        tracing::warn!(%addr, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = async { let _ = stop.wait_for(|stopped| *stopped).await; } => break,
            }
        }
    }
}
