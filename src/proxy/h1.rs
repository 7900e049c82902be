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

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::body::{ClientBody, RequestBodyError, ResponseBody};
use super::buffers;
use super::conn::Stream;
use super::headers;
use super::prefixed::Prefixed;
use super::service::{ConnCtx, ServerWideOptions};
use super::upgrade::Tunnel;
use crate::http1::{
    BodyDecoder, BodyKind, HeaderCase, Limits, RequestHead, Speller, Step, TargetForm, Version,
    framing, write,
};

/// What a client whose request head timed out is told before the close.
pub const REQUEST_TIMEOUT_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Unread request body bytes read past after a response, so the connection
/// can carry the next request; a longer rest closes it instead.
const DRAIN_MAX: u64 = 64 * 1024;

/// Response body bytes copied behind the head (or behind other small
/// frames) to leave in one write; larger frames are written on their own.
const COALESCE_MAX: usize = 4096;

/// The client's socket, in clear or decrypted.
pub type ClientStream = Stream<TlsStream<TcpStream>>;

impl ClientStream {
    /// Resolves once the client has sent something, without taking a
    /// buffer to read it into. A TLS session may hold decrypted bytes
    /// already; then there is nothing to wait for.
    async fn readable(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Tcp(tcp) => tcp.readable().await,
            ClientStream::Tls(tls) => {
                let (tcp, session) = tls.get_mut();
                let state = session
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                    return Ok(());
                }
                tcp.readable().await
            }
        }
    }
}

/// Whether a `100 Continue` is owed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continue {
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
    stream: ClientStream,
    /// Empty and without an allocation while the connection is idle.
    buf: BytesMut,
    body: BodyDecoder,
    body_done: bool,
    continue_: Continue,
    /// The request's version: interim responses go to HTTP/1.1 clients only.
    version: Version,
    /// Interim responses (a 100 Continue, a server's 103) on their way to
    /// the client ahead of the final response; empty, with no allocation,
    /// nearly always.
    interim: BytesMut,
    /// Interim bytes were written and not yet flushed.
    interim_unflushed: bool,
    trailers: Option<HeaderMap>,
}

impl Reader {
    /// Reads more into `buf`, taking a buffer first if it has none; 0 at
    /// the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            self.buf = buffers::take_read();
        } else if self.buf.capacity() - self.buf.len() < buffers::SIZE / 4 {
            self.buf.reserve(buffers::SIZE);
        }
        // A fresh future at each poll is the stream's poll_read: read_buf
        // keeps no state of its own.
        std::pin::pin!(self.stream.read_buf(&mut self.buf)).poll(cx)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Gives the read buffer back when nothing is left in it.
    fn release(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            buffers::give_back(std::mem::take(&mut self.buf));
        }
    }

    fn start_body(&mut self, kind: BodyKind, expect_continue: bool, version: Version) {
        self.body = BodyDecoder::new(kind);
        self.body_done = kind == BodyKind::Empty;
        self.continue_ = if expect_continue && !self.body_done {
            Continue::Owed
        } else {
            Continue::No
        };
        self.version = version;
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
        self.interim.extend_from_slice(head);
    }

    /// Writes and flushes the interim responses queued.
    fn poll_interim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.interim.is_empty() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.interim))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.interim.advance(n);
            self.interim_unflushed = true;
        }
        if self.interim_unflushed {
            ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
            self.interim_unflushed = false;
            // Freed: a connection keeps no buffer it does not use.
            self.interim = BytesMut::new();
        }
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
            self.interim.extend_from_slice(CONTINUE_100);
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
                    return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
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
            .get_or_insert_with(HeaderMap::new)
            .append(name, value);
        Ok(())
    }

    /// Reads past what the handler left of the request body, so the
    /// connection can carry the next request. False when the connection
    /// must close instead: the rest is long, broken, or never asked for
    /// (a client still waiting for its 100 Continue may not send it).
    async fn drain_body(&mut self, deadline: Instant) -> bool {
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

impl H1Body<'_> {
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

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.shutdown.wait_for(|s| *s) => {}
            _ = self.removed.wait_for(|r| *r) => {}
        }
    }
}

