//! The byte relay of an upgrade tunnel: copies both ways between any two
//! streams until both sides are done, the tunnel idles out, or sluice is told
//! to end it.
//!
//! It knows nothing of HTTP: whoever switched protocols hands it the two
//! streams. A WebSocket tunnel follows the frames of both directions
//! ([`FrameTracker`]), so that when told to close it can finish the frame
//! being copied, send a Close frame at the boundary, and wait for the peer's
//! Close before closing TCP: clients see a clean close with a code they can
//! act on (reconnect now, elsewhere) instead of a reset.
//!
//! Each direction holds a buffer only while bytes move ([`Buffer`]): an idle
//! tunnel costs its two sockets and this state, nothing more.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::buffers::Buffer;
use super::prefixed::Prefixed;
use super::websocket::{CloseFrame, FrameTracker};
use crate::runtime::clock;
use crate::workers::idle::IdleWait;

/// How long a closing WebSocket tunnel waits for the peers' Close frames
/// (and for a frame being copied to end) before closing TCP anyway.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the two streams speak once switched, as far as the relay cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    WebSocket,
    /// Anything else: opaque bytes.
    Other,
}

/// An order to end a running tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Close both connections now.
    Cut,
    /// Close a WebSocket: a Close frame with `client` toward the client and
    /// one with `server` toward the server, each at the next frame boundary
    /// of its direction. Other protocols are cut.
    Close { client: u16, server: u16 },
}

/// How a tunnel ended, for the access log.
#[derive(Debug, Clone, Copy)]
pub struct TunnelEnd {
    /// Bytes from the upstream to the client.
    pub down: u64,
    /// Bytes from the client to the upstream.
    pub up: u64,
    /// Closed by both sides (true), or cut by an error, the idle timeout or
    /// an order.
    pub clean: bool,
}

/// Copies between `client` and `upstream` until both directions have ended,
/// each stream's bytes put back in front (read past the switch) first,
/// nothing has moved either way for `idle_timeout`, or `stop` resolves
/// with an order. `stop` is polled in the relay's own task (a task of its
/// own would cost an idle tunnel another task and a channel).
///
/// The future is the relay's state itself, with no async block around it:
/// it is all an idle tunnel's task holds besides what comes after it, and a
/// block would add its own state and a copy of each argument.
pub fn relay<C, U>(
    client: Prefixed<C>,
    upstream: Prefixed<U>,
    protocol: Protocol,
    idle_timeout: Duration,
    stop: impl Future<Output = Stop>,
) -> impl Future<Output = TunnelEnd>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let websocket = protocol == Protocol::WebSocket;
    // The bytes put back go into the directions' buffers, as if just read:
    // the relay holds the bare streams, not a (mostly empty) prefix each.
    let (client_rest, client) = client.into_parts();
    let (upstream_rest, upstream) = upstream.into_parts();
    Relay {
        client,
        upstream,
        // Pinned on the heap: `Relay` stays `Unpin`, and small.
        stop: Box::pin(stop),
        websocket,
        // Past 49 days, as good as never.
        idle_ms: u32::try_from(clock::ms(idle_timeout)).unwrap_or(u32::MAX),
        up: Direction::new(websocket, &client_rest),
        down: Direction::new(websocket, &upstream_rest),
        last: clock::now_ms(),
        idle: IdleWait::start(),
        ordered: false,
        finishing: false,
        grace: None,
    }
}

/// A running tunnel's state, all of it in one place.
struct Relay<C, U, S> {
    client: C,
    upstream: U,
    stop: Pin<Box<S>>,
    websocket: bool,
    /// `idle_timeout`, in milliseconds: narrow, as every idle tunnel holds
    /// it.
    idle_ms: u32,
    /// Client to upstream.
    up: Direction,
    down: Direction,
    /// When bytes last moved, in [`clock::now_ms`] milliseconds.
    last: u64,
    /// A slot in the worker's idle registry, not a timer of its own: this
    /// is in every idle tunnel's state.
    idle: IdleWait,
    /// `stop` has given its order.
    ordered: bool,
    /// The WebSocket closed cleanly: both write sides are being shut down
    /// (within `grace`).
    finishing: bool,
    /// How long a WebSocket being closed has left to finish its close.
    grace: Option<Pin<Box<Sleep>>>,
}

