//! The upstream side of an exchange, inline in the task that has the
//! request: write the request on a [`Conn`], read the response head, and
//! hand back the body as an [`UpstreamBody`] that owns the connection until
//! the body ends. No spawned task, no channel; the read buffer exists only
//! while a response is being read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::body::{RequestBody, RequestBodyError};
use super::conn::Conn;
use crate::http1::{
    BodyDecoder, BodyKind, ChunkError, FramingError, HeadError, Limits, ResponseHead, Step,
    Version, framing, write,
};

/// A server's response head may be this large, with this many fields.
const RESPONSE_LIMITS: Limits = Limits {
    max_head: 64 * 1024,
    max_fields: 256,
};

/// How much is read from a server at once.
const READ_SIZE: usize = 8 * 1024;

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("sending the request: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response: {0}")]
    Read(#[source] io::Error),
    #[error("connection closed before the response head")]
    ClosedBeforeHead,
    #[error("invalid response head: {0}")]
    Head(#[source] HeadError),
    #[error("invalid response framing: {0}")]
    Framing(#[source] FramingError),
    #[error("invalid chunked response body: {0}")]
    Chunked(#[source] ChunkError),
    #[error("connection closed before the response body ended")]
    Truncated,
}

/// Why sending failed: the server, or the client's body.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Body(#[from] RequestBodyError),
}

/// How the request's body is framed on the way up.
enum Outgoing {
    Length(u64),
    Chunked,
}

/// Writes the request: head, then the body as it arrives. Framing follows
/// what the client sent (a Content-Length is kept) or what is known of the
/// body; a body of unknown length is sent chunked, except with methods that
/// almost never carry one, as hyper's client does.
pub async fn send_request(
    conn: &mut Conn,
    method: &Method,
    target: &str,
    mut headers: HeaderMap,
    body: &mut RequestBody,
) -> Result<(), SendError> {
    let outgoing = if body.is_end_stream() {
        None
    } else if let Some(len) = content_length(&headers) {
        Some(Outgoing::Length(len))
    } else if let Some(len) = body.size_hint().exact() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        Some(Outgoing::Length(len))
    } else if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
        None
    } else {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Some(Outgoing::Chunked)
    };
    let mut out = BytesMut::with_capacity(READ_SIZE);
    write::request_head(
        &mut out,
        method.as_str(),
        target,
        headers
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
    );
    let Some(outgoing) = outgoing else {
        return write_all(conn, &out).await;
    };
    let mut sent = 0u64;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let Ok(data) = frame?.into_data() else {
            // Trailers are not sent: `Trailer` is hop-by-hop, so the server
            // was never told to expect them.
            continue;
        };
        sent += data.len() as u64;
        match outgoing {
            Outgoing::Length(len) if sent > len => {
                return Err(RequestBodyError::LengthMismatch.into());
            }
            Outgoing::Length(_) => out.extend_from_slice(&data),
            Outgoing::Chunked if data.is_empty() => {}
            Outgoing::Chunked => {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            }
        }
        // Small bodies leave with their head in one write.
        if out.len() >= READ_SIZE {
            write_all(conn, &out).await?;
            out.clear();
        }
    }
    match outgoing {
        Outgoing::Length(len) if sent != len => return Err(RequestBodyError::LengthMismatch.into()),
        Outgoing::Length(_) => {}
        Outgoing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
    }
    write_all(conn, &out).await
}