/// How a connection's settings were when it was accepted.
pub struct Settings {
    pub limits: Limits,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The outcome of serving a connection as HTTP/1.1.
pub enum Served {
    Done,
    /// The client sent the HTTP/2 preface (prior knowledge): the stream,
    /// with the bytes read from it put back in front, is HTTP/2's.
    H2(Prefixed<ClientStream>),
}

/// Why a wait for the next head ended without one.
enum NoHead {
    /// Close without a word.
    Close,
    /// Answer this, then close.
    Refuse(StatusCode),
    Timeout,
    H2,
}

/// Serves HTTP/1.1 requests on `stream` until the connection ends, one at a
/// time in arrival order (pipelined requests wait in the read buffer).
/// Once `stop` is set an idle connection closes, a busy one after its
/// response.
pub async fn serve(
    ctx: &ConnCtx,
    stream: ClientStream,
    settings: Settings,
    mut stop: Stop,
) -> Served {
    let mut reader = Reader {
        stream,
        buf: BytesMut::new(),
        body: BodyDecoder::Length(0),
        body_done: true,
        continue_: Continue::No,
        version: Version::Http11,
        interim: BytesMut::new(),
        interim_unflushed: false,
        trailers: None,
    };
    let mut answered = false;
    loop {
        let deadline = Instant::now() + settings.header_timeout;
        let head = match read_head(&mut reader, &settings, deadline, answered, &mut stop).await {
            Ok(head) => head,
            Err(NoHead::Close) => return Served::Done,
            Err(NoHead::H2) => {
                let preface = std::mem::take(&mut reader.buf).freeze();
                return Served::H2(Prefixed::new(preface, reader.stream));
            }
            Err(NoHead::Timeout) => {
                let _ = reader.stream.write_all(REQUEST_TIMEOUT_408).await;
                let _ = reader.stream.shutdown().await;
                return Served::Done;
            }
            Err(NoHead::Refuse(status)) => {
                // Boxed, as the exchange below: rare, and large.
                let (method, version) = (&Method::GET, Version::Http11);
                Box::pin(refuse(ctx, &mut reader.stream, status, method, version)).await;
                let _ = reader.stream.shutdown().await;
                return Served::Done;
            }
        };
        answered = true;
        // Boxed: an exchange's future is many times the size of the wait
        // for a head, and held inline it would stay allocated with every
        // idle connection's task.
        match Box::pin(exchange(ctx, &mut reader, head, &stop, &settings)).await {
            Next::Head => reader.release(),
            Next::Close => {
                let _ = reader.stream.shutdown().await;
                return Served::Done;
            }
            Next::Tunnel(tunnel) => {
                // What the client sent behind its upgrade request (usually
                // nothing) is copied out, so the read buffer goes back to the
                // free list: an idle tunnel holds no buffer.
                let rest = Bytes::copy_from_slice(&reader.buf);
                reader.buf.clear();
                reader.release();
                Box::pin(tunnel.run(Prefixed::new(rest, reader.stream))).await;
                return Served::Done;
            }
        }
    }
}

/// What a connection does after an exchange.
enum Next {
    /// Read the next request.
    Head,
    Close,
    /// The response was a 101: the connection is this tunnel's now.
    Tunnel(Tunnel),
}

/// Serves one request: hands it to the handler with its body read from the
/// connection, writes the response, and reads past what the handler left
/// of the body.
async fn exchange(
    ctx: &ConnCtx,
    reader: &mut Reader,
    head: RequestHead,
    stop: &Stop,
    settings: &Settings,
) -> Next {
    // Framing is judged on the head as received, before the head becomes
    // the request; a head that cannot be one is refused first.
    let kind = framing::request_body(&head);
    let method = head.method.clone();
    let version = head.version;
    let Some(exchange) = Exchange::begin(head) else {
        let status = StatusCode::BAD_REQUEST;
        refuse(ctx, &mut reader.stream, status, &method, version).await;
        return Next::Close;
    };
    let kind = match kind {
        Ok(kind) => kind,
        Err(e) => {
            let status = e.request_status();
            refuse(ctx, &mut reader.stream, status, &method, version).await;
            return Next::Close;
        }
    };
    let Exchange {
        request,
        keep_alive,
    } = exchange;
    reader.start_body(kind, expect_continue(&request), version);
    let request = request.map(|()| ClientBody::H1(H1Body(reader)));
    let handled = ctx.handle(request).await;
    // Interim responses still on their way go out before the final one.
    if std::future::poll_fn(|cx| reader.poll_interim(cx))
        .await
        .is_err()
    {
        return Next::Close;
    }
    if let Some(tunnel) = handled.tunnel {
        let written = write_response(
            &mut reader.stream,
            handled.response,
            &method,
            false,
            version,
        )
        .await;
        return match written {
            Ok(_) => Next::Tunnel(tunnel),
            Err(_) => Next::Close,
        };
    }
    let close = !keep_alive
        || stop.is_set()
        || !reader.body_done && reader.continue_ == Continue::Owed
        || headers::connection_has(handled.response.headers(), "close");
    let written = write_response(
        &mut reader.stream,
        handled.response,
        &method,
        close,
        version,
    )
    .await;
    let deadline = Instant::now() + settings.header_timeout;
    if matches!(written, Ok(false)) && reader.drain_body(deadline).await {
        Next::Head
    } else {
        Next::Close
    }
}

/// Answers a request that cannot be served (`ctx` counts it) and closes:
/// what follows its head can no longer be framed.
async fn refuse(
    ctx: &ConnCtx,
    stream: &mut ClientStream,
    status: StatusCode,
    method: &Method,
    version: Version,
) {
    let response = ctx.refuse(status);
    let _ = write_response(stream, response, method, true, version).await;
}

/// Waits for and parses the next request head. `answered`: a response went
/// out on this connection, so silence until `deadline` is an idle
/// keep-alive connection, closed without a 408.
async fn read_head(
    reader: &mut Reader,
    settings: &Settings,
    deadline: Instant,
    answered: bool,
    stop: &mut Stop,
) -> Result<RequestHead, NoHead> {
    let idle_deadline = if answered {
        deadline.min(Instant::now() + settings.idle_timeout)
    } else {
        deadline
    };
    loop {
        if !reader.buf.is_empty() {
            if !answered && reader.buf[0] == b'P' {
                let n = reader.buf.len().min(H2_PREFACE.len());
                if reader.buf[..n] == H2_PREFACE[..n] {
                    if n == H2_PREFACE.len() {
                        return Err(NoHead::H2);
                    }
                    // Part of the preface: read on.
                    fill_by(reader, deadline).await?;
                    continue;
                }
            }
            match RequestHead::parse(&mut reader.buf, settings.limits) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => return Err(NoHead::Refuse(e.status())),
            }
            fill_by(reader, deadline).await?;
            continue;
        }
        // Nothing of a request yet: wait holding no buffer.
        reader.release();
        let silent = if answered {
            NoHead::Close
        } else {
            NoHead::Timeout
        };
        tokio::select! {
            ready = reader.stream.readable() => {
                if ready.is_err() {
                    return Err(NoHead::Close);
                }
            }
            () = tokio::time::sleep_until(idle_deadline) => return Err(silent),
            // Nothing was asked: nothing to finish.
            () = stop.wait() => return Err(NoHead::Close),
        }
        match tokio::time::timeout_at(deadline, reader.fill()).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(NoHead::Close),
            Ok(Ok(_)) => {}
            Err(_) => return Err(silent),
        }
    }
}

