//! The client socket as hyper sees it, watched for the two things hyper's
//! HTTP/1.1 server hides from the request handler:
//!
//! - a header timeout: hyper just closes the connection; the contract wants a
//!   408 first when a request was under way;
//! - a request head with both `Content-Length` and `Transfer-Encoding`: hyper
//!   drops the `Content-Length` and treats the body as chunked (as RFC 9112
//!   allows), but the contract refuses such a request with 400 before it
//!   reaches a backend, since another server in the chain may frame it
//!   differently;
//! - a `Transfer-Encoding` with a tab around its value: hyper strips it and
//!   reads `chunked`, nginx refuses the coding, and sluice never forwards
//!   what nginx refuses (tests/nginx_framing.rs);
//! - `OPTIONS http://a.test` (absolute form, empty path): `http::Uri` shows
//!   its path as `/`, but the request is about the server as a whole and
//!   must be forwarded as `OPTIONS *` (RFC 9112 §3.2.4).
//!
//! It also mends one thing hyper gets wrong: a trailer section (after the
//! last chunk) whose lines end in a bare LF. RFC 9112 §2.2 lets a recipient
//! take a bare LF as a line end, as nginx and HAProxy do; hyper's chunked
//! decoder waits for a CR instead, so `0\r\n\n` left the connection hanging,
//! or swallowed a pipelined request as trailer fields. A CR is inserted
//! before each such LF, so hyper sees the section end where the client
//! ended it.
//!
//! To find request heads in the byte stream, [`Framing`] follows HTTP/1.1
//! message framing the way hyper does: head, then a `Content-Length` or
//! chunked body. It gives up (and flags nothing more) on anything it does
//! not expect, which hyper refuses and closes anyway.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What a client whose request head timed out is told before the close.
pub const REQUEST_TIMEOUT_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Longest head line followed; hyper refuses longer heads itself.
const MAX_LINE: usize = 64 * 1024;

/// Shared between a connection's socket and its request handler.
#[derive(Debug)]
pub struct ConnWatch {
    /// Index (0-based, in arrival order) of the first request head with
    /// ambiguous framing (see the module docs); hyper closes the connection
    /// after it, so later ones do not matter.
    first_ambiguous: AtomicU64,
    /// Requests handed to the handler so far.
    handled: AtomicU64,
    /// Set when hyper's header timeout ended the connection.
    timed_out: AtomicBool,
    /// Indexes of the `OPTIONS` requests whose target is in absolute form
    /// with an empty path. Rare: only those requests take this lock.
    server_wide_options: Mutex<Vec<u64>>,
}

impl Default for ConnWatch {
    fn default() -> Self {
        ConnWatch {
            first_ambiguous: AtomicU64::new(u64::MAX),
            handled: AtomicU64::new(0),
            timed_out: AtomicBool::new(false),
            server_wide_options: Mutex::new(Vec::new()),
        }
    }
}

impl ConnWatch {
    /// Called once per request, in order (HTTP/1.1 handles one at a time):
    /// the request's index on the connection.
    pub fn next_request(&self) -> u64 {
        self.handled.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether request `index`'s head had ambiguous framing.
    pub fn ambiguous(&self, index: u64) -> bool {
        index == self.first_ambiguous.load(Ordering::Acquire)
    }

    /// Whether request `index` is an `OPTIONS` for the whole server: its
    /// target had a scheme and an authority but no path.
    pub fn options_server_wide(&self, index: u64) -> bool {
        let mut marked = self
            .server_wide_options
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Handled in order: earlier marks are done with.
        marked.retain(|&i| i >= index);
        marked.first() == Some(&index)
    }

    /// The connection ended on a header timeout: answer 408 if a head was
    /// under way.
    pub fn header_timed_out(&self) {
        self.timed_out.store(true, Ordering::Relaxed);
    }
}

/// Where [`Framing`] is in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    /// HTTP/2, a tunnel, or something hyper will refuse: stop following.
    Off,
}

/// Follows request framing over the bytes read from the client.
#[derive(Debug)]
struct Framing {
    state: State,
    line: Vec<u8>,
    /// Lines of the current head, the request line included.
    head_lines: usize,
    content_length: Option<u64>,
    transfer_encoding: bool,
    /// A tab in a `Transfer-Encoding` value.
    tabbed_coding: bool,
    /// `Upgrade` or `CONNECT`: what follows may be a tunnel.
    upgrade: bool,
    heads: u64,
}