impl<C, U, S> Future for Relay<C, U, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    S: Future<Output = Stop>,
{
    type Output = TunnelEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TunnelEnd> {
        let this = self.get_mut();
        if !this.finishing {
            let clean = ready!(this.poll_relay(cx));
            if !(clean && this.grace.is_some()) {
                return Poll::Ready(this.end(clean));
            }
            // Each peer has its Close answered; a FIN after it is what RFC
            // 6455 section 7.1.1 asks of the server side, within a grace of
            // its own.
            this.finishing = true;
            this.grace = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
        }
        if this.poll_shutdowns(cx).is_ready()
            || this
                .grace
                .as_mut()
                .is_none_or(|grace| grace.as_mut().poll(cx).is_ready())
        {
            return Poll::Ready(this.end(true));
        }
        Poll::Pending
    }
}

impl<C, U, S> Relay<C, U, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    S: Future<Output = Stop>,
{
    fn end(&self, clean: bool) -> TunnelEnd {
        TunnelEnd {
            down: self.down.bytes,
            up: self.up.bytes,
            clean,
        }
    }

    /// Shuts down the client's write side, then the server's, errors
    /// ignored: the tunnel is over either way. Each direction's `shut`
    /// says its sink is done.
    fn poll_shutdowns(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.down.shut {
            ready!(Pin::new(&mut self.client).poll_shutdown(cx)).ok();
            self.down.shut = true;
        }
        if !self.up.shut {
            ready!(Pin::new(&mut self.upstream).poll_shutdown(cx)).ok();
            self.up.shut = true;
        }
        Poll::Ready(())
    }

    /// Ready with whether the tunnel ended cleanly.
    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let Relay {
            client,
            upstream,
            stop,
            websocket,
            idle_ms,
            up,
            down,
            last,
            idle,
            ordered,
            grace,
            finishing: _,
        } = self;
        if !*ordered && let Poll::Ready(order) = stop.as_mut().poll(cx) {
            *ordered = true;
            match order {
                Stop::Close { client, server } if *websocket => {
                    up.close_with(CloseFrame::to_server(server));
                    down.close_with(CloseFrame::to_client(client));
                    *grace = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
                }
                _ => return Poll::Ready(false),
            }
        }
        let up_done = up.poll(cx, client, upstream, last);
        let down_done = down.poll(cx, upstream, client, last);
        match (up_done, down_done) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => {
                tracing::debug!(error = %e, "tunnel ended with an error");
                return Poll::Ready(false);
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(true),
            _ => {}
        }
        if grace.is_some() && up.closed() && down.closed() {
            // Both Close frames went out and both peers answered: the
            // WebSocket is closed; TCP goes with it.
            return Poll::Ready(true);
        }
        if let Some(grace) = grace.as_mut()
            && grace.as_mut().poll(cx).is_ready()
        {
            tracing::debug!("tunnel close: the close handshake did not finish in time");
            return Poll::Ready(false);
        }
        let deadline = clock::instant_of(*last + u64::from(*idle_ms));
        if idle.poll_until(cx, Instant::from_std(deadline)).is_ready() {
            tracing::debug!(idle_ms = *idle_ms, "tunnel idle: closing it");
            return Poll::Ready(false);
        }
        Poll::Pending
    }
}

/// One direction of a tunnel: reads from its source, writes to its sink.
struct Direction {
    /// Read but not yet written: `buf[start..end]`. Narrow, as are the
    /// fields below, because every idle tunnel holds two of these.
    buf: Option<Buffer>,
    start: u32,
    end: u32,
    /// Written since the last flush.
    unflushed: bool,
    /// The source has ended.
    eof: bool,
    /// The sink's write side is shut down: this direction is over.
    shut: bool,
    bytes: u64,
    /// The frames gone through, for a WebSocket.
    frames: Option<FrameTracker>,
    /// A Close frame to send at the next boundary, and how much of it went.
    close: Option<(CloseFrame, u8)>,
    /// Past our Close frame nothing more may be sent this way: what the
    /// source still sends is read (to see its own Close) and dropped.
    swallow: bool,
}

