//! Upgrade tunnels (WebSocket and any other `Upgrade` but `h2c`): once the
//! upstream answers 101 with the protocol the client asked for, both
//! connections stop being HTTP and bytes are copied both ways until either
//! side closes or the tunnel idles for the listener's `idle_timeout`.
//!
//! A tunnel counts in its server's `tunnels` (not `in_flight`: the request's
//! lease ends at the 101), holds a shutdown [`Token`] because hyper's graceful
//! shutdown does not know upgraded connections, and is not cut by a reload:
//! a server removed from the config keeps its open tunnels until they close,
//! unless the operator gave it a drain deadline, which then cuts them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::access::AccessEntry;
use super::conn::Conn;
use super::prefixed::Prefixed;
use crate::lifecycle::Token;
use crate::runtime::{ServerState, clock};

/// Whether `response` accepts the upgrade to `requested`: a 101 whose
/// `Upgrade` names the same protocol (compared without case).
pub fn accepted<B>(requested: &HeaderValue, response: &Response<B>) -> bool {
    response.status() == StatusCode::SWITCHING_PROTOCOLS
        && response
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|offered| {
                offered
                    .as_bytes()
                    .eq_ignore_ascii_case(requested.as_bytes())
            })
}

/// Counts one open tunnel on its server for as long as it lives.
struct TunnelGuard(Arc<ServerState>);

impl TunnelGuard {
    fn open(server: Arc<ServerState>) -> Self {
        server.tunnel_opened();
        TunnelGuard(server)
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.tunnel_closed();
    }
}

/// How a tunnel ended, for the access log.
#[derive(Debug, Clone, Copy)]
pub struct TunnelEnd {
    /// Bytes from the upstream to the client.
    pub down: u64,
    /// Bytes from the client to the upstream.
    pub up: u64,
    /// Closed by either side (true), or cut by an error or the idle timeout.
    pub clean: bool,
}

/// Everything a tunnel needs once the 101 has been decided on.
pub struct Tunnel {
    pub client: OnUpgrade,
    /// The server connection, with what the server sent right behind its
    /// 101 read again first; a tunnelled connection never goes back to the
    /// pool.
    pub upstream: Prefixed<Conn>,
    pub server: Arc<ServerState>,
    pub token: Token,
    pub idle_timeout: Duration,
    /// Logged with the 101 when the tunnel closes.
    pub log: Option<Box<AccessEntry>>,
}

impl Tunnel {
    /// Runs the tunnel on its own task; it is counted from now on.
    pub fn spawn(self) {
        let guard = TunnelGuard::open(self.server.clone());
        tokio::spawn(async move {
            let _guard = guard;
            let end = self.run().await;
            tracing::debug!(?end, "tunnel closed");
        });
    }

    async fn run(self) -> TunnelEnd {
        let Tunnel {
            client,
            upstream,
            server,
            token,
            idle_timeout,
            log,
        } = self;
        // Held until the line is logged, so shutdown waits for it.
        let _token = token;
        let end = relay(client, upstream, &server, idle_timeout).await;
        if let Some(entry) = log {
            entry.log(StatusCode::SWITCHING_PROTOCOLS, end.down, end.clean);
        }
        end
    }
}

/// Copies bytes both ways once the client's side has switched protocols.
async fn relay<U>(
    client: OnUpgrade,
    upstream: U,
    server: &ServerState,
    idle_timeout: Duration,
) -> TunnelEnd
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let client = match client.await {
        Ok(client) => client,
        Err(error) => {
            tracing::debug!(%error, "upgrade did not complete");
            return TunnelEnd {
                down: 0,
                up: 0,
                clean: false,
            };
        }
    };
    let last = Arc::new(AtomicU64::new(clock::now_ms()));
    let mut client = Metered::new(TokioIo::new(client), last.clone());
    let mut upstream = Metered::new(upstream, last.clone());
    let clean = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => copied.is_ok(),
        _ = idle(&last, idle_timeout) => {
            tracing::debug!(?idle_timeout, "tunnel idle: closing it");
            false
        }
        _ = server.retired() => {
            tracing::info!("tunnel cut: its server was removed and its drain deadline passed");
            false
        }
    };
    TunnelEnd {
        down: upstream.read,
        up: client.read,
        clean,
    }
}

/// Resolves once no byte has moved either way for `timeout`.
async fn idle(last: &AtomicU64, timeout: Duration) {
    loop {
        let deadline = last.load(Ordering::Relaxed) + clock::ms(timeout);
        if clock::now_ms() >= deadline {
            return;
        }
        tokio::time::sleep_until(clock::instant_of(deadline).into()).await;
    }
}

/// One side of a tunnel: counts the bytes read from it and stamps the
/// tunnel's last activity.
struct Metered<T> {
    io: T,
    read: u64,
    last: Arc<AtomicU64>,
}

impl<T> Metered<T> {
    fn new(io: T, last: Arc<AtomicU64>) -> Self {
        Metered { io, read: 0, last }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read += n as u64;
            this.last.store(clock::now_ms(), Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, upgrade: Option<&'static str>) -> Response<()> {
        let mut builder = Response::builder().status(status);
        if let Some(upgrade) = upgrade {
            builder = builder.header(header::UPGRADE, upgrade);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn only_a_101_with_the_requested_protocol_is_a_tunnel() {
        let ws = HeaderValue::from_static("websocket");
        assert!(accepted(&ws, &response(101, Some("WebSocket"))));
        assert!(!accepted(&ws, &response(101, Some("foo"))));
        assert!(!accepted(&ws, &response(101, None)));
        assert!(!accepted(&ws, &response(200, Some("websocket"))));
    }
}
