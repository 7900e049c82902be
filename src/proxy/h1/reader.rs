//! The request's side of an HTTP/1.1 client connection: the socket, what
//! was read from it and not yet used, and the current request's body, read
//! by the request itself ([`H1Body`] borrows the reader). Interim responses
//! (sluice's own 100 Continue, a server's 103) are written from here too,
//! ahead of the final response, since this is what holds the socket while
//! the request is being handled.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use super::super::body::RequestBodyError;
use super::super::buffers;
use super::ClientStream;
use crate::http1::{BodyDecoder, BodyKind, Step, Version};
use crate::workers::idle::IdleWait;

const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Unread request body bytes read past after a response, so the connection
/// can carry the next request; a longer rest closes it instead.
const DRAIN_MAX: u64 = 64 * 1024;

/// Whether a `100 Continue` is owed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Continue {
    /// None asked for, or already given.
    No,
    /// Asked for; given when the body is first read (so a request refused
    /// before its body is needed gets no 100), or when the server sends its
    /// own first.
    Owed,
}

/// The connection's socket with what was read from it and not yet used,
/// and the state of the current request's body.
#[derive(Debug)]
pub struct Reader {
    pub(super) stream: ClientStream,
    /// Empty and without an allocation while the connection is idle.
    pub(super) buf: BytesMut,
    body: BodyDecoder,
    pub(super) body_done: bool,
    pub(super) continue_: Continue,
    /// The request's version: interim responses go to HTTP/1.1 clients only.
    version: Version,
    /// Interim responses (a 100 Continue, a server's 103) on their way to
    /// the client ahead of the final response. Boxed, and `None` nearly
    /// always: the reader lives as long as the connection.
    interim: Option<Box<BytesMut>>,
    /// A server's interim response was passed to the client for this
    /// request: its response has begun, so it goes to no other server.
    interim_passed: bool,
    /// The client sent more behind the request (seen while watching for
    /// its close): not watched again for this request.
    sent_more: bool,
    /// Boxed: rare, and the reader lives as long as the connection.
    trailers: Option<Box<HeaderMap>>,
    /// The connection's slot in its worker's idle waits, which times every
    /// wait for a request head: one for the connection's life rather than
    /// one taken and given back per request.
    pub(super) wait: IdleWait,
}

impl Reader {
    /// A connection's reader, holding nothing but its socket.
    pub(super) fn new(stream: ClientStream) -> Reader {
        Reader {
            stream,
            buf: BytesMut::new(),
            body: BodyDecoder::Length(0),
            body_done: true,
            continue_: Continue::No,
            version: Version::Http11,
            interim: None,
            interim_passed: false,
            sent_more: false,
            trailers: None,
            wait: IdleWait::start(),
        }
    }

