//! The client's body on its way to a server: streamed from an HTTP/1.1
//! connection or an HTTP/2 stream, or held whole (up to [`RETRY_BUFFER`]) so
//! a failed attempt can be sent again.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::super::h1::H1Body;
use crate::http1::ChunkError;
use crate::workers::idle::Deadline;

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
    #[error("the client did not send its body within response_timeout")]
    TimedOut,
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

    /// Ready once the client has closed its connection; see
    /// [`H1Body::poll_gone`]. HTTP/2 clients reset their streams instead,
    /// which drops the request.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            ClientBody::H1(body) => body.poll_gone(cx),
            ClientBody::H2(_) => Poll::Pending,
        }
    }

    /// Whether a server's interim response was passed to the client.
    fn interim_passed(&self) -> bool {
        match self {
            ClientBody::H1(body) => body.interim_passed(),
            ClientBody::H2(_) => false,
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

    /// Whether a server's interim response reached the client's side: the
    /// response has begun, and the request may not be sent elsewhere.
    pub fn interim_passed(&self) -> bool {
        match self {
            RequestBody::Full { client, .. } => {
                client.as_ref().is_some_and(ClientBody::interim_passed)
            }
            RequestBody::Stream { inner, .. } => inner.interim_passed(),
        }
    }

    /// Ready once the client has closed its connection while its request
    /// waits for the response.
    pub fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.client() {
            Some(client) => client.poll_gone(cx),
            None => Poll::Pending,
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
    /// enforced on the buffered part too. A client that has not sent what
    /// is buffered within `limit` (from the first wait for it) gets
    /// [`RequestBodyError::TimedOut`]: a stalled body holds no request.
    pub async fn buffer(
        mut inner: ClientBody<'a>,
        max_body_size: Option<u64>,
        limit: Duration,
    ) -> Result<RequestBody<'a>, RequestBodyError> {
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
        // Each wait for more is bounded by `limit`, as nginx's
        // `client_body_timeout` bounds each read: a slow client that keeps
        // sending is not cut short. Set at a wait, so a body already read
        // costs no clock read.
        let mut deadline: Option<Deadline> = None;
        loop {
            let next = poll_fn(|cx| match Pin::new(&mut inner).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(frame.transpose()),
                Poll::Pending => deadline
                    .get_or_insert_with(|| Deadline::new((Instant::now() + limit).into()))
                    .poll(cx)
                    .map(|()| Err(RequestBodyError::TimedOut)),
            });
            let Some(frame) = next.await? else {
                break;
            };
            deadline = None;
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
