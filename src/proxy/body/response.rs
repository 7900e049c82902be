//! The body sent to the client: sluice's own answer, or a server's body
//! that owns the request's [`Lease`] and its connection until it ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};

use super::super::access::AccessEntry;
use super::super::client::UpstreamBody;
use crate::balance::Lease;
use crate::http1::HeaderCase;
use crate::http1::head::Fields;
use crate::upstream::Conn;
use crate::upstream::UpstreamError;

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

    /// The server's fields when they are not in the response's map, for
    /// the HTTP/1.1 writer to pass on as they came; `None` for sluice's own
    /// answers and for responses whose fields are in the map.
    pub fn raw_fields(&self) -> Option<&Fields> {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.raw_fields(),
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