impl Framing {
    fn new() -> Self {
        Framing {
            state: State::Head,
            line: Vec::new(),
            head_lines: 0,
            content_length: None,
            transfer_encoding: false,
            tabbed_coding: false,
            upgrade: false,
            heads: 0,
        }
    }

    /// Follows `bytes`. Stops after a trailer line that ends in a bare LF
    /// and returns that LF's index, so the caller can put a CR before it;
    /// the caller feeds the rest again.
    fn feed(&mut self, mut bytes: &[u8], watch: &ConnWatch) -> Option<usize> {
        let len = bytes.len();
        while !bytes.is_empty() {
            match self.state {
                State::Off => return None,
                State::Body(left) | State::ChunkData(left) => {
                    let take = usize::try_from(left).map_or(bytes.len(), |l| l.min(bytes.len()));
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    if left == 0 {
                        self.state = match self.state {
                            State::Body(_) => self.after_message(),
                            _ => State::ChunkEnd,
                        };
                    } else {
                        self.state = match self.state {
                            State::Body(_) => State::Body(left),
                            _ => State::ChunkData(left),
                        };
                    }
                }
                _ => {
                    let Some(end) = find_newline(bytes) else {
                        self.push_line(bytes);
                        return None;
                    };
                    let trailer = self.state == State::Trailers;
                    let bare;
                    if self.line.is_empty() {
                        // The whole line is at hand: no copy.
                        let line = &bytes[..end];
                        bytes = &bytes[end + 1..];
                        let stripped = line.strip_suffix(b"\r");
                        bare = stripped.is_none();
                        self.state = if line.len() > MAX_LINE {
                            State::Off
                        } else {
                            self.on_line(stripped.unwrap_or(line), watch)
                        };
                    } else {
                        self.push_line(&bytes[..end]);
                        bytes = &bytes[end + 1..];
                        let mut line = std::mem::take(&mut self.line);
                        bare = line.last() != Some(&b'\r');
                        if !bare {
                            line.pop();
                        }
                        self.state = self.on_line(&line, watch);
                        line.clear();
                        self.line = line;
                    }
                    if trailer && bare && self.state != State::Off {
                        return Some(len - bytes.len() - 1);
                    }
                }
            }
        }
        None
    }

