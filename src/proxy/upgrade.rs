//! Upgrade tunnels (WebSocket and any other `Upgrade` but `h2c`): once the
//! upstream answers 101 with the protocol the client asked for, both
//! connections stop being HTTP and [`relay`] copies bytes both ways.
//!
//! A tunnel counts in its server's `tunnels` (not `in_flight`: the request's
//! lease ends at the 101), holds a shutdown [`Token`] so graceful shutdown
//! waits for it as for a request, and is not cut by a reload.
//! Two things end it from outside, watched in the tunnel's own task (one
//! task per tunnel):
//! - its server's drain deadline passing: a WebSocket gets Close frames
//!   (`close_code` to the client, 1001 to the server), other tunnels are cut;
//! - graceful shutdown: a WebSocket still open as `shutdown_timeout` nears
//!   gets Close 1001 both ways in time to close cleanly; other tunnels run
//!   on until `shutdown_timeout` cuts them, as before.
//!
//! The closes of one server are spread over `close_spread`: tunnel `i` of
//! `n` waits `i * close_spread / n`, so its clients do not all reconnect in
//! the same instant.

use std::sync::Arc;
use std::time::Duration;

use std::task::Poll;

use futures_util::FutureExt;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::access::AccessEntry;
use super::prefixed::Prefixed;
use super::tunnel::{CLOSE_GRACE, Protocol, Stop, TunnelEnd, relay};
use crate::config;
use crate::lifecycle::{ShutdownSignal, Token};
use crate::runtime::{CloseCause, ServerState, clock};
use crate::upstream::Conn;
use crate::workers::idle::IdleWait;

/// The code sent both ways when sluice shuts down: 1001, Going Away.
const GOING_AWAY: u16 = 1001;

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

/// What the 101 switched to.
pub fn protocol<B>(response: &Response<B>) -> Protocol {
    let websocket = response
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if websocket {
        Protocol::WebSocket
    } else {
        Protocol::Other
    }
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

/// What governs a tunnel once both sides have switched: whose it is, what
/// it speaks, and when it must end.
pub struct Rules {
    pub server: Arc<ServerState>,
    pub protocol: Protocol,
    /// The upstream's `[websocket]` settings as the tunnel opened.
    pub websocket: config::WebSocket,
    pub idle_timeout: Duration,
}

/// Everything a tunnel needs once the 101 has been decided on, but the
/// client's side, which the client connection brings once the 101 is
/// written.
pub struct Tunnel {
    upstream: Prefixed<Conn>,
    rules: Rules,
    token: Token,
    /// Logged with the 101 when the tunnel closes.
    log: Option<Box<AccessEntry>>,
    guard: TunnelGuard,
}

impl Tunnel {
    /// A tunnel about to open: counted on its server from now on, so the
    /// count is right by the time the client sees the 101.
    pub fn open(
        upstream: Prefixed<Conn>,
        rules: Rules,
        token: Token,
        log: Option<Box<AccessEntry>>,
    ) -> Tunnel {
        Tunnel {
            guard: TunnelGuard::open(rules.server.clone()),
            upstream,
            rules,
            token,
            log,
        }
    }

    /// Relays between `client` (the client's connection, with what it sent
    /// past its request put back in front) and the server until the tunnel
    /// ends.
    ///
    /// The future is all an idle tunnel costs besides its sockets, so the
    /// relay is built before it (an async fn would keep its arguments and
    /// what it moves into the relay besides the relay), and what follows
    /// the relay is a `map` on it: an async block awaiting the relay would
    /// hold it twice, as captured and as awaited.
    pub fn run<C>(self, client: Prefixed<C>) -> impl Future<Output = ()>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let Tunnel {
            upstream,
            rules,
            token,
            log,
            guard,
        } = self;
        let relay = supervise(client, upstream, &rules, &token);
        // What is kept for the end, boxed: in the closure it would take
        // three words of every idle tunnel's task, enough to put the task
        // in tokio's next size (512 bytes rather than 384).
        let finish = Box::new((log, token, guard));
        relay.map(move |end| {
            let (log, token, guard) = *finish;
            if let Some(entry) = log {
                entry.log(StatusCode::SWITCHING_PROTOCOLS, end.down, end.clean);
            }
            tracing::debug!(
                down = end.down,
                up = end.up,
                clean = end.clean,
                "tunnel closed"
            );
            // Held until the line is logged, so shutdown waits for it.
            drop(token);
            drop(guard);
        })
    }
}

/// Relays between two switched streams until the tunnel ends, and ends it
/// when sluice must: at its server's drain deadline, or at the graceful
/// shutdown `token` belongs to (a WebSocket). Whoever switched the
/// protocols calls it with the two streams.
pub fn supervise<C, U>(
    client: Prefixed<C>,
    upstream: Prefixed<U>,
    rules: &Rules,
    token: &Token,
) -> impl Future<Output = TunnelEnd> + use<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let orders = watch(
        rules.server.clone(),
        rules.protocol,
        rules.websocket,
        token.shutdown_signal(),
    );
    relay(client, upstream, rules.protocol, rules.idle_timeout, orders)
}

