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

use std::io;
use std::pin::Pin;
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
use super::service::{ConnCtx, ListenerCtx};
use crate::http1::{Limits, RequestHead, Version};
use crate::upstream::stream::Stream;

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
    /// The TCP connection under it.
    fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Tcp(tcp) => tcp,
            ClientStream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Makes the close a reset (`SO_LINGER` 0): a body that ends with the
    /// connection was cut short, and an orderly close would say it ended.
    fn reset_on_close(&self) {
        if let Err(e) = self.tcp().set_zero_linger() {
            tracing::debug!(error = %e, "could not make the close a reset");
        }
    }

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

/// Why a wait for the next head ended without one, or why the connection
/// will not wait for another.
enum NoHead {
    /// Close without a word.
    Close,
    /// A response said the connection ends with it: shut the stream down.
    Shut,
    /// As `Shut`, while the client may still be sending: linger.
    Linger,
    /// Answer this, then close.
    Refuse(StatusCode),
    Timeout,
    H2,
}

/// Serves HTTP/1.1 requests on `stream` until the connection ends, one at a
/// time in arrival order (pipelined requests wait in the read buffer).
/// Once its listener's `stop` is set an idle connection closes, a busy one
/// after its response. A client that opens with HTTP/2's preface (prior
/// knowledge) is handed to `h2`, with the bytes read put back in front.
///
/// The returned future is what an idle connection's task holds, so it is
/// kept small: an async block rather than an async fn (whose future keeps
/// each argument twice, as passed and as moved into the body), every state
/// that only lives while a request is in flight boxed, and the wait for a
/// head a hand-made future ([`ReadHead`]). Spawned as a task of its own, it
/// is all that task holds: up to 280 bytes, tokio's task takes 384 bytes
/// (x86_64), past it 512.
pub fn serve<H, F>(ctx: ConnCtx, stream: ClientStream, h2: H) -> impl Future<Output = ()>
where
    H: FnOnce(Prefixed<ClientStream>, ConnCtx) -> F,
    F: Future<Output = ()>,
{
    let mut reader = Reader::new(stream);
    async move {
        let mut answered = false;
        'requests: loop {
            // The exchange's future is made in the match and awaited after
            // it: a head bound across the await would take room in every
            // connection's state.
            // Nothing is awaited while the outcome of an earlier await is
            // still bound by a match: such a value (a request head, the
            // exchange's outcome) would stay in the task's state beside the
            // future it came from. Endings are awaited after the block.
            let ending = 'ending: {
                let busy = match ReadHead::new(&mut reader, &ctx.listening, answered).await {
                    // Written into a box allocated first: `Box::pin` of the
                    // future would build its ~4 KB on the stack and copy it
                    // over, every request.
                    Ok(head) => Box::into_pin(Box::write(
                        Box::new_uninit(),
                        exchange(&ctx, &mut reader, head),
                    )),
                    Err(no_head) => break 'ending no_head,
                };
                answered = true;
                match busy.await {
                    Next::Head => {
                        reader.release();
                        continue 'requests;
                    }
                    Next::Close => NoHead::Shut,
                    Next::Linger => NoHead::Linger,
                    Next::Abort => NoHead::Close,
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
                        return;
                    }
                }
            };
            match ending {
                NoHead::Close => {}
                NoHead::Shut => {
                    let _ = reader.stream.shutdown().await;
                }
                NoHead::Linger => {
                    reader.release();
                    Box::pin(linger(&mut reader.stream)).await;
                }
                NoHead::H2 => {
                    let preface = std::mem::take(&mut reader.buf).freeze();
                    let stream = Prefixed::new(preface, reader.stream);
                    // Boxed: large, and no idle HTTP/1.1 connection needs
                    // room for it.
                    Box::pin(h2(stream, ctx)).await;
                }
                NoHead::Timeout => {
                    let _ = reader.stream.write_all(REQUEST_TIMEOUT_408).await;
                    let _ = reader.stream.shutdown().await;
                }
                NoHead::Refuse(status) => {
                    // Boxed, as the exchange: rare, and large.
                    let (method, version) = (&Method::GET, Version::Http11);
                    Box::pin(refuse(&ctx, &mut reader.stream, status, method, version)).await;
                    // The rest of a head too large may still be coming.
                    reader.release();
                    Box::pin(linger(&mut reader.stream)).await;
                }
            }
            return;
        }
    }
}

/// How long a closing connection goes on reading what its client still
/// sends, and the longest wait for more of it (nginx's `lingering_time`
/// and `lingering_timeout` are 30 s and 5 s).
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_WAIT: Duration = Duration::from_secs(2);