async fn write_all(conn: &mut Conn, bytes: &[u8]) -> Result<(), SendError> {
    conn.write_all(bytes)
        .await
        .map_err(|e| SendError::Upstream(UpstreamError::Write(e)))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads the response to a request sent with `method`. Interim responses
/// (100 Continue, 103 Early Hints) are read past: the client's side cannot
/// forward them yet. A 101 is returned as it is; its body's
/// [`UpstreamBody::into_upgraded`] gives the connection for the tunnel.
pub async fn read_response(
    mut conn: Conn,
    method: &Method,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    loop {
        let head = match ResponseHead::parse(&mut buf, RESPONSE_LIMITS) {
            Ok(Some(head)) => head,
            Ok(None) => {
                if read_more(&mut conn, &mut buf).await? == 0 {
                    return Err(UpstreamError::ClosedBeforeHead);
                }
                continue;
            }
            Err(e) => return Err(UpstreamError::Head(e)),
        };
        let status = head.status;
        if status.is_informational() && status != http::StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        let kind = framing::response_body(method, &head).map_err(UpstreamError::Framing)?;
        let keep_alive = status != http::StatusCode::SWITCHING_PROTOCOLS && keeps_alive(&head);
        let headers = head.fields.to_header_map().map_err(UpstreamError::Head)?;
        let mut response = Response::new(UpstreamBody {
            conn: Some(conn),
            buf,
            decoder: BodyDecoder::new(kind),
            ended: kind == BodyKind::Empty,
            keep_alive,
            trailers: None,
        });
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return Ok(response);
    }
}

/// Whether the server lets the connection carry another request.
fn keeps_alive(head: &ResponseHead) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in head.fields.get_all("connection") {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    match head.version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive && !close,
    }
}

/// Reads what the server sent next into `buf`; 0 at the end of the stream.
async fn read_more(conn: &mut Conn, buf: &mut BytesMut) -> Result<usize, UpstreamError> {
    std::future::poll_fn(|cx| poll_read_more(conn, buf, cx))
        .await
        .map_err(UpstreamError::Read)
}

fn poll_read_more(
    conn: &mut Conn,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let len = buf.len();
    // Zeroed room, not uninitialised: this crate forbids unsafe code.
    buf.resize(len + READ_SIZE, 0);
    let mut read = ReadBuf::new(&mut buf[len..]);
    let polled = Pin::new(conn).poll_read(cx, &mut read);
    let n = read.filled().len();
    buf.truncate(len + n);
    ready!(polled)?;
    Poll::Ready(Ok(n))
}

/// A response body being read from its server. It owns the connection: a
/// body that ends cleanly gives it back for reuse, one that does not drops
/// it, since what is left on it can no longer be framed.
#[derive(Debug)]
pub struct UpstreamBody {
    conn: Option<Conn>,
    buf: BytesMut,
    decoder: BodyDecoder,
    ended: bool,
    keep_alive: bool,
    /// Boxed: few bodies have trailers, and every body would carry the size
    /// of a map.
    trailers: Option<Box<HeaderMap>>,
}

impl UpstreamBody {
    /// Whether the body is over: ended, or a length body whose last byte
    /// was read.
    fn finished(&self) -> bool {
        self.ended || self.decoder == BodyDecoder::Length(0)
    }

    /// The connection, once the body ended cleanly, when the server keeps
    /// it open and sent nothing past the body.
    pub fn take_reusable(&mut self) -> Option<Conn> {
        let reusable = self.finished()
            && self.keep_alive
            && self.decoder.keeps_connection()
            && self.buf.is_empty();
        self.conn.take().filter(|_| reusable)
    }

    /// The connection after a 101 and the bytes the server sent past its
    /// head: the start of the tunnel.
    pub fn into_upgraded(mut self) -> Option<(Conn, Bytes)> {
        let leftover = std::mem::take(&mut self.buf).freeze();
        self.conn.take().map(|conn| (conn, leftover))
    }