/// Why a tunnel must end, as [`watch`] finds it.
enum Reason {
    Drain,
    /// Graceful shutdown, with its `shutdown_timeout`.
    Shutdown(Duration),
}

/// Waits for a reason to end the tunnel from outside, takes its place in
/// its server's line of closes, and gives the order when its turn comes.
///
/// This is in every idle tunnel's state, so the wait for a reason holds no
/// timer and no waiter: an [`IdleWait`] in the worker's registry wakes it
/// at the drain deadline and whenever a reason to stop changes (a drain
/// set or ended, shutdown begun). The sleeps of a tunnel closing are boxed,
/// so they take no room in the tunnels that never close.
///
/// Not an async fn: its future would keep each argument twice.
fn watch(
    server: Arc<ServerState>,
    protocol: Protocol,
    websocket: config::WebSocket,
    shutdown: ShutdownSignal,
) -> impl Future<Output = Stop> {
    let mut wait = IdleWait::start();
    async move {
        let cause = loop {
            let reason = std::future::poll_fn(|cx| {
                // Armed before the reasons are read, so that one set in
                // between wakes the task again.
                match server.drain_deadline_ms() {
                    Some(deadline) => {
                        let at = Instant::from_std(clock::instant_of(deadline));
                        if wait.poll_until(cx, at).is_ready() {
                            return Poll::Ready(Reason::Drain);
                        }
                    }
                    None => wait.wait_for_stop(cx),
                }
                if server
                    .drain_deadline_ms()
                    .is_some_and(|deadline| clock::now_ms() >= deadline)
                {
                    return Poll::Ready(Reason::Drain);
                }
                // Other tunnels run on until shutdown_timeout, as requests do.
                if protocol == Protocol::WebSocket
                    && let Some(timeout) = shutdown.begun()
                {
                    return Poll::Ready(Reason::Shutdown(timeout));
                }
                Poll::Pending
            })
            .await;
            let (cause, spread) = match reason {
                Reason::Drain => (CloseCause::Drain, websocket.close_spread),
                Reason::Shutdown(timeout) => {
                    // A tunnel gets until shutdown_timeout to end on its
                    // own, as a request does; a WebSocket still open then
                    // is closed just before, so its client sees a Close,
                    // not a reset. The closes end CLOSE_GRACE before the
                    // timeout, spread over at most half of what is left.
                    let window = timeout.saturating_sub(CLOSE_GRACE);
                    let spread = websocket.close_spread.min(window / 2);
                    Box::pin(tokio::time::sleep(window - spread)).await;
                    (CloseCause::Shutdown, spread)
                }
            };
            let (slot, tunnels) = server.close_slot(cause);
            let turn = spread.mul_f64(f64::from(slot) / f64::from(tunnels));
            Box::pin(tokio::time::sleep(turn)).await;
            // An operator who ended the drain meanwhile keeps the tunnel open.
            if cause == CloseCause::Shutdown || server.drain_deadline_ms().is_some() {
                break cause;
            }
        };
        let (stop, code) = match (protocol, cause) {
            (Protocol::Other, _) => (Stop::Cut, None),
            (Protocol::WebSocket, CloseCause::Drain) => (
                Stop::Close {
                    client: websocket.close_code,
                    server: GOING_AWAY,
                },
                Some(websocket.close_code),
            ),
            (Protocol::WebSocket, CloseCause::Shutdown) => (
                Stop::Close {
                    client: GOING_AWAY,
                    server: GOING_AWAY,
                },
                Some(GOING_AWAY),
            ),
        };
        tracing::debug!(cause = cause.as_str(), ?code, "closing a tunnel");
        // Polled by the relay, which acts on it at once.
        server.note_closed_tunnel(cause, code);
        stop
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

    fn output_size<F, A, B, R>(_: F) -> usize
    where
        F: FnOnce(A, B) -> R,
    {
        std::mem::size_of::<R>()
    }

    fn output_size4<F, A, B, C, D, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// An idle tunnel's task holds the relay and, boxed, the watch for a
    /// reason to end it: neither holds a timer or a waiter of its own.
    #[test]
    fn an_idle_tunnel_holds_no_timer_or_waiter() {
        use crate::proxy::h1::ClientStream;
        let tunnel = output_size(Tunnel::run::<ClientStream>);
        let watch = output_size4(watch);
        eprintln!("tunnel future {tunnel} bytes, its watch {watch} (boxed)");
        // A tokio Sleep alone is 112 bytes. Up to 280 bytes of future,
        // tokio's task cell (128-byte aligned, 104 bytes besides the
        // future) takes 384, up to 408 it takes 512.
        assert!(tunnel <= 280, "tunnel {tunnel} bytes");
        assert!(watch <= 128, "watch {watch} bytes");
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
