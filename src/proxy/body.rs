//! Bodies on both sides of the proxy, streamed frame by frame, never buffered
//! whole.
//!
//! The response body owns the request's [`Lease`] and its upstream connection:
//! the server's in-flight count drops, and the connection goes back to the
//! pool, only when the body has ended cleanly. A body that errors or is dropped
//! early takes its connection with it, since the connection's framing is
//! unknown from then on.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::access::AccessEntry;
use super::client::{UpstreamBody, UpstreamError};
use super::conn::Conn;
use super::h1::H1Body;
use crate::balance::Lease;
use crate::http1::{ChunkError, HeaderCase};

/// Request bodies up to this size are held in memory, so a request whose
/// attempt fails can be sent again to another server. A larger body (or one of
/// unknown length that turns out larger) is streamed from the first byte past
/// this and is not retried once sending began: sluice never buffers more.
pub const RETRY_BUFFER: usize = 64 * 1024;

/// A client body that failed on its way to the upstream; a client's fault,
/// never counted against a server.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("request body exceeds max_body_size")]
    TooLarge,
    #[error("reading the request body: {0}")]
    Client(#[source] hyper::Error),
    #[error("reading the request body: {0}")]
    Read(#[source] std::io::Error),
    #[error("request body framing: {0}")]
    Framing(#[from] ChunkError),
    #[error("client closed the connection before its body ended")]
    Truncated,
    #[error("malformed trailer field")]
    Trailer,
    #[error("request body length differs from its Content-Length")]
    LengthMismatch,
}

/// The client's body as its protocol delivers it: hyper's over HTTP/2,
/// read from the connection itself by sluice's HTTP/1.1 engine.
#[derive(Debug)]
pub enum ClientBody<'a> {
    H2(Incoming),
    H1(H1Body<'a>),
}

impl Body for ClientBody<'_> {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.get_mut() {
            ClientBody::H2(incoming) => Pin::new(incoming)
                .poll_frame(cx)
                .map_err(RequestBodyError::Client),
            ClientBody::H1(body) => body.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::H2(incoming) => incoming.is_end_stream(),
            ClientBody::H1(body) => body.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::H2(incoming) => incoming.size_hint(),
            ClientBody::H1(body) => body.size_hint(),
        }
    }
}

impl ClientBody<'_> {
    /// The same body, borrowed for one attempt: an HTTP/1.1 client's, to
    /// pass it interim responses. An HTTP/2 client's is not lent (its
    /// interim responses are not forwarded: hyper's server has no way to
    /// send one).
    pub fn reborrow(&mut self) -> Option<ClientBody<'_>> {
        match self {
            ClientBody::H1(body) => Some(ClientBody::H1(body.reborrow())),
            ClientBody::H2(_) => None,
        }
    }

    /// Hands an interim response (a whole head) to the client's side; see
    /// [`H1Body::pass_interim`].
    pub fn pass_interim(&mut self, status: StatusCode, head: Bytes) {
        if let ClientBody::H1(body) = self {
            body.pass_interim(status, head);
        }
    }

    /// Writes the interim responses passed so far to the client.
    pub fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            ClientBody::H1(body) => body.poll_interim(cx),
            ClientBody::H2(_) => Poll::Ready(Ok(())),
        }
    }
}

/// The body sent upstream.
#[derive(Debug)]
pub enum RequestBody<'a> {
    /// Buffered bytes (empty for bodiless requests), so the request can be
    /// sent again on a retry. `client` is the client's body, read to its
    /// end, kept to pass interim responses to its connection.
    Full {
        bytes: Option<Bytes>,
        client: Option<ClientBody<'a>>,
    },
    /// The client's body, streamed; `remaining` enforces `max_body_size` on
    /// bodies of unknown length. `prefix` holds frames already read from
    /// `inner` while trying to buffer it, sent first.
    Stream {
        prefix: VecDeque<Frame<Bytes>>,
        inner: ClientBody<'a>,
        remaining: Option<u64>,
    },
}

impl<'a> RequestBody<'a> {
    pub fn empty() -> Self {
        RequestBody::Full {
            bytes: None,
            client: None,
        }
    }

    #[cfg(test)]
    pub fn full(bytes: Bytes) -> Self {
        RequestBody::Full {
            bytes: Some(bytes),
            client: None,
        }
    }

    /// This body for one attempt: buffered bytes are copied (a reference
    /// count), a stream is taken, so a retry can only resend what is
    /// buffered.
    pub fn for_attempt<'s>(stored: &'s mut Option<RequestBody<'a>>) -> RequestBody<'s> {
        match stored {
            Some(RequestBody::Full { bytes, client }) => RequestBody::Full {
                bytes: bytes.clone(),
                client: client.as_mut().and_then(ClientBody::reborrow),
            },
            other => other.take().unwrap_or_else(RequestBody::empty),
        }
    }