    fn take_trailer(&mut self, line: usize, consumed: usize) {
        let field = self.buf.split_to(consumed);
        let field = &field[..line];
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            return;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&field[..colon]),
            HeaderValue::from_bytes(field[colon + 1..].trim_ascii()),
        ) else {
            return;
        };
        self.trailers
            .get_or_insert_with(Box::default)
            .append(name, value);
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))));
            }
            let step = match this.decoder.step(&this.buf) {
                Ok(step) => step,
                Err(e) => {
                    this.ended = true;
                    this.conn = None;
                    return Poll::Ready(Some(Err(UpstreamError::Chunked(e))));
                }
            };
            match step {
                Step::NeedMore => {
                    let Some(conn) = this.conn.as_mut() else {
                        return Poll::Ready(Some(Err(UpstreamError::Truncated)));
                    };
                    let n = match ready!(poll_read_more(conn, &mut this.buf, cx)) {
                        Ok(n) => n,
                        Err(e) => {
                            this.conn = None;
                            return Poll::Ready(Some(Err(UpstreamError::Read(e))));
                        }
                    };
                    if n == 0 {
                        this.conn = None;
                        if this.decoder.at_eof().is_err() {
                            return Poll::Ready(Some(Err(UpstreamError::Truncated)));
                        }
                        this.ended = true;
                    }
                }
                Step::Framing(n) => this.buf.advance(n),
                Step::Data(n) => {
                    return Poll::Ready(Some(Ok(Frame::data(this.buf.split_to(n).freeze()))));
                }
                Step::Trailer { line, consumed } => this.take_trailer(line, consumed),
                Step::End(n) => {
                    this.buf.advance(n);
                    this.ended = true;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            BodyDecoder::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connection to a server that reads one request and answers with
    /// `response`, then keeps the connection open; the request it read is
    /// returned by the handle.
    async fn server(response: &'static [u8]) -> (Conn, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut chunk).await.unwrap();
                request.extend_from_slice(&chunk[..n]);
            }
            stream.write_all(response).await.unwrap();
            // Held open until the test is done with it.
            let _ = stream.read(&mut chunk).await;
            request
        });
        let conn = Conn::Tcp(TcpStream::connect(addr).await.unwrap());
        (conn, handle)
    }

    async fn exchange(response: &'static [u8], method: Method) -> Response<UpstreamBody> {
        let (mut conn, _server) = server(response).await;
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a.test"));
        send_request(&mut conn, &method, "/", headers, &mut RequestBody::empty())
            .await
            .unwrap();
        read_response(conn, &method).await.unwrap()
    }

    #[tokio::test]
    async fn a_length_body_is_read_and_the_connection_kept() {
        let response = exchange(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Case: A\r\n\r\nhello",
            Method::GET,
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-case"], "A");
        let mut body = response.into_body();
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            data.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(data, b"hello");
        assert!(body.take_reusable().is_some());
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_with_its_trailers() {
        let response = exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n",
            Method::GET,
        )
        .await;
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "5");
        assert_eq!(&collected.to_bytes()[..], b"abcde");
    }

    #[tokio::test]
    async fn connection_close_is_not_reused() {
        let response = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            Method::GET,
        )
        .await;
        let mut body = response.into_body();
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn a_head_response_has_no_body_whatever_its_length() {
        let response = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            Method::HEAD,
        )
        .await;
        assert!(response.into_body().take_reusable().is_some());
    }

    #[tokio::test]
    async fn bad_framing_and_truncation_are_errors() {
        let (mut conn, _server) =
            server(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").await;
        send_request(
            &mut conn,
            &Method::GET,
            "/",
            HeaderMap::new(),
            &mut RequestBody::empty(),
        )
        .await
        .unwrap();
        assert!(matches!(
            read_response(conn, &Method::GET).await,
            Err(UpstreamError::Framing(FramingError::DuplicateLength))
        ));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut chunk = [0u8; 1024];
            let _ = stream.read(&mut chunk).await;
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
                .await
                .unwrap();
        });
        let mut conn = Conn::Tcp(TcpStream::connect(addr).await.unwrap());
        send_request(
            &mut conn,
            &Method::GET,
            "/",
            HeaderMap::new(),
            &mut RequestBody::empty(),
        )
        .await
        .unwrap();
        let mut body = read_response(conn, &Method::GET).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(&first.into_data().unwrap()[..], b"short");
        assert!(matches!(
            body.frame().await,
            Some(Err(UpstreamError::Truncated))
        ));
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn request_bodies_are_framed_as_received_or_as_known() {
        let (mut conn, server) = server(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let mut body = RequestBody::Full(Some(Bytes::from_static(b"hello")));
        send_request(&mut conn, &Method::POST, "/p", HeaderMap::new(), &mut body)
            .await
            .unwrap();
        let response = read_response(conn, &Method::POST).await.unwrap();
        assert_eq!(response.status(), 204);
        drop(response);
        let request = server.await.unwrap();
        assert_eq!(
            request,
            b"POST /p HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
        );
    }
}