/// Reads more of a head begun; past `deadline`, a 408.
async fn fill_by(reader: &mut Reader, deadline: Instant) -> Result<(), NoHead> {
    match tokio::time::timeout_at(deadline, reader.fill()).await {
        Ok(Ok(0)) | Ok(Err(_)) => Err(NoHead::Close),
        Ok(Ok(_)) => Ok(()),
        Err(_) => Err(NoHead::Timeout),
    }
}

/// A request head made into the request the handler sees.
struct Exchange {
    request: Request<()>,
    /// The client lets the connection carry another request.
    keep_alive: bool,
}

impl Exchange {
    /// `None` for a head that cannot be one (a target or field `http`
    /// refuses).
    fn begin(head: RequestHead) -> Option<Exchange> {
        let server_wide = head.method == Method::OPTIONS
            && matches!(
                head.target_form(),
                TargetForm::Absolute {
                    path_and_query: "",
                    ..
                }
            );
        let uri = Uri::from_maybe_shared(head.target_bytes()).ok()?;
        // Room for the fields the proxy adds (the X-Forwarded family), so
        // they do not grow the map.
        let headers = head.fields.to_header_map(4).ok()?;
        let keep_alive = match head.version {
            Version::Http11 => !headers::connection_has(&headers, "close"),
            Version::Http10 => headers::connection_has(&headers, "keep-alive"),
        };
        let mut request = Request::new(());
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = head.version.as_http();
        *request.headers_mut() = headers;
        if server_wide {
            request.extensions_mut().insert(ServerWideOptions);
        }
        request
            .extensions_mut()
            .insert(HeaderCase::new(head.fields));
        Some(Exchange {
            request,
            keep_alive,
        })
    }
}

fn expect_continue(request: &Request<()>) -> bool {
    request.version() == http::Version::HTTP_11
        && request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body at all: HEAD, 1xx, 204, 304.
    None,
    /// Its bytes as they come: a `Content-Length` body, one an HTTP/1.0
    /// client reads until the close, or a server's chunked body passed on
    /// with its chunk framing as it came.
    Plain,
    /// Chunked here: each data frame becomes a chunk.
    Chunked,
}