    /// Reads more into `buf`, taking a buffer first if it has none; 0 at
    /// the end of the stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            self.buf = buffers::take_read();
        } else if self.buf.capacity() - self.buf.len() < buffers::SIZE / 4 {
            self.buf.reserve(buffers::SIZE);
        }
        // A fresh future at each poll is the stream's poll_read: read_buf
        // keeps no state of its own.
        std::pin::pin!(self.stream.read_buf(&mut self.buf)).poll(cx)
    }

    /// Gives the read buffer back when nothing is left in it.
    pub(super) fn release(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            buffers::give_back(std::mem::take(&mut self.buf));
        }
    }

    pub(super) fn start_body(&mut self, kind: BodyKind, expect_continue: bool, version: Version) {
        self.body = BodyDecoder::new(kind);
        self.body_done = kind == BodyKind::Empty;
        self.continue_ = if expect_continue && !self.body_done {
            Continue::Owed
        } else {
            Continue::No
        };
        self.version = version;
        self.interim_passed = false;
        self.sent_more = false;
        self.trailers = None;
    }

    /// Queues an interim response from the server for the client, when it
    /// may have it: never for an HTTP/1.0 client (RFC 9110 §15.2), and a
    /// 100 only for a client that asked for one and has not had it yet.
    fn pass_interim(&mut self, status: StatusCode, head: &[u8]) {
        if self.version != Version::Http11 {
            return;
        }
        if status == StatusCode::CONTINUE {
            if self.continue_ != Continue::Owed {
                return;
            }
            self.continue_ = Continue::No;
        }
        self.interim_passed = true;
        self.queue_interim(head);
    }

    fn queue_interim(&mut self, head: &[u8]) {
        self.interim
            .get_or_insert_with(Box::default)
            .extend_from_slice(head);
    }

    /// Writes and flushes the interim responses queued.
    pub(super) fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(interim) = &mut self.interim else {
            return Poll::Ready(Ok(()));
        };
        while !interim.is_empty() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, interim))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            interim.advance(n);
        }
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        // Freed: a connection keeps no buffer it does not use.
        self.interim = None;
        Poll::Ready(Ok(()))
    }

    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        if self.body_done {
            return Poll::Ready(None);
        }
        if self.continue_ == Continue::Owed {
            self.continue_ = Continue::No;
            self.queue_interim(CONTINUE_100);
        }
        if let Err(e) = ready!(self.poll_interim(cx)) {
            return Poll::Ready(Some(Err(RequestBodyError::Read(e))));
        }
        loop {
            let step = match self.body.step(&self.buf) {
                Ok(step) => step,
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            };
            match step {
                Step::Data(n) => {
                    return Poll::Ready(Some(Ok(Frame::data(self.buf.split_to(n).freeze()))));
                }
                Step::Framing(n) => self.buf.advance(n),
                Step::Trailer { line, consumed } => {
                    let field = self.buf.split_to(consumed);
                    if let Err(e) = self.add_trailer(&field[..line]) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Step::End(n) => {
                    self.buf.advance(n);
                    self.body_done = true;
                    return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t))));
                }
                Step::NeedMore => match ready!(self.poll_fill(cx)) {
                    Ok(0) => return Poll::Ready(Some(Err(RequestBodyError::Truncated))),
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Some(Err(RequestBodyError::Read(e)))),
                },
            }
        }
    }

    fn add_trailer(&mut self, field: &[u8]) -> Result<(), RequestBodyError> {
        let colon = field
            .iter()
            .position(|&b| b == b':')
            .ok_or(RequestBodyError::Trailer)?;
        let name =
            HeaderName::from_bytes(&field[..colon]).map_err(|_| RequestBodyError::Trailer)?;
        let value = HeaderValue::from_bytes(field[colon + 1..].trim_ascii())
            .map_err(|_| RequestBodyError::Trailer)?;
        self.trailers
            .get_or_insert_with(Box::default)
            .append(name, value);
        Ok(())
    }

    /// Reads past what the handler left of the request body, so the
    /// connection can carry the next request. False when the connection
    /// must close instead: the rest is long, broken, or never asked for
    /// (a client still waiting for its 100 Continue may not send it).
    pub(super) async fn drain_body(&mut self, deadline: Instant) -> bool {
        if self.body_done {
            return true;
        }
        if self.continue_ == Continue::Owed {
            return false;
        }
        let mut drained = 0u64;
        let drain = async {
            loop {
                let frame = std::future::poll_fn(|cx| self.poll_body(cx)).await;
                match frame {
                    None => return true,
                    Some(Ok(frame)) => {
                        drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                        if drained > DRAIN_MAX {
                            return false;
                        }
                    }
                    Some(Err(_)) => return false,
                }
            }
        };
        tokio::time::timeout_at(deadline, drain)
            .await
            .unwrap_or(false)
    }
}

/// A request body read from its connection while the request is handled.
#[derive(Debug)]
pub struct H1Body<'a>(&'a mut Reader);

impl<'a> H1Body<'a> {
    pub(super) fn new(reader: &'a mut Reader) -> H1Body<'a> {
        H1Body(reader)
    }

    /// The same body, for a shorter while (one attempt upstream).
    pub fn reborrow(&mut self) -> H1Body<'_> {
        H1Body(self.0)
    }

    /// Queues an interim response (its whole head, hop-by-hop fields
    /// removed) for the client, if the client may have it.
    pub fn pass_interim(&mut self, status: StatusCode, head: Bytes) {
        self.0.pass_interim(status, &head);
    }

    /// Writes the interim responses queued to the client.
    pub fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_interim(cx)
    }

    /// Whether a server's interim response was passed to the client.
    pub fn interim_passed(&self) -> bool {
        self.0.interim_passed
    }

    /// Ready once the client has closed its connection (or reset it) while
    /// its request waits: looked at only once the body was read whole.
    /// Bytes it sent meanwhile (a pipelined request, a TLS alert) are no
    /// close: then never ready for this request. A client that only shut
    /// its sending side down counts as gone, as it does for nginx.
    pub fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let reader = &mut *self.0;
        if !reader.body_done || !reader.buf.is_empty() || reader.sent_more {
            return Poll::Pending;
        }
        let mut probe = [0u8; 1];
        let mut probe = tokio::io::ReadBuf::new(&mut probe);
        match reader.stream.tcp().poll_peek(cx, &mut probe) {
            Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(()),
            Poll::Ready(Ok(_)) => {
                reader.sent_more = true;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }

    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        self.0.poll_body(cx)
    }

    pub fn is_end(&self) -> bool {
        self.0.body_done
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.0.body {
            _ if self.0.body_done => SizeHint::with_exact(0),
            BodyDecoder::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::new(),
        }
    }
}