    fn push_line(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > MAX_LINE {
            self.state = State::Off;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn on_line(&mut self, line: &[u8], watch: &ConnWatch) -> State {
        match self.state {
            State::Head if line.is_empty() && self.head_lines == 0 => State::Head,
            State::Head if line.is_empty() => self.end_head(watch),
            State::Head => {
                if self.head_lines == 0 {
                    if line.starts_with(b"PRI ") || line.starts_with(b"CONNECT ") {
                        return State::Off;
                    }
                    if let Some(target) = line.strip_prefix(b"OPTIONS ")
                        && has_empty_path(target)
                    {
                        watch
                            .server_wide_options
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(self.heads);
                    }
                } else if let Some((name, value)) = split_field(line) {
                    if name.eq_ignore_ascii_case(b"content-length") {
                        let Some(length) = parse_decimal(value) else {
                            return State::Off;
                        };
                        self.content_length = Some(length);
                    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                        self.transfer_encoding = true;
                        // A name is a token: a tab on the line is the value's.
                        self.tabbed_coding |= line.contains(&b'\t');
                    } else if name.eq_ignore_ascii_case(b"upgrade") {
                        self.upgrade = true;
                    }
                }
                self.head_lines += 1;
                State::Head
            }
            State::ChunkSize => {
                let size = line.split(|&b| b == b';').next().unwrap_or_default();
                match parse_hex(size) {
                    Some(0) => State::Trailers,
                    Some(size) => State::ChunkData(size),
                    None => State::Off,
                }
            }
            State::ChunkEnd if line.is_empty() => State::ChunkSize,
            State::Trailers if line.is_empty() => self.after_message(),
            State::Trailers => State::Trailers,
            _ => State::Off,
        }
    }

    fn end_head(&mut self, watch: &ConnWatch) -> State {
        if self.transfer_encoding && self.content_length.is_some() || self.tabbed_coding {
            let _ = watch.first_ambiguous.compare_exchange(
                u64::MAX,
                self.heads,
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
        self.heads += 1;
        let state = if self.transfer_encoding {
            State::ChunkSize
        } else {
            match self.content_length {
                Some(length) if length > 0 => State::Body(length),
                _ => self.after_message(),
            }
        };
        self.head_lines = 0;
        self.content_length = None;
        self.transfer_encoding = false;
        self.tabbed_coding = false;
        state
    }

    fn after_message(&mut self) -> State {
        if std::mem::take(&mut self.upgrade) {
            State::Off
        } else {
            State::Head
        }
    }
}

/// The index of the first `\n` in `bytes`, looked for eight bytes at a
/// time: every byte of every request head passes through here.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes")) ^ NEWLINES;
        // A zero byte of `word` (a newline) sets its high bit here; bits set
        // above the lowest true one may be false, so only the lowest counts.
        let zeros = word.wrapping_sub(ONES) & !word & HIGHS;
        if zeros != 0 {
            return Some(offset + (zeros.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| offset + i)
}

/// Whether a request line's target (what follows the method) is in
/// absolute form with neither path nor query: `http://a.test HTTP/1.1`.
fn has_empty_path(rest: &[u8]) -> bool {
    let target = rest.split(|&b| b == b' ').next().unwrap_or_default();
    let Some(at) = target.windows(3).position(|w| w == b"://") else {
        return false;
    };
    let authority = &target[at + 3..];
    !authority.is_empty() && !authority.iter().any(|&b| matches!(b, b'/' | b'?'))
}

fn split_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    Some((&line[..colon], line[colon + 1..].trim_ascii()))
}

fn parse_decimal(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn parse_hex(value: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(value.trim_ascii()).ok()?, 16).ok()
}

/// A client socket that can take a few bytes without waiting: the 408 is
/// written as a timed-out connection is dropped, outside any task.
pub trait WriteNow {
    fn write_now(&mut self, bytes: &[u8]);
}

impl WriteNow for TcpStream {
    fn write_now(&mut self, bytes: &[u8]) {
        let _ = self.try_write(bytes);
    }
}

impl WriteNow for tokio_rustls::server::TlsStream<TcpStream> {
    fn write_now(&mut self, bytes: &[u8]) {
        let (tcp, tls) = self.get_mut();
        if std::io::Write::write_all(&mut tls.writer(), bytes).is_ok() {
            let _ = tls.write_tls(&mut TryWriter(tcp));
        }
    }
}

/// Blocking-style writes that never block: what fits in the socket buffer.
struct TryWriter<'a>(&'a TcpStream);

impl std::io::Write for TryWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.try_write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The client's stream (TCP, or TLS over it), watched (see the module docs).
pub struct ClientIo<S: WriteNow> {
    stream: S,
    watch: Arc<ConnWatch>,
    framing: Framing,
    /// Request bytes arrived since the last response bytes went out, or
    /// nothing was answered yet: a timeout now interrupts a request, not an
    /// idle keep-alive connection.
    head_pending: bool,
    /// Bytes read and mended (see the module docs) that did not fit in
    /// hyper's buffer; handed over before the socket is read again.
    pending: Vec<u8>,
}

impl<S: WriteNow> ClientIo<S> {
    pub fn new(stream: S, watch: Arc<ConnWatch>) -> Self {
        ClientIo {
            stream,
            watch,
            framing: Framing::new(),
            head_pending: true,
            pending: Vec::new(),
        }
    }

    /// Puts a CR before each bare LF at `bare_lfs` (indexes into what was
    /// just read, after `before` in `buf`); what no longer fits waits in
    /// `pending`.
    fn insert_crs(&mut self, buf: &mut ReadBuf<'_>, before: usize, bare_lfs: &[usize]) {
        let read = buf.filled()[before..].to_vec();
        buf.set_filled(before);
        let mut mended = Vec::with_capacity(read.len() + bare_lfs.len());
        let mut from = 0;
        for &lf in bare_lfs {
            mended.extend_from_slice(&read[from..lf]);
            mended.push(b'\r');
            from = lf;
        }
        mended.extend_from_slice(&read[from..]);
        let fits = mended.len().min(buf.remaining());
        buf.put_slice(&mended[..fits]);
        self.pending.extend_from_slice(&mended[fits..]);
    }

    fn wrote(&mut self, polled: &Poll<std::io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.head_pending = false;
        }
    }
}

impl<S: WriteNow> Drop for ClientIo<S> {
    fn drop(&mut self) {
        let http2 = self.framing.heads == 0 && self.framing.state == State::Off;
        if self.head_pending && !http2 && self.watch.timed_out.load(Ordering::Relaxed) {
            // Best effort: a few bytes into what is an idle socket buffer.
            self.stream.write_now(REQUEST_TIMEOUT_408);
        }
    }
}

impl<S: WriteNow + AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.pending.is_empty() {
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending[..n]);
            this.pending.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.head_pending = true;
            // Allocates only if a bare LF is found.
            let mut bare_lfs = Vec::new();
            let mut at = 0;
            while let Some(lf) = this.framing.feed(&read[at..], &this.watch) {
                bare_lfs.push(at + lf);
                at += lf + 1;
            }
            if !bare_lfs.is_empty() {
                this.insert_crs(buf, before, &bare_lfs);
            }
        }
        polled
    }
}