    fn client(&mut self) -> Option<&mut ClientBody<'a>> {
        match self {
            RequestBody::Full { client, .. } => client.as_mut(),
            RequestBody::Stream { inner, .. } => Some(inner),
        }
    }

    /// Passes an interim response on to the client, if there is one to
    /// take it.
    pub fn pass_interim(&mut self, status: StatusCode, head: Bytes) {
        if let Some(client) = self.client() {
            client.pass_interim(status, head);
        }
    }

    /// Writes what was passed to the client.
    pub fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.client() {
            Some(client) => client.poll_interim(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Reads the client's body into memory when it fits in [`RETRY_BUFFER`],
    /// so it can be retried; otherwise streams it. `max_body_size` is
    /// enforced on the buffered part too.
    pub async fn buffer(
        mut inner: ClientBody<'a>,
        max_body_size: Option<u64>,
    ) -> Result<RequestBody<'a>, RequestBodyError> {
        use http_body_util::BodyExt as _;

        let stream = |prefix, inner, used: u64| RequestBody::Stream {
            prefix,
            inner,
            remaining: max_body_size.map(|max| max.saturating_sub(used)),
        };
        if inner.is_end_stream() {
            return Ok(RequestBody::Full {
                bytes: None,
                client: Some(inner),
            });
        }
        if inner
            .size_hint()
            .exact()
            .is_some_and(|len| len > RETRY_BUFFER as u64)
        {
            return Ok(stream(VecDeque::new(), inner, 0));
        }
        let mut prefix = VecDeque::new();
        let mut len = 0u64;
        while let Some(frame) = inner.frame().await {
            let frame = frame?;
            let is_data = frame.is_data();
            if let Some(data) = frame.data_ref() {
                len += data.len() as u64;
                if max_body_size.is_some_and(|max| len > max) {
                    return Err(RequestBodyError::TooLarge);
                }
            }
            prefix.push_back(frame);
            // Trailers cannot be replayed from `Full`: stream what was read.
            if !is_data || len > RETRY_BUFFER as u64 {
                return Ok(stream(prefix, inner, len));
            }
        }
        let mut whole = bytes::BytesMut::with_capacity(len as usize);
        for frame in prefix {
            if let Ok(data) = frame.into_data() {
                whole.extend_from_slice(&data);
            }
        }
        Ok(RequestBody::Full {
            bytes: (!whole.is_empty()).then(|| whole.freeze()),
            client: Some(inner),
        })
    }
}

impl Body for RequestBody<'_> {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.get_mut() {
            RequestBody::Full { bytes, .. } => {
                Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
            }
            RequestBody::Stream {
                prefix,
                inner,
                remaining,
            } => {
                if let Some(frame) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                let frame = match frame {
                    None => return Poll::Ready(None),
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Some(Ok(frame)) => frame,
                };
                if let (Some(left), Some(data)) = (remaining.as_mut(), frame.data_ref()) {
                    let len = data.len() as u64;
                    if len > *left {
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge)));
                    }
                    *left -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Full { bytes, .. } => bytes.is_none(),
            RequestBody::Stream { prefix, inner, .. } => prefix.is_empty() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Full { bytes: Some(b), .. } => SizeHint::with_exact(b.len() as u64),
            RequestBody::Full { bytes: None, .. } => SizeHint::with_exact(0),
            RequestBody::Stream { prefix, inner, .. } => {
                let read: u64 = prefix
                    .iter()
                    .filter_map(|f| f.data_ref())
                    .map(|d| d.len() as u64)
                    .sum();
                let rest = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
            }
        }
    }
}

/// What a finished upstream response body hands back.
pub struct Finish {
    pub lease: Lease,
    /// Where the connection goes after a clean end: the server's pool,
    /// which keeps `keepalive` idle connections for `keepalive_timeout`.
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    /// The access-log line and the response status, logged once with the
    /// body's byte count and whether it ended cleanly. Boxed: most bodies
    /// have none, and all would carry its size.
    pub log: Option<(Box<AccessEntry>, StatusCode)>,
}

impl Finish {
    fn end(mut self, bytes: u64, clean: bool, conn: Option<Conn>) {
        if clean && let Some(conn) = conn {
            self.lease
                .server
                .pool
                .put(conn, self.keepalive, self.keepalive_timeout);
        }
        if let Some((entry, status)) = self.log.take() {
            entry.log(status, bytes, clean);
        }
    }
}

/// The body sent to the client.
pub enum ResponseBody {
    Full(Option<Bytes>),
    Upstream {
        inner: UpstreamBody,
        bytes: u64,
        finish: Option<Finish>,
    },
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }

    pub fn upstream(inner: UpstreamBody, finish: Finish) -> Self {
        let mut body = ResponseBody::Upstream {
            inner,
            bytes: 0,
            finish: Some(finish),
        };
        // hyper may never poll a body that is already complete (HEAD, 204,
        // Content-Length: 0): settle it now.
        body.end_if_complete();
        body
    }

    /// How the server spelled the response's field names; `None` for
    /// sluice's own answers.
    pub fn case(&self) -> Option<&HeaderCase> {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.case(),
            ResponseBody::Full(_) => None,
        }
    }

    /// Makes an upstream chunked body reach the client with its chunk
    /// framing as it came; see [`UpstreamBody::pass_chunked`].
    pub fn pass_chunked(&mut self) -> bool {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.pass_chunked(),
            ResponseBody::Full(_) => false,
        }
    }

    fn end_if_complete(&mut self) {
        if let ResponseBody::Upstream {
            inner,
            bytes,
            finish,
        } = self
            && inner.is_end_stream()
            && let Some(f) = finish.take()
        {
            f.end(*bytes, true, inner.take_reusable());
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        match this {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream {
                inner,
                bytes,
                finish,
            } => {
                let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
                match &frame {
                    None => {
                        if let Some(f) = finish.take() {
                            f.end(*bytes, true, inner.take_reusable());
                        }
                    }
                    Some(Err(_)) => {
                        if let Some(f) = finish.take() {
                            f.end(*bytes, false, None);
                        }
                    }
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            *bytes += data.len() as u64;
                        }
                        this.end_if_complete();
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let ResponseBody::Upstream {
            inner,
            bytes,
            finish,
        } = self
            && let Some(f) = finish.take()
        {
            // Dropped before its end: the client went away. The connection
            // still has unread bytes, so it is not reused.
            let clean = inner.is_end_stream();
            f.end(*bytes, clean, inner.take_reusable());
        }
    }
}
