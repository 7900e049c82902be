//! The running proxy: listener sockets, their accept loops, each connection's
//! HTTP/1.1 or HTTP/2 server, and graceful shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body::{Body, Frame, SizeHint};
use hyper::rt::{Read, Write};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::admin::{self, AdminError};
use crate::config::{Config, canonical};
use crate::lifecycle::Tracker;
use crate::proxy::ConnCtx;
use crate::proxy::body::ClientBody;
use crate::proxy::h1::{self, ClientStream, REQUEST_TIMEOUT_408, Served, Settings, Stop};
use crate::proxy::headers;
use crate::proxy_protocol;
use crate::reload::{self, ReloadState};
use crate::runtime::{Shared, clock};
use crate::tls::{self, Certs, TlsError, TlsListener};
use crate::workers::Workers;

/// HTTP/2 limits, set explicitly rather than left to library defaults.
///
/// The contract: at most 100 concurrent streams, and a client that resets,
/// errors or floods streams gets GOAWAY within 100 streams or frames.
/// - Rapid reset (CVE-2023-44487): streams the client opens and resets before
///   they are answered; more than 20 pending at once is GOAWAY.
/// - "MadeYouReset" (CVE-2025-8671): streams the server itself must reset
///   because the client broke the protocol on them; the 100th is GOAWAY.
/// - CONTINUATION flood (CVE-2024-27316): h2 caps a header block at
///   `max_header_list_size` (our `max_header_size`) and at a handful of
///   CONTINUATION frames (5 for 64 KiB), then GOAWAY.
/// - A peer that stops answering pings is dropped after interval + timeout.
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
    Tls(#[from] TlsError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

struct RunningListener {
    stop: watch::Sender<bool>,
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
            tracing::info!(%addr, "listener stopped");
        }
    }

    /// Serves `certs` from now on: listeners already terminating TLS swap
    /// their certificates (their session caches and open connections stay),
    /// new TLS listeners get a rustls config, and addresses missing from
    /// `certs` stop doing TLS. A reload calls this with [`tls::load`]'s
    /// result before swapping the snapshot. Returns the running TLS
    /// listeners whose certificates changed, in address order.
    pub fn apply_tls(&self, certs: Certs) -> Result<Vec<SocketAddr>, TlsError> {
        for warning in certs.warnings() {
            tracing::warn!("{warning}");
        }
        // Reloads apply one at a time: no other writer can come in between.
        let mut current = HashMap::clone(&self.tls.load());
        current.retain(|addr, _| certs.listeners.contains_key(addr));
        let mut renewed = Vec::new();
        for (addr, listener_certs) in certs.listeners {
            match current.get(&addr) {
                Some(running) => {
                    if running.update(listener_certs) {
                        renewed.push(addr);
                    }
                }
                None => {
                    current.insert(addr, Arc::new(TlsListener::new(listener_certs)?));
                }
            }
        }
        self.tls.store(Arc::new(current));
        renewed.sort_unstable();
        Ok(renewed)
    }

    /// The TLS side of the listener on `addr`, if it terminates TLS.
    pub fn tls_listener(&self, addr: SocketAddr) -> Option<Arc<TlsListener>> {
        self.tls.load().get(&addr).cloned()
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

    async fn accept_loop(
        self: Arc<Self>,
        addr: SocketAddr,
        worker: usize,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        self.workers.accepted(worker);
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
        mut stream: TcpStream,
        peer: SocketAddr,
        removed: watch::Receiver<bool>,
    ) {
        // Taken at accept, so a TLS handshake in progress also holds up
        // graceful shutdown (for at most its handshake_timeout).
        let _token = self.tracker.token();
        let _ = stream.set_nodelay(true);
        let tls = self.tls_listener(listen);
        let wants_tls = self
            .shared
            .load()
            .listener(listen)
            .map(|l| l.cfg.tls.is_some());
        // A reload drops a listener's TLS side before the snapshot that
        // removes the listener (or its TLS) is swapped in; a connection
        // accepted in between must not be served in plaintext.
        match (wants_tls, &tls) {
            (None, _) => return,
            (Some(true), None) => {
                tracing::debug!(%peer, %listen, "TLS listener removed by a reload: closing");
                return;
            }
            _ => {}
        }
        // Boxed, as the TLS handshake and HTTP/2 below: a task is as large as
        // its largest state, and an idle HTTP/1.1 connection should cost only
        // what its own loop needs.
        let Some(peer) =
            Box::pin(self.proxy_header(listen, &mut stream, peer, tls.is_none())).await
        else {
            return;
        };
        let (stream, sni) = match tls {
            None => (ClientStream::Tcp(stream), None),
            // The session is boxed inside the handshake's own future: held
            // in this one, it would stay allocated with every connection.
            Some(tls) => match Box::pin(async { tls.accept(stream).await.map(Box::new) }).await {
                Ok(stream) => {
                    let session = &stream.get_ref().1;
                    let sni = session.server_name().map(str::to_ascii_lowercase);
                    if session.alpn_protocol() == Some(b"h2") {
                        let io = TokioIo::new(*stream);
                        Box::pin(self.serve_h2(listen, io, peer, Some(sni), removed)).await;
                        return;
                    }
                    (ClientStream::Tls(stream), Some(sni))
                }
                Err(e) => {
                    tracing::debug!(%peer, %listen, error = %e, "TLS handshake failed");
                    return;
                }
            },
        };
        // Built in a block, so that only the serving future, not these
        // values moved into it, stays in this task's state.
        let served = {
            let Some(ctx) = self.conn_ctx(listen, peer, sni.clone()) else {
                return;
            };
            let cfg = &ctx.listener.cfg;
            let settings = Settings {
                limits: crate::http1::Limits {
                    max_head: cfg.max_header_size,
                    max_fields: cfg.max_headers,
                },
                header_timeout: cfg.header_timeout,
                idle_timeout: cfg.idle_timeout,
            };
            let stop = Stop {
                shutdown: self.shutdown.subscribe(),
                removed: removed.clone(),
            };
            h1::serve(ctx, stream, settings, stop)
        }
        .await;
        if let Served::H2(stream) = served {
            Box::pin(self.serve_h2(listen, TokioIo::new(stream), peer, sni, removed)).await;
        }
    }

    /// What a connection's requests share about it, from the listener as
    /// it is now; `None` once a reload removed the listener.
    fn conn_ctx(
        &self,
        listen: SocketAddr,
        peer: SocketAddr,
        tls: Option<Option<String>>,
    ) -> Option<ConnCtx> {
        let listener = self.shared.load().listener(listen).cloned()?;
        Some(ConnCtx {
            shared: self.shared.clone(),
            listen,
            peer,
            peer_ip: headers::ip_value(peer.ip()),
            tls: tls.is_some(),
            sni: tls.flatten(),
            listener,
            tracker: self.tracker.clone(),
        })
    }

    /// A trusted peer (a load balancer) may start the connection with a
    /// PROXY protocol header naming the client it relays; that client then
    /// stands for the connection everywhere (`X-Forwarded-For`, `X-Real-IP`,
    /// `ip_hash`, logs, the next `trusted_proxies` decision). It comes before
    /// any TLS. Bytes from an untrusted peer are never looked at: a PROXY
    /// header from it is left to HTTP, which refuses it. Returns the client
    /// address, or `None` when the connection is done with (a malformed
    /// header, or nothing within `header_timeout`, answered 408 in clear).
    async fn proxy_header(
        &self,
        listen: SocketAddr,
        stream: &mut TcpStream,
        peer: SocketAddr,
        cleartext: bool,
    ) -> Option<SocketAddr> {
        let header_timeout = {
            let snapshot = self.shared.load();
            let trusted = &snapshot.config.global.trusted_proxies;
            if !headers::is_trusted(canonical(peer.ip()), trusted) {
                return Some(peer);
            }
            snapshot.listener(listen)?.cfg.header_timeout
        };
        let mut shutdown = self.shutdown.subscribe();
        tokio::select! {
            read = tokio::time::timeout(header_timeout, proxy_protocol::read_header(stream)) => match read {
                Ok(Ok(header)) => Some(header.map_or(peer, |h| h.client(peer))),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, %listen, error = %e, "bad PROXY protocol header; closing");
                    None
                }
                Err(_) => {
                    if cleartext {
                        let _ = stream.try_write(REQUEST_TIMEOUT_408);
                    }
                    None
                }
            },
            // Nothing was asked yet: nothing to finish.
            _ = shutdown.wait_for(|s| *s) => None,
        }
    }

    /// Serves HTTP/2 on an accepted (and, with `tls`, decrypted)
    /// connection. `tls` carries the SNI name the client sent, if any.
    async fn serve_h2<I>(
        self: Arc<Self>,
        listen: SocketAddr,
        io: I,
        peer: SocketAddr,
        tls: Option<Option<String>>,
        mut removed: watch::Receiver<bool>,
    ) where
        I: Read + Write + Unpin + Send + 'static,
    {
        let Some(ctx) = self.conn_ctx(listen, peer, tls) else {
            return;
        };
        let cfg = &ctx.listener.cfg;
        let idle_timeout = cfg.idle_timeout;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from(cfg.max_header_size).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
        let ctx = Arc::new(ctx);
        let activity = Arc::new(Activity::new());
        let service = {
            let activity = activity.clone();
            service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let ctx = ctx.clone();
                let open = activity.open();
                async move {
                    let req = req.map(ClientBody::H2);
                    // HTTP/2 has no Upgrade: no tunnel comes back.
                    let response = ctx.handle(req).await.response;
                    Ok::<_, Infallible>(response.map(|body| Tracked { body, _open: open }))
                }
            })
        };
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        // The reasons to close gracefully are watched on a task of their
        // own: polled next to `conn`, they would be polled again at every
        // wake-up of a busy connection.
        let mut shutdown = self.shutdown.subscribe();
        let (close, mut closing) = oneshot::channel();
        let _watchdog = AbortOnDrop(tokio::spawn(async move {
            let reason = tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => "shutdown",
                _ = async { let _ = removed.wait_for(|r| *r).await; } => "listener removed",
                _ = activity.idle_for(idle_timeout) => "idle_timeout",
            };
            let _ = close.send(reason);
        }));
        let reason = tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            Ok(reason) = &mut closing => reason,
        };
        // GOAWAY, and open streams finish.
        tracing::debug!(%peer, reason, "closing client connection gracefully");
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// Aborts a task when dropped: a connection's watchdog ends with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connection's requests in flight, for its idle timeout: hyper has no
/// idle timeout for HTTP/2 (pings keep an idle connection alive forever),
/// and for HTTP/1.1 only the header timeout, so sluice closes a connection
/// that has had no request open for `idle_timeout`.
///
/// A request costs two atomics and a clock read, nothing more: the idle task
/// is not told about requests. It sleeps until `idle_timeout` after the last
/// request ended and checks again when it wakes, so it wakes about once per
/// `idle_timeout` however many requests the connection carries.
#[derive(Debug)]
struct Activity {
    open: AtomicUsize,
    /// When a request last ended (or the connection began), in
    /// [`clock::now_ms`] milliseconds.
    last_end: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            last_end: AtomicU64::new(clock::now_ms()),
        }
    }

    fn open(self: &Arc<Self>) -> OpenRequest {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenRequest(self.clone())
    }

    /// Resolves once no request has been open for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        let timeout_ms = clock::ms(timeout);
        let mut deadline = self.last_end.load(Ordering::Acquire) + timeout_ms;
        loop {
            tokio::time::sleep_until(clock::instant_of(deadline).into()).await;
            let now = clock::now_ms();
            if self.open.load(Ordering::Acquire) > 0 {
                // Busy: nothing can be idle for `timeout` before then.
                deadline = now + timeout_ms;
                continue;
            }
            // Read after `open`: a request that ended has stamped this.
            deadline = self.last_end.load(Ordering::Acquire) + timeout_ms;
            if now >= deadline {
                return;
            }
        }
    }
}

