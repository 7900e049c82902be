//! The running proxy: listener sockets, their accept loops, each connection's
//! HTTP/1.1 or HTTP/2 server, and graceful shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::admin::{self, AdminError};
use crate::config::Config;
use crate::lifecycle::Tracker;
use crate::proxy::ConnCtx;
use crate::reload::{self, ReloadState};
use crate::runtime::Shared;

/// HTTP/2 limits, set explicitly rather than left to library defaults.
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 100;
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Admin(#[from] AdminError),
}

struct RunningListener {
    stop: watch::Sender<bool>,
}

/// The proxy while it runs.
pub struct Server {
    pub shared: Arc<Shared>,
    pub tracker: Tracker,
    listeners: Mutex<HashMap<SocketAddr, RunningListener>>,
    /// Flipped once to ask every connection to finish gracefully.
    shutdown: watch::Sender<bool>,
    pub reload: ReloadState,
}

impl Server {
    /// Binds every listener of `config` and starts serving.
    pub async fn start(config: Config) -> Result<Arc<Server>, ServerError> {
        let mut bound = Vec::new();
        for l in &config.listeners {
            bound.push((l.listen, bind(l.listen).await?));
        }
        let admin_listener = match &config.admin {
            Some(a) => Some(admin::bind(a.listen).await?),
            None => None,
        };
        let server = Arc::new(Server {
            shared: Shared::new(config),
            tracker: Tracker::default(),
            listeners: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
            reload: ReloadState::default(),
        });
        for (addr, listener) in bound {
            server.serve(addr, listener);
        }
        if let Some(listener) = admin_listener {
            admin::spawn(listener, server.shared.clone());
        }
        Ok(server)
    }

    /// Starts the accept loop of a bound listener.
    pub fn serve(self: &Arc<Self>, addr: SocketAddr, listener: TcpListener) {
        let (stop, stop_rx) = watch::channel(false);
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, RunningListener { stop });
        tokio::spawn(self.clone().accept_loop(addr, listener, stop_rx));
        tracing::info!(%addr, "listening");
    }

    /// Stops accepting on `addr`; its connections finish on their own.
    pub fn stop_listener(&self, addr: SocketAddr) {
        if let Some(l) = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr)
        {
            let _ = l.stop.send(true);
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

    async fn accept_loop(
        self: Arc<Self>,
        addr: SocketAddr,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        tokio::spawn(self.clone().serve_connection(addr, stream, peer, stop.clone()));
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

    /// Serves one client connection until it ends; shutdown, or a reload
    /// removing its listener (`removed`), ends it gracefully.
    async fn serve_connection(
        self: Arc<Self>,
        listen: SocketAddr,
        stream: TcpStream,
        peer: SocketAddr,
        mut removed: watch::Receiver<bool>,
    ) {
        let _token = self.tracker.token();
        let snapshot = self.shared.load();
        let Some(listener) = snapshot.listener(listen).cloned() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let cfg = &listener.cfg;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(cfg.header_timeout)
            .max_buf_size(cfg.max_header_size.max(8192))
            .max_headers(cfg.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from(cfg.max_header_size).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
        let ctx = Arc::new(ConnCtx {
            shared: self.shared.clone(),
            listen,
            peer,
            tls: false,
            listener,
            tracker: self.tracker.clone(),
        });
        drop(snapshot);
        let service = service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(ctx.handle(req).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let mut shutdown = self.shutdown.subscribe();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
            }
            _ = async {
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => {}
                    _ = removed.wait_for(|r| *r) => {}
                }
            } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .and_then(|s| {
        s.set_reuseaddr(true)?;
        s.bind(addr)?;
        Ok(s)
    })
    .map_err(|source| ServerError::Bind { addr, source })?;
    socket
        .listen(1024)
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Runs `config` until SIGTERM or SIGINT, then shuts down gracefully; a
/// second signal exits at once.
pub async fn run(config: Config) -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the listeners bind: a SIGHUP sent as soon as the proxy
    // answers must reload, not take the default action (exit).
    let hangups = signal(SignalKind::hangup()).expect("installing a SIGHUP handler");
    let server = Server::start(config).await?;
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

async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