impl<S: WriteNow + AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(chunks: &[&[u8]]) -> (u64, u64) {
        let watch = ConnWatch::default();
        let mut framing = Framing::new();
        for chunk in chunks {
            let mut at = 0;
            while let Some(lf) = framing.feed(&chunk[at..], &watch) {
                at += lf + 1;
            }
        }
        (framing.heads, watch.first_ambiguous.load(Ordering::Relaxed))
    }

    #[test]
    fn finds_the_ambiguous_head_among_pipelined_requests() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n\
            GET /c HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(flags(&[stream]), (4, 3));
        // Byte by byte, the same.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(flags(&bytes), (4, 3));
    }

    #[test]
    fn a_tab_around_a_transfer_coding_is_ambiguous() {
        let stream: &[u8] =
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n";
        assert_eq!(flags(&[stream]), (2, 1));
    }

    #[test]
    fn body_bytes_are_not_mistaken_for_headers() {
        let stream: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 51\r\n\r\n\
            \r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n\
            GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(flags(&[stream]), (2, u64::MAX));
    }

    #[test]
    fn find_newline_finds_the_first_one_anywhere() {
        for len in 0..40 {
            for at in 0..=len {
                let mut bytes: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                // Bytes that trip naive zero-byte tricks right after it.
                if at < len {
                    bytes[at] = b'\n';
                    if at + 1 < len {
                        bytes[at + 1] = 0x0b;
                    }
                    if at + 2 < len {
                        bytes[at + 2] = b'\n';
                    }
                }
                let expected = bytes.iter().position(|&b| b == b'\n');
                assert_eq!(find_newline(&bytes), expected, "{bytes:?}");
            }
        }
        assert_eq!(find_newline(&[0x8a, 0x0a]), Some(1));
        assert_eq!(find_newline(&[0x8a; 16]), None);
    }

    #[test]
    fn a_bare_lf_ending_the_trailers_is_reported_where_it_is() {
        let stream: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            0\r\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        let watch = ConnWatch::default();
        let mut framing = Framing::new();
        let lf = framing.feed(stream, &watch).expect("a bare LF");
        assert_eq!(&stream[lf - 3..=lf], b"0\r\n\n");
        assert_eq!(framing.feed(&stream[lf + 1..], &watch), None);
        assert_eq!(
            framing.heads, 2,
            "the pipelined request is a head, not trailers"
        );
    }

    #[test]
    fn crlf_trailers_need_no_mending() {
        let stream: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            0\r\nX-T: 1\r\n\r\n";
        let watch = ConnWatch::default();
        let mut framing = Framing::new();
        for byte in stream.chunks(1) {
            assert_eq!(framing.feed(byte, &watch), None);
        }
        assert_eq!(framing.state, State::Head);
    }

    #[test]
    fn only_an_absolute_target_without_path_is_server_wide() {
        assert!(has_empty_path(b"http://a.test HTTP/1.1"));
        assert!(has_empty_path(b"http://a.test:8080 HTTP/1.1"));
        assert!(!has_empty_path(b"http://a.test/ HTTP/1.1"));
        assert!(!has_empty_path(b"http://a.test?x HTTP/1.1"));
        assert!(!has_empty_path(b"* HTTP/1.1"));
        assert!(!has_empty_path(b"/ HTTP/1.1"));
    }

    #[test]
    fn server_wide_options_are_matched_by_request_index() {
        let watch = ConnWatch::default();
        let mut framing = Framing::new();
        framing.feed(
            b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n\
              OPTIONS http://a.test HTTP/1.1\r\nHost: x\r\n\r\n",
            &watch,
        );
        assert!(!watch.options_server_wide(0));
        assert!(watch.options_server_wide(1));
        assert!(!watch.options_server_wide(2));
    }

    #[test]
    fn http2_preface_stops_following() {
        let (heads, ambiguous) = flags(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"]);
        assert_eq!((heads, ambiguous), (0, u64::MAX));
    }
}