impl Direction {
    /// A direction whose source's first bytes, read already, are `rest`.
    fn new(websocket: bool, rest: &[u8]) -> Direction {
        Direction {
            buf: (!rest.is_empty()).then(|| Buffer::holding(rest)),
            start: 0,
            end: rest.len() as u32,
            unflushed: false,
            eof: false,
            shut: false,
            bytes: rest.len() as u64,
            frames: websocket.then(FrameTracker::default),
            close: None,
            swallow: false,
        }
    }

    /// Sends `frame` at the next boundary, unless a Close already went this
    /// way (a peer closing on its own: a second one would break the
    /// protocol) or the source has ended (its sink is being shut down).
    fn close_with(&mut self, frame: CloseFrame) {
        if self.eof || self.frames.is_some_and(|f| f.close_seen()) {
            self.swallow = true;
        } else {
            self.close = Some((frame, 0));
        }
    }

    /// Our Close went out and the source has sent its own (or is gone).
    fn closed(&self) -> bool {
        self.close.is_none()
            && self.swallow
            && (self.eof || self.frames.is_some_and(|f| f.close_seen()))
    }

    /// Moves bytes until the source or the sink would block; ready once the
    /// source has ended and the sink is shut down.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut R,
        sink: &mut W,
        last: &mut u64,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if let Some(buf) = &self.buf
                && self.start < self.end
            {
                let pending = &buf[self.start as usize..self.end as usize];
                let allowed = match (&self.frames, &self.close) {
                    // A frame being copied is finished before the Close.
                    (Some(frames), Some(_)) => {
                        let mut probe = *frames;
                        probe.track_to_boundary(pending)
                    }
                    _ => pending.len(),
                };
                if allowed == 0 {
                    // Frames after our Close are never sent.
                    if let Some(frames) = &mut self.frames {
                        frames.track(pending);
                    }
                    self.start = self.end;
                    continue;
                }
                let n = ready!(Pin::new(&mut *sink).poll_write(cx, &pending[..allowed]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                if let Some(frames) = &mut self.frames {
                    frames.track(&pending[..n]);
                }
                self.start += n as u32;
                self.unflushed = true;
                continue;
            }
            if let Some((frame, sent)) = &mut self.close {
                let at_boundary = self.frames.is_some_and(|f| f.at_boundary());
                if at_boundary {
                    let rest = &frame.as_bytes()[usize::from(*sent)..];
                    let n = ready!(Pin::new(&mut *sink).poll_write(cx, rest))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *sent += n as u8;
                    self.unflushed = true;
                    if usize::from(*sent) == frame.as_bytes().len() {
                        self.close = None;
                        self.swallow = true;
                    }
                    continue;
                }
                if self.eof {
                    // The source ended inside a frame: a Close now would
                    // tear it, so the sink gets none.
                    self.close = None;
                    self.swallow = true;
                }
            }
            if self.eof {
                if !self.shut {
                    ready!(Pin::new(&mut *sink).poll_shutdown(cx))?;
                    self.shut = true;
                }
                return Poll::Ready(Ok(()));
            }
            let buf = self.buf.get_or_insert_with(Buffer::take);
            let mut read = ReadBuf::new(buf);
            match Pin::new(&mut *source).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        self.eof = true;
                        self.buf = None;
                        continue;
                    }
                    self.bytes += n as u64;
                    *last = clock::now_ms();
                    self.start = 0;
                    self.end = n as u32;
                    if self.swallow {
                        if let Some(frames) = &mut self.frames {
                            frames.track(&buf[..n]);
                        }
                        self.end = 0;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing to write and nothing to read: the buffer goes
                    // back to the free list until bytes come again.
                    self.buf = None;
                    if self.unflushed {
                        ready!(Pin::new(&mut *sink).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