/// Ends a connection whose client may still be sending (a body refused or
/// left unread, a head too large) as nginx's lingering close does: shut
/// the writing side down, then read and drop what comes until the client
/// closes, is quiet for [`LINGER_WAIT`], or [`LINGER_TIME`] passes. Closing
/// with bytes unread would make the kernel answer them with a reset, which
/// can destroy the response (a 413) before the client has read it.
async fn linger(stream: &mut ClientStream) {
    use tokio::io::AsyncReadExt;
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = Instant::now() + LINGER_TIME;
    let mut scratch = super::buffers::take_read();
    loop {
        scratch.clear();
        let wait = until.min(Instant::now() + LINGER_WAIT);
        match tokio::time::timeout_at(wait, stream.read_buf(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => break,
        }
    }
    super::buffers::give_back(scratch);
}

/// Waits for and parses the next request head, due within `header_timeout`
/// from its start; after a response (`answered`), silence until then is an
/// idle keep-alive connection, closed without a 408, and the first byte is
/// due within `idle_timeout` too.
///
/// A future of its own rather than an async block: it is part of every
/// idle connection's state, and an async block would keep each reference
/// and the state of each wait beside it. Every wait here, idle or in a head
/// begun, is timed by the connection's [`IdleWait`](crate::workers::idle::IdleWait)
/// (a slot in the worker's registry, not a timer of its own, kept by the
/// reader for the connection's life) and polled by hand beside the socket, with no
/// stop waiter of its own either: a `Sleep` or a watch waiter would be most
/// of what an idle connection holds.
struct ReadHead<'a> {
    reader: &'a mut Reader,
    on: &'a ListenerCtx,
    /// When the wait began: the deadlines count from here.
    since: Instant,
    /// A response went out on this connection.
    answered: bool,
    phase: Phase,
}

/// Where a [`ReadHead`] is.
#[derive(Clone, Copy)]
enum Phase {
    /// Look at what the buffer holds.
    Look,
    /// Nothing of a request yet: wait for the client, holding no buffer.
    Idle,
    /// Read more; `begun`: part of a head is in the buffer.
    Fill { begun: bool },
}

impl<'a> ReadHead<'a> {
    fn new(reader: &'a mut Reader, on: &'a ListenerCtx, answered: bool) -> Self {
        ReadHead {
            reader,
            on,
            since: Instant::now(),
            answered,
            phase: Phase::Look,
        }
    }

    /// For the whole head (`header_timeout`).
    fn deadline(&self) -> Instant {
        self.since + self.on.settings.header_timeout
    }

    /// For its first byte: sooner after a response, by `idle_timeout`.
    fn idle_deadline(&self) -> Instant {
        let deadline = self.deadline();
        if self.answered {
            deadline.min(self.since + self.on.settings.idle_timeout)
        } else {
            deadline
        }
    }

    /// Why a connection that sent nothing is closed: an idle keep-alive
    /// connection quietly, one never used with a 408.
    fn silent(&self) -> NoHead {
        if self.answered {
            NoHead::Close
        } else {
            NoHead::Timeout
        }
    }

    /// What the buffer holds: a head, an error, HTTP/2's preface, or the
    /// phase to go on with.
    fn look(&mut self) -> Result<Option<RequestHead>, NoHead> {
        let buf = &mut self.reader.buf;
        if buf.is_empty() {
            self.reader.release();
            self.phase = Phase::Idle;
            return Ok(None);
        }
        self.phase = Phase::Fill { begun: true };
        if !self.answered && buf[0] == b'P' {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] == H2_PREFACE[..n] {
                if n == H2_PREFACE.len() {
                    return Err(NoHead::H2);
                }
                // Part of the preface: read on.
                return Ok(None);
            }
        }
        match RequestHead::parse(buf, self.on.settings.limits) {
            Ok(head) => Ok(head),
            Err(e) => Err(NoHead::Refuse(e.status())),
        }
    }

    /// Ready once the client has sent something (without taking a buffer
    /// to read it into), or with why the connection ends first.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), NoHead>> {
        if let Poll::Ready(ready) = self.reader.stream.poll_readable(cx) {
            return Poll::Ready(ready.map_err(|_| NoHead::Close));
        }
        if self
            .reader
            .wait
            .poll_until(cx, self.idle_deadline())
            .is_ready()
        {
            return Poll::Ready(Err(self.silent()));
        }
        // Asked after the wait is armed, so a stop set since wakes this
        // task again. Nothing was asked: nothing to finish.
        if self.on.stop.is_set() {
            return Poll::Ready(Err(NoHead::Close));
        }
        Poll::Pending
    }

    /// Reads more into the buffer. Past the deadline, a 408 when a head
    /// was `begun`, else what [`silent`](Self::silent) says.
    fn poll_fill(&mut self, cx: &mut Context<'_>, begun: bool) -> Poll<Result<(), NoHead>> {
        if let Poll::Ready(read) = self.reader.poll_fill(cx) {
            return Poll::Ready(match read {
                Ok(0) | Err(_) => Err(NoHead::Close),
                Ok(_) => Ok(()),
            });
        }
        ready!(self.reader.wait.poll_until(cx, self.deadline()));
        Poll::Ready(Err(if begun {
            NoHead::Timeout
        } else {
            self.silent()
        }))
    }
}

impl Future for ReadHead<'_> {
    type Output = Result<RequestHead, NoHead>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this.phase {
                Phase::Look => {
                    if let Some(head) = this.look()? {
                        return Poll::Ready(Ok(head));
                    }
                }
                Phase::Idle => {
                    ready!(this.poll_idle(cx))?;
                    this.phase = Phase::Fill { begun: false };
                }
                Phase::Fill { begun } => {
                    ready!(this.poll_fill(cx, begun))?;
                    this.phase = Phase::Look;
                }
            }
        }
    }
}
