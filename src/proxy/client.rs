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
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::body::{RequestBody, RequestBodyError};
use super::buffers;
use super::conn::Conn;
use super::headers;
use super::prefixed::Prefixed;
use crate::http1::{
    BodyDecoder, BodyKind, ChunkError, FramingError, HeadError, HeaderCase, Limits, ResponseHead,
    Speller, Step, Version, framing, write,
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
#[derive(Clone, Copy)]
enum Outgoing {
    Length(u64),
    Chunked,
}

/// A request on its way to the server, and what the server said meanwhile.
#[derive(Debug)]
pub struct Sent {
    /// The start of the response, read while the body was still going up.
    read: BytesMut,
    /// The whole request went up; otherwise the server answered first, and
    /// the connection cannot carry another request.
    complete: bool,
}

/// A request head on its way up: the headers as the proxy rewrote them,
/// names spelled as `case` says (the client's spelling, kept).
pub struct Head<'h> {
    pub method: &'h Method,
    /// Origin form.
    pub target: &'h str,
    pub headers: &'h HeaderMap,
    pub case: Option<&'h HeaderCase>,
}

/// [`send`] for a request of sluice's own (a health check): names in lower
/// case, no client to pass interim responses to.
pub async fn send_request(
    conn: &mut Conn,
    method: &Method,
    target: &str,
    headers: HeaderMap,
    body: &mut RequestBody<'_>,
) -> Result<Sent, SendError> {
    let head = Head {
        method,
        target,
        headers: &headers,
        case: None,
    };
    send(conn, &head, body).await
}

/// Writes the request: head, then the body as it arrives. Framing follows
/// what the client sent (a Content-Length is kept) or what is known of the
/// body; a body of unknown length is sent chunked, except with methods that
/// almost never carry one, as hyper's client does. The framing fields sluice
/// adds are written behind the others, never put in the map.
///
/// While a body goes up the server is listened to: interim responses
/// (100 Continue, 103 Early Hints) are passed to the client's side as they
/// come, and a final response that comes before the body is all sent (a
/// 413, a 401) stops the sending, so the server is never left waiting on a
/// body it does not want while its answer waits on us.
pub async fn send(
    conn: &mut Conn,
    head: &Head<'_>,
    body: &mut RequestBody<'_>,
) -> Result<Sent, SendError> {
    let mut len_text = [0u8; 20];
    let (outgoing, framing): (_, Option<(&[u8], &[u8])>) = if body.is_end_stream() {
        (None, None)
    } else if let Some(len) = content_length(head.headers) {
        (Some(Outgoing::Length(len)), None)
    } else if let Some(len) = body.size_hint().exact() {
        let text = write::decimal(len, &mut len_text);
        (Some(Outgoing::Length(len)), Some((b"content-length", text)))
    } else if matches!(*head.method, Method::GET | Method::HEAD | Method::CONNECT) {
        (None, None)
    } else {
        (
            Some(Outgoing::Chunked),
            Some((b"transfer-encoding", b"chunked")),
        )
    };
    let mut out = buffers::take_read();
    let mut speller = Speller::new(head.case);
    write::request_head(
        &mut out,
        head.method.as_str(),
        head.target,
        head.headers
            .iter()
            .map(|(name, value)| (speller.spell(name), value.as_bytes()))
            .chain(framing),
    );
    let Some(outgoing) = outgoing else {
        let written = conn.write_all(&out).await;
        buffers::give_back(out);
        written.map_err(UpstreamError::Write)?;
        conn.flush().await.map_err(UpstreamError::Write)?;
        return Ok(Sent {
            read: BytesMut::new(),
            complete: true,
        });
    };
    let mut sending = Sending {
        out,
        outgoing,
        sent: 0,
        body_done: false,
        read: BytesMut::new(),
    };
    let complete = std::future::poll_fn(|cx| sending.poll(conn, body, cx)).await;
    buffers::give_back(std::mem::take(&mut sending.out));
    Ok(Sent {
        read: sending.read,
        complete: complete?,
    })
}

/// The state of a request whose body is being sent.
struct Sending {
    /// Bytes ready to go up.
    out: BytesMut,
    outgoing: Outgoing,
    sent: u64,
    body_done: bool,
    /// What the server sent meanwhile, interim responses removed.
    read: BytesMut,
}