/// One request counted in its connection's [`Activity`] until dropped.
#[derive(Debug)]
struct OpenRequest(Arc<Activity>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        // Stamped before the count drops, so the idle task never sees no
        // request open with an older stamp than this request's end.
        self.0.last_end.fetch_max(clock::now_ms(), Ordering::AcqRel);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request open until it ends or is
/// dropped (hyper drops it once sent, or when the stream is reset).
struct Tracked<B> {
    body: B,
    _open: OpenRequest,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Binds a listening socket on `addr` for each of `workers` workers. With
/// more than one, every socket has `SO_REUSEPORT`, so the kernel spreads
/// new connections over the workers (and no worker's accept wakes the
/// others). They are handed over unregistered, for [`Server::serve`] to
/// register each with its worker's runtime.
pub async fn bind(
    addr: SocketAddr,
    workers: usize,
) -> Result<Vec<std::net::TcpListener>, ServerError> {
    let bind_all = || {
        let first = bind_one(addr, workers > 1)?;
        // Port 0: the other workers join the port the first one got.
        let bound = first.local_addr()?;
        let mut sockets = Vec::with_capacity(workers);
        sockets.push(first);
        for _ in 1..workers {
            sockets.push(bind_one(bound, true)?);
        }
        Ok(sockets)
    };
    bind_all().map_err(|source| ServerError::Bind { addr, source })
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

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
