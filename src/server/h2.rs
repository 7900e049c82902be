//! Serving HTTP/2 on an accepted connection, with its limits and its
//! graceful close.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

use super::Server;
use super::cancels::{Cancels, MAX_CANCELLED_STREAMS};
use super::idle::{Activity, Tracked};
use crate::proxy::ConnCtx;
use crate::proxy::body::ClientBody;

/// HTTP/2 limits, set explicitly rather than left to library defaults.
///
/// The contract: at most 100 concurrent streams, and a client that resets,
/// errors or floods streams gets GOAWAY within 100 streams or frames.
/// - Rapid reset (CVE-2023-44487): streams the client opens and resets before
///   they are answered; more than 20 pending at once is GOAWAY.
/// - "MadeYouReset" (CVE-2025-8671): streams the server itself must reset
///   because the client broke the protocol on them; the 100th is GOAWAY.
/// - Rapid reset with the resets spaced out, so that sluice has accepted
///   each stream (and sent it upstream) before its RST_STREAM: see
///   [`Cancels`]; more than 50 cancelled, and more than half of the streams
///   opened, is GOAWAY.
/// - CONTINUATION flood (CVE-2024-27316): h2 caps a header block at
///   `max_header_list_size` (our `max_header_size`) and at a handful of
///   CONTINUATION frames (5 for 64 KiB), then GOAWAY.
/// - A peer that stops answering pings is dropped after interval + timeout.
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 99;
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

impl Server {
    /// Serves HTTP/2 on an accepted (and perhaps decrypted) connection.
    /// Needs nothing of the server but what `ctx` carries, so a connection
    /// handed over from HTTP/1.1 need not keep the server besides.
    pub(super) async fn serve_h2<I>(ctx: ConnCtx, io: I)
    where
        I: Read + Write + Unpin + Send + 'static,
    {
        let peer = ctx.peer;
        let mut removed = ctx.listening.stop.removed.clone();
        let mut shutdown = ctx.listening.stop.shutdown.clone();
        let cfg = &ctx.listening.listener.cfg;
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
        let cancels = Arc::new(Cancels::default());
        let service = {
            let activity = activity.clone();
            let cancels = cancels.clone();
            service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let ctx = ctx.clone();
                let open = activity.open();
                let handling = cancels.open();
                async move {
                    let req = req.map(ClientBody::H2);
                    // HTTP/2 has no Upgrade: no tunnel comes back.
                    let response = ctx.handle(req).await.response;
                    handling.answered();
                    Ok::<_, Infallible>(response.map(|body| Tracked { body, _open: open }))
                }
            })
        };
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        // The reasons to close gracefully are watched on a task of their
        // own: polled next to `conn`, they would be polled again at every
        // wake-up of a busy connection.
        let (close, mut closing) = oneshot::channel();
        let _watchdog = AbortOnDrop(tokio::spawn({
            let cancels = cancels.clone();
            async move {
                let reason = tokio::select! {
                    _ = async { let _ = shutdown.wait_for(|s| *s).await; } => Close::Shutdown,
                    _ = async { let _ = removed.wait_for(|r| *r).await; } => Close::Removed,
                    _ = activity.idle_for(idle_timeout) => Close::Idle,
                    () = cancels.flooded(MAX_CANCELLED_STREAMS) => Close::Cancels,
                };
                let _ = close.send(reason);
            }
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
        conn.as_mut().graceful_shutdown();
        if let Some(reason) = reason.quiet() {
            tracing::debug!(%peer, reason, "closing client connection gracefully");
            let _ = conn.await;
            return;
        }
        let (cancelled, opened) = cancels.counts();
        tracing::warn!(%peer, cancelled, opened, "HTTP/2 client cancels most of its streams (rapid reset): GOAWAY");
        // hyper's graceful GOAWAY admits new streams until the client
        // answers its PING: one that never does, and cancels on, is
        // dropped. Polled beside `conn` only now: the connection is closing.
        tokio::select! {
            _ = conn.as_mut() => {}
            () = cancels.flooded(cancelled + MAX_CANCELLED_STREAMS) => {
                tracing::debug!(%peer, "client kept cancelling streams after GOAWAY: connection dropped");
            }
        }
    }
}

/// Why a connection is closed gracefully.
enum Close {
    Shutdown,
    /// A reload removed its listener.
    Removed,
    Idle,
    /// The client cancels too many streams ([`Cancels`]).
    Cancels,
}

impl Close {
    /// The reason for the debug log, for the ordinary reasons; `None` for
    /// a client's abuse, which is a warning and is watched on.
    fn quiet(&self) -> Option<&'static str> {
        match self {
            Close::Shutdown => Some("shutdown"),
            Close::Removed => Some("listener removed"),
            Close::Idle => Some("idle_timeout"),
            Close::Cancels => None,
        }
    }
}

/// Aborts a task when dropped: a connection's watchdog ends with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