impl Sending {
    /// Ready with `true` once everything went up and was flushed, with
    /// `false` once the server's final response began first.
    fn poll(
        &mut self,
        conn: &mut Conn,
        body: &mut RequestBody<'_>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, SendError>> {
        loop {
            // Interim responses already passed on go out to the client as
            // it reads them; the body goes up meanwhile.
            if let Poll::Ready(Err(e)) = body.poll_interim(cx) {
                return Poll::Ready(Err(RequestBodyError::Read(e).into()));
            }
            match poll_read_more(conn, &mut self.read, cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(false)),
                Poll::Ready(Ok(_)) => {
                    if final_response_began(&mut self.read, body)? {
                        return Poll::Ready(Ok(false));
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(UpstreamError::Read(e).into())),
                Poll::Pending => {}
            }
            if !self.out.is_empty() {
                match Pin::new(&mut *conn).poll_write(cx, &self.out) {
                    Poll::Ready(Ok(0)) => {
                        let closed = io::Error::from(io::ErrorKind::WriteZero);
                        return Poll::Ready(Err(UpstreamError::Write(closed).into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.out.advance(n);
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(UpstreamError::Write(e).into())),
                    // Backpressure: no more of the body is taken until the
                    // server reads.
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.body_done {
                return match Pin::new(&mut *conn).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(true)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(UpstreamError::Write(e).into())),
                    Poll::Pending => Poll::Pending,
                };
            }
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers are not sent: `Trailer` is hop-by-hop, so the
                    // server was never told to expect them.
                    if let Ok(data) = frame.into_data() {
                        self.encode(&data)?;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(e.into())),
                None => {
                    match self.outgoing {
                        Outgoing::Length(len) if self.sent != len => {
                            return Poll::Ready(Err(RequestBodyError::LengthMismatch.into()));
                        }
                        Outgoing::Length(_) => {}
                        Outgoing::Chunked => self.out.extend_from_slice(b"0\r\n\r\n"),
                    }
                    self.body_done = true;
                }
            }
        }
    }

    fn encode(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.sent += data.len() as u64;
        match self.outgoing {
            Outgoing::Length(len) if self.sent > len => {
                return Err(RequestBodyError::LengthMismatch.into());
            }
            Outgoing::Length(_) => self.out.extend_from_slice(data),
            Outgoing::Chunked if data.is_empty() => {}
            Outgoing::Chunked => {
                self.out
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                self.out.extend_from_slice(data);
                self.out.extend_from_slice(b"\r\n");
            }
        }
        Ok(())
    }
}

/// Takes complete interim responses off the front of `read`, passing them
/// to the client's side; true once a final response has begun there (or
/// bytes that are no interim response).
fn final_response_began(
    read: &mut BytesMut,
    body: &mut RequestBody<'_>,
) -> Result<bool, SendError> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut head = httparse::Response::new(&mut fields);
        match head.parse(read) {
            Ok(httparse::Status::Complete(_))
                if head
                    .code
                    .is_some_and(|c| (100..200).contains(&c) && c != 101) =>
            {
                match ResponseHead::parse(read, RESPONSE_LIMITS) {
                    Ok(Some(interim)) => pass_interim(&interim, body),
                    // read_response refuses it in turn.
                    _ => return Ok(true),
                }
            }
            Ok(httparse::Status::Partial) if head.code.is_none_or(|c| (100..200).contains(&c)) => {
                return Ok(false);
            }
            // A final response, or something read_response will refuse.
            _ => return Ok(true),
        }
    }
}

