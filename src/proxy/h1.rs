//! One HTTP/1.1 client connection on sluice's own engine ([`crate::http1`]):
//! a single task reads a request head, runs the exchange with the upstream
//! inline, writes the response, and goes back to reading.
//!
//! Idle means empty: between requests the connection holds its socket and
//! nothing else. It waits for the socket to become readable, only then
//! takes a read buffer from its thread's free list, and gives it back once
//! the exchange is over and no pipelined bytes are left in it. The request's
//! body is read from the connection by the request itself
//! ([`H1Body`], which borrows the connection), so no task, channel or copy
//! stands between the client's bytes and the upstream's socket.
//!
//! Timing follows the contract: a request head must be complete within
//! `header_timeout` of the accept or of the end of the previous response.
//! A client that began a head (or never sent one) gets a 408 first; an idle
//! keep-alive connection is closed quietly.

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::prefixed::Prefixed;
use super::service::ConnCtx;
use crate::http1::{Limits, RequestHead, Version};
use crate::upstream::stream::Stream;
use crate::workers::idle::IdleWait;

mod exchange;
mod reader;
mod response;

use exchange::{Next, exchange, refuse};
pub use reader::H1Body;
use reader::Reader;

/// What a client whose request head timed out is told before the close.
pub const REQUEST_TIMEOUT_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The client's socket, in clear or decrypted.
pub type ClientStream = Stream<TlsStream<TcpStream>>;

impl ClientStream {
    /// Ready once the client has sent something, without taking a buffer
    /// to read it into, and without a waiter of its own: the socket keeps
    /// the task's waker. A TLS session may hold decrypted bytes already;
    /// then there is nothing to wait for.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ClientStream::Tcp(tcp) => tcp.poll_read_ready(cx),
            ClientStream::Tls(tls) => {
                let (tcp, session) = tls.get_mut();
                let state = session
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                    return Poll::Ready(Ok(()));
                }
                tcp.poll_read_ready(cx)
            }
        }
    }
}

/// The reasons to end a connection gracefully: shutdown, and a reload
/// removing its listener. A dropped sender counts as set.
pub struct Stop {
    pub shutdown: watch::Receiver<bool>,
    pub removed: watch::Receiver<bool>,
}

impl Stop {
    fn is_set(&self) -> bool {
        *self.shutdown.borrow() || *self.removed.borrow()
    }
}

/// How a listener's settings were when its connection was accepted.
pub struct Settings {
    pub limits: Limits,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The outcome of serving a connection as HTTP/1.1.
pub enum Served {
    Done,
    /// The client sent the HTTP/2 preface (prior knowledge): the stream,
    /// with the bytes read from it put back in front, is HTTP/2's. The
    /// connection's context comes back with it, boxed: this is the output
    /// of the future an idle connection holds, and room for it is kept
    /// beside that future.
    H2(Box<(Prefixed<ClientStream>, ConnCtx)>),
}

/// Why a wait for the next head ended without one, or why the connection
/// will not wait for another.
enum NoHead {
    /// Close without a word.
    Close,
    /// A response said the connection ends with it: shut the stream down.
    Shut,
    /// Answer this, then close.
    Refuse(StatusCode),
    Timeout,
    H2,
}

/// Serves HTTP/1.1 requests on `stream` until the connection ends, one at a
/// time in arrival order (pipelined requests wait in the read buffer).
/// Once its listener's `stop` is set an idle connection closes, a busy one
/// after its response.
///
/// The returned future is what an idle connection's task holds, so it is
/// kept small: an async block rather than an async fn (whose future keeps
/// each argument twice, as passed and as moved into the body), and every
/// state that only lives while a request is in flight is boxed.
pub fn serve(ctx: ConnCtx, stream: ClientStream) -> impl Future<Output = Served> {
    let mut reader = Reader::new(stream);
    async move {
        let mut answered = false;
        let (settings, stop) = (&ctx.listening.settings, &ctx.listening.stop);
        'requests: loop {
            // The exchange's future is made in the match and awaited after
            // it: a head bound across the await would take room in every
            // connection's state.
            // Nothing is awaited while the outcome of an earlier await is
            // still bound by a match: such a value (a request head, the
            // exchange's outcome) would stay in the task's state beside the
            // future it came from. Endings are awaited after the block.
            let ending = 'ending: {
                let busy = match read_head(&mut reader, settings, answered, stop).await {
                    Ok(head) => Box::pin(exchange(&ctx, &mut reader, head)),
                    Err(no_head) => break 'ending no_head,
                };
                answered = true;
                match busy.await {
                    Next::Head => {
                        reader.release();
                        continue 'requests;
                    }
                    Next::Close => NoHead::Shut,
                    Next::Tunnel(tunnel) => {
                        // What the client sent behind its upgrade request
                        // (usually nothing) is copied out, so the read
                        // buffer goes back to the free list: an idle tunnel
                        // holds no buffer.
                        let rest = Bytes::copy_from_slice(&reader.buf);
                        reader.buf.clear();
                        reader.release();
                        // A task of its own: this connection's task, sized
                        // for HTTP, ends, and the tunnel holds only what it
                        // needs. It holds its own shutdown token.
                        tokio::spawn(tunnel.run(Prefixed::new(rest, reader.stream)));
                        return Served::Done;
                    }
                }
            };
            match ending {
                NoHead::Close => {}
                NoHead::Shut => {
                    let _ = reader.stream.shutdown().await;
                }
                NoHead::H2 => {
                    let preface = std::mem::take(&mut reader.buf).freeze();
                    let stream = Prefixed::new(preface, reader.stream);
                    return Served::H2(Box::new((stream, ctx)));
                }
                NoHead::Timeout => {
                    let _ = reader.stream.write_all(REQUEST_TIMEOUT_408).await;
                    let _ = reader.stream.shutdown().await;
                }
                NoHead::Refuse(status) => {
                    // Boxed, as the exchange: rare, and large.
                    let (method, version) = (&Method::GET, Version::Http11);
                    Box::pin(refuse(&ctx, &mut reader.stream, status, method, version)).await;
                    let _ = reader.stream.shutdown().await;
                }
            }
            return Served::Done;
        }
    }
}