/// Writes a response: the head, then its body as it comes, coalescing what
/// is ready at once into one write. `close` adds `Connection: close`.
/// Returns whether the connection must close: asked to, or the body's end
/// is the close (an HTTP/1.0 client, a length unknown).
///
/// The fields the response came with are written as the server spelled
/// them; those sluice adds for the framing and the connection
/// (`Content-Length` it computed, `Transfer-Encoding`, `Date` when missing,
/// `Connection`) go behind them, in sluice's own lower case, never through
/// the map.
async fn write_response(
    stream: &mut ClientStream,
    response: Response<ResponseBody>,
    method: &Method,
    mut close: bool,
    version: Version,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut len_text = [0u8; 20];
    let mut added: [Option<(&[u8], &[u8])>; 3] = [None; 3];
    let framing = if no_body {
        Framing::None
    } else if parts.headers.contains_key(header::CONTENT_LENGTH) {
        Framing::Plain
    } else if let Some(len) = exact_len(&body) {
        added[0] = Some((b"content-length", write::decimal(len, &mut len_text)));
        Framing::Plain
    } else if version == Version::Http11 {
        added[0] = Some((b"transfer-encoding", b"chunked"));
        // Between HTTP/1.1 peers a chunked body is passed on as it came.
        if body.pass_chunked() {
            Framing::Plain
        } else {
            Framing::Chunked
        }
    } else {
        close = true;
        Framing::Plain
    };
    let date = (!parts.headers.contains_key(header::DATE)).then(crate::http1::date::now);
    if let Some(date) = &date {
        added[1] = Some((b"date", date.as_bytes()));
    }
    // sluice's own answers may carry their `Connection: close` already.
    if status != StatusCode::SWITCHING_PROTOCOLS && !parts.headers.contains_key(header::CONNECTION)
    {
        if close {
            added[2] = Some((b"connection", b"close"));
        } else if version == Version::Http10 {
            added[2] = Some((b"connection", b"keep-alive"));
        }
    }
    let mut out = buffers::take_read();
    let mut speller = Speller::new(body.case());
    write::response_head(
        &mut out,
        status,
        parts
            .headers
            .iter()
            .map(|(name, value)| (speller.spell(name), value.as_bytes()))
            .chain(added.into_iter().flatten()),
    );
    drop(parts);
    if framing == Framing::None {
        drop(body);
        let written = stream.write_all(&out).await;
        buffers::give_back(out);
        written?;
        stream.flush().await?;
        return Ok(close);
    }
    loop {
        // What is ready now joins `out`; only a wait writes it first.
        let polled =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                    out.clear();
                }
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let frame = match frame {
            None => {
                if framing == Framing::Chunked {
                    out.put_slice(b"0\r\n\r\n");
                }
                break;
            }
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => {
                if framing == Framing::Chunked {
                    chunk_size_line(&mut out, data.len());
                }
                if data.len() <= COALESCE_MAX {
                    out.put_slice(&data);
                } else {
                    stream.write_all(&out).await?;
                    out.clear();
                    stream.write_all(&data).await?;
                }
                if framing == Framing::Chunked {
                    out.put_slice(b"\r\n");
                }
            }
            Err(frame) => {
                if let (Framing::Chunked, Ok(trailers)) = (framing, frame.into_trailers()) {
                    out.put_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        out.put_slice(name.as_str().as_bytes());
                        out.put_slice(b": ");
                        out.put_slice(value.as_bytes());
                        out.put_slice(b"\r\n");
                    }
                    out.put_slice(b"\r\n");
                    break;
                }
            }
        }
    }
    drop(body);
    stream.write_all(&out).await?;
    buffers::give_back(out);
    stream.flush().await?;
    Ok(close)
}

/// A chunk-size line: the length in hex and CRLF.
fn chunk_size_line(out: &mut BytesMut, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.put_u8(HEX[(len >> (i * 4)) & 0xf]);
    }
    out.put_slice(b"\r\n");
}

/// The length of a body known whole before it is sent: sluice's own
/// answers, and bodies already over.
fn exact_len(body: &ResponseBody) -> Option<u64> {
    match body {
        ResponseBody::Full(_) => body.size_hint().exact(),
        ResponseBody::Upstream { .. } if body.is_end_stream() => Some(0),
        ResponseBody::Upstream { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lower_case_hex() {
        for (len, line) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
        ] {
            let mut out = BytesMut::new();
            chunk_size_line(&mut out, len);
            assert_eq!(&out[..], line.as_bytes());
        }
    }
}