/// Hands an interim response to the client's side, as received but for its
/// hop-by-hop fields (RFC 9110 §15.2: a proxy forwards 1xx responses).
/// The client's side decides whether its client gets it.
fn pass_interim(head: &ResponseHead, body: &mut RequestBody<'_>) {
    let listed: Vec<&[u8]> = head
        .fields
        .get_all("connection")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    let mut out = BytesMut::new();
    write::response_head(
        &mut out,
        head.status,
        head.fields.iter().filter(|(name, _)| {
            !headers::is_hop_by_hop(name) && !listed.iter().any(|l| l.eq_ignore_ascii_case(name))
        }),
    );
    body.pass_interim(head.status, out.freeze());
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

/// [`receive`] for a request of sluice's own: interim responses are read
/// past.
pub async fn read_response(
    conn: Conn,
    method: &Method,
    sent: Sent,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    receive(conn, method, sent, &mut RequestBody::empty()).await
}

/// Reads the response to a request sent with `method`. Interim responses
/// (100 Continue, 103 Early Hints) are passed to the client's side through
/// `body` as they come, and written before the final head is read. A 101 is
/// returned as it is; its body's [`UpstreamBody::into_upgraded`] gives the
/// connection for the tunnel.
pub async fn receive(
    mut conn: Conn,
    method: &Method,
    sent: Sent,
    body: &mut RequestBody<'_>,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let mut buf = sent.read;
    if buf.capacity() == 0 {
        buf = buffers::take_read();
    }
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
            pass_interim(&head, body);
            // A client that does not read its interim responses fails when
            // the final one is written; the exchange goes on meanwhile.
            let _ = std::future::poll_fn(|cx| body.poll_interim(cx)).await;
            continue;
        }
        let kind = framing::response_body(method, &head).map_err(UpstreamError::Framing)?;
        let keep_alive =
            sent.complete && status != http::StatusCode::SWITCHING_PROTOCOLS && keeps_alive(&head);
        // Room for the field sluice may add (a sticky cookie).
        let headers = head.fields.to_header_map(1).map_err(UpstreamError::Head)?;
        let mut response = Response::new(UpstreamBody {
            conn: Some(conn),
            buf,
            decoder: BodyDecoder::new(kind),
            ended: kind == BodyKind::Empty,
            keep_alive,
            passthrough: false,
            trailers: None,
            case: HeaderCase::new(head.fields),
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
    if buf.capacity() - buf.len() < READ_SIZE / 2 {
        buf.reserve(READ_SIZE);
    }
    // tokio's read_buf reads into the buffer's spare capacity without
    // zeroing it first (this crate forbids the unsafe code that takes). The
    // future keeps no state of its own: made afresh at each poll, it is the
    // stream's poll_read.
    std::pin::pin!(conn.read_buf(buf)).poll(cx)
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
    /// A chunked body given to an HTTP/1.1 client as it came: chunk framing
    /// and trailers are data frames too, checked but not re-encoded.
    passthrough: bool,
    /// Boxed: few bodies have trailers, and every body would carry the size
    /// of a map.
    trailers: Option<Box<HeaderMap>>,
    /// How the server spelled the head's field names. Kept here rather than
    /// in the response's extensions, which would cost two allocations per
    /// response: the body goes wherever the head goes.
    case: HeaderCase,
}

impl UpstreamBody {
    /// Whether the body is over: ended, or a length body whose last byte
    /// was read.
    fn finished(&self) -> bool {
        self.ended || self.decoder == BodyDecoder::Length(0)
    }

    /// How the server spelled its field names.
    pub fn case(&self) -> &HeaderCase {
        &self.case
    }

    /// Makes a chunked body pass its chunk framing on as it came, for a
    /// client that reads chunked (HTTP/1.1) itself. False for any other
    /// body, or one already begun.
    pub fn pass_chunked(&mut self) -> bool {
        self.passthrough = matches!(&self.decoder, BodyDecoder::Chunked(c) if *c == Default::default())
            && !self.ended;
        self.passthrough
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

    /// The connection after a 101, the bytes the server sent past its head
    /// put back in front: the start of the tunnel.
    pub fn into_upgraded(mut self) -> Option<Prefixed<Conn>> {
        // Copied out (usually empty), so the tunnel does not keep the whole
        // read buffer alive for its life.
        let leftover = Bytes::copy_from_slice(&self.buf);
        self.buf = BytesMut::new();
        self.conn.take().map(|conn| Prefixed::new(leftover, conn))
    }

    /// Reads more of the body; at the end of the stream, the body ends
    /// there or was truncated.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Err(UpstreamError::Truncated));
        };
        let n = match ready!(poll_read_more(conn, &mut self.buf, cx)) {
            Ok(n) => n,
            Err(e) => {
                self.conn = None;
                return Poll::Ready(Err(UpstreamError::Read(e)));
            }
        };
        if n == 0 {
            self.conn = None;
            if self.decoder.at_eof().is_err() {
                return Poll::Ready(Err(UpstreamError::Truncated));
            }
            self.ended = true;
        }
        Poll::Ready(Ok(()))
    }

    /// The next run of the chunked body as it came: chunk-size lines, data
    /// and trailers in one frame, as much as is buffered. The decoder
    /// still checks every line, so a bad chunk ends the body as it would
    /// decoded. A line break the decoder tolerates in the trailer section
    /// (a bare LF) is passed on as CRLF, the only one a client must accept.
    fn poll_passthrough(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            // Bytes at the front of `buf` passed on as they are, behind what
            // had to be rewritten (rarely anything).
            let mut at = 0;
            let mut rewritten: Option<BytesMut> = None;
            loop {
                let step = match self.decoder.step(&self.buf[at..]) {
                    Ok(step) => step,
                    Err(e) => {
                        self.ended = true;
                        self.conn = None;
                        return Poll::Ready(Some(Err(UpstreamError::Chunked(e))));
                    }
                };
                match step {
                    Step::NeedMore => break,
                    Step::Framing(n) | Step::Data(n) => at += n,
                    Step::Trailer { line, consumed } if consumed == line + 2 => at += consumed,
                    Step::End(n) if n != 1 => {
                        at += n;
                        self.ended = true;
                        break;
                    }
                    Step::Trailer { line, consumed } => {
                        let out = rewritten.get_or_insert_with(BytesMut::new);
                        out.extend_from_slice(&self.buf[..at + line]);
                        out.extend_from_slice(b"\r\n");
                        self.buf.advance(at + consumed);
                        at = 0;
                    }
                    Step::End(n) => {
                        let out = rewritten.get_or_insert_with(BytesMut::new);
                        out.extend_from_slice(&self.buf[..at]);
                        out.extend_from_slice(b"\r\n");
                        self.buf.advance(at + n);
                        at = 0;
                        self.ended = true;
                        break;
                    }
                }
            }
            let passed = self.buf.split_to(at);
            let data = match rewritten {
                Some(mut out) => {
                    out.extend_from_slice(&passed);
                    out.freeze()
                }
                None => passed.freeze(),
            };
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if let Err(e) = ready!(self.poll_fill(cx)) {
                return Poll::Ready(Some(Err(e)));
            }
        }
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

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // The read buffer goes back to the worker's free list for the next
        // response, once the frames split off it are gone too.
        buffers::give_back(std::mem::take(&mut self.buf));
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
        if this.passthrough {
            return this.poll_passthrough(cx);
        }
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
                    if let Err(e) = ready!(this.poll_fill(cx)) {
                        return Poll::Ready(Some(Err(e)));
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
        let sent = send_request(&mut conn, &method, "/", headers, &mut RequestBody::empty())
            .await
            .unwrap();
        read_response(conn, &method, sent).await.unwrap()
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
        let sent = send_request(
            &mut conn,
            &Method::GET,
            "/",
            HeaderMap::new(),
            &mut RequestBody::empty(),
        )
        .await
        .unwrap();
        assert!(matches!(
            read_response(conn, &Method::GET, sent).await,
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
        let sent = send_request(
            &mut conn,
            &Method::GET,
            "/",
            HeaderMap::new(),
            &mut RequestBody::empty(),
        )
        .await
        .unwrap();
        let mut body = read_response(conn, &Method::GET, sent)
            .await
            .unwrap()
            .into_body();
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
        let mut body = RequestBody::full(Bytes::from_static(b"hello"));
        let sent = send_request(&mut conn, &Method::POST, "/p", HeaderMap::new(), &mut body)
            .await
            .unwrap();
        let response = read_response(conn, &Method::POST, sent).await.unwrap();
        assert_eq!(response.status(), 204);
        drop(response);
        let request = server.await.unwrap();
        assert_eq!(
            request,
            b"POST /p HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
        );
    }

    /// A server that reads the request head, then behaves as `then` says
    /// with the connection; the connection stays open until the test ends.
    async fn head_then<F, Fut>(then: F) -> (Conn, tokio::sync::oneshot::Sender<()>)
    where
        F: FnOnce(TcpStream, Vec<u8>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = TcpStream> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (done, wait) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut read = Vec::new();
            let mut chunk = [0u8; 4096];
            while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut chunk).await.unwrap();
                read.extend_from_slice(&chunk[..n]);
            }
            let _stream = then(stream, read).await;
            let _ = wait.await;
        });
        let conn = Conn::Tcp(TcpStream::connect(addr).await.unwrap());
        (conn, done)
    }

    #[tokio::test]
    async fn an_early_answer_stops_the_body_and_is_read() {
        let (mut conn, _done) = head_then(|mut stream, _| async move {
            stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            stream
        })
        .await;
        // Far more than the socket buffers hold: the server never reads it.
        let mut body = RequestBody::full(Bytes::from(vec![b'x'; 64 << 20]));
        let send = send_request(&mut conn, &Method::POST, "/", HeaderMap::new(), &mut body);
        let sent = tokio::time::timeout(std::time::Duration::from_secs(30), send)
            .await
            .expect("the answer stops the sending")
            .unwrap();
        let response = read_response(conn, &Method::POST, sent).await.unwrap();
        assert_eq!(response.status(), 413);
        assert!(
            response.into_body().take_reusable().is_none(),
            "a connection with half a body on it is not reused"
        );
    }

    #[tokio::test]
    async fn a_100_continue_does_not_stop_the_body() {
        let (mut conn, _done) = head_then(|mut stream, mut read| async move {
            stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .unwrap();
            let head_end = read.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let mut chunk = [0u8; 4096];
            while read.len() - head_end < 5 {
                let n = stream.read(&mut chunk).await.unwrap();
                read.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(&read[head_end..], b"hello");
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            stream
        })
        .await;
        let mut headers = HeaderMap::new();
        headers.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        let mut body = RequestBody::full(Bytes::from_static(b"hello"));
        let sent = send_request(&mut conn, &Method::POST, "/", headers, &mut body)
            .await
            .unwrap();
        let response = read_response(conn, &Method::POST, sent).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        while body.frame().await.is_some() {}
        assert!(body.take_reusable().is_some());
    }
}