/// Waits for and parses the next request head, due within `header_timeout`
/// from now. `answered`: a response went out on this connection, so silence
/// until then is an idle keep-alive connection, closed without a 408. Not an async fn, whose
/// future would keep each argument twice: this one is in every idle
/// connection's state.
///
/// Every wait here, idle or in a head begun, is timed by one [`IdleWait`]
/// (a slot in the worker's registry, not a timer of its own, in a
/// [`HeadTimer`]) and polled by hand beside the socket: this is what every idle connection holds, and a
/// `Sleep` or a stop waiter in it would be most of it.
fn read_head<'a>(
    reader: &'a mut Reader,
    settings: &'a Settings,
    answered: bool,
    stop: &'a Stop,
) -> impl Future<Output = Result<RequestHead, NoHead>> + 'a {
    let deadline = Instant::now() + settings.header_timeout;
    let idle_deadline = if answered {
        deadline.min(Instant::now() + settings.idle_timeout)
    } else {
        deadline
    };
    // Made out here and moved in whole, and polled through one reference:
    // each of its parts captured on its own would take room of its own.
    let mut timer = HeadTimer {
        wait: IdleWait::start(),
        deadline,
        idle_deadline,
        answered,
    };
    async move {
        loop {
            if !reader.buf.is_empty() {
                if !timer.answered && reader.buf[0] == b'P' {
                    let n = reader.buf.len().min(H2_PREFACE.len());
                    if reader.buf[..n] == H2_PREFACE[..n] {
                        if n == H2_PREFACE.len() {
                            return Err(NoHead::H2);
                        }
                        // Part of the preface: read on.
                        poll_fn(|cx| timer.poll_fill(cx, reader, true)).await?;
                        continue;
                    }
                }
                match RequestHead::parse(&mut reader.buf, settings.limits) {
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(e) => return Err(NoHead::Refuse(e.status())),
                }
                poll_fn(|cx| timer.poll_fill(cx, reader, true)).await?;
                continue;
            }
            // Nothing of a request yet: wait holding no buffer.
            reader.release();
            poll_fn(|cx| timer.poll_idle(cx, reader, stop)).await?;
            poll_fn(|cx| timer.poll_fill(cx, reader, false)).await?;
        }
    }
}

/// The deadlines of one wait for a request head, and the slot in the
/// worker's idle registry that times them.
struct HeadTimer {
    wait: IdleWait,
    /// For the whole head (`header_timeout`).
    deadline: Instant,
    /// For its first byte: sooner after a response, by `idle_timeout`.
    idle_deadline: Instant,
    /// A response went out on this connection.
    answered: bool,
}

impl HeadTimer {
    /// Why a connection that sent nothing is closed: an idle keep-alive
    /// connection quietly, one never used with a 408.
    fn silent(&self) -> NoHead {
        if self.answered {
            NoHead::Close
        } else {
            NoHead::Timeout
        }
    }

    /// Ready once the client has sent something (without taking a buffer
    /// to read it into), or with why the connection ends first.
    fn poll_idle(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut Reader,
        stop: &Stop,
    ) -> Poll<Result<(), NoHead>> {
        if let Poll::Ready(ready) = reader.stream.poll_readable(cx) {
            return Poll::Ready(ready.map_err(|_| NoHead::Close));
        }
        if self.wait.poll_until(cx, self.idle_deadline).is_ready() {
            return Poll::Ready(Err(self.silent()));
        }
        // Asked after the wait is armed, so a stop set since wakes this
        // task again. Nothing was asked: nothing to finish.
        if stop.is_set() {
            return Poll::Ready(Err(NoHead::Close));
        }
        Poll::Pending
    }

    /// Reads more into the buffer. Past the deadline, a 408 when a head
    /// was `begun`, else what [`silent`](Self::silent) says.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut Reader,
        begun: bool,
    ) -> Poll<Result<(), NoHead>> {
        if let Poll::Ready(read) = reader.poll_fill(cx) {
            return Poll::Ready(match read {
                Ok(0) | Err(_) => Err(NoHead::Close),
                Ok(_) => Ok(()),
            });
        }
        ready!(self.wait.poll_until(cx, self.deadline));
        Poll::Ready(Err(if begun {
            NoHead::Timeout
        } else {
            self.silent()
        }))
    }
}
