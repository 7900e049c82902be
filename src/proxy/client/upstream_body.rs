//! A response body read from its server, decoded or passed through as it
//! came.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use super::super::buffers;
use super::super::prefixed::Prefixed;
use super::poll_read_more;
use crate::http1::head::Fields;
use crate::http1::{BodyDecoder, BodyKind, ChunkError, HeaderCase, Step};
use crate::upstream::Conn;
use crate::upstream::UpstreamError;

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
    /// response: the body goes wherever the head goes. Always there until
    /// the body is dropped.
    case: Option<HeaderCase>,
    /// The head's fields were left out of the response's map: the client's
    /// writer takes them from `case` as they came.
    unmapped: bool,
}

impl UpstreamBody {
    /// The body of a response whose head was just read from `conn`; `buf`
    /// holds what was read past the head.
    pub(super) fn new(
        conn: Conn,
        buf: BytesMut,
        kind: BodyKind,
        keep_alive: bool,
        case: HeaderCase,
        unmapped: bool,
    ) -> UpstreamBody {
        UpstreamBody {
            conn: Some(conn),
            buf,
            decoder: BodyDecoder::new(kind),
            ended: kind == BodyKind::Empty,
            keep_alive,
            passthrough: false,
            trailers: None,
            case: Some(case),
            unmapped,
        }
    }

    /// Whether the body is over: ended, or a length body whose last byte
    /// was read.
    fn finished(&self) -> bool {
        self.ended || self.decoder == BodyDecoder::Length(0)
    }

    /// How the server spelled the field names in the response's map;
    /// `None` when its fields are not there ([`UpstreamBody::raw_fields`]).
    pub fn case(&self) -> Option<&HeaderCase> {
        self.case.as_ref().filter(|_| !self.unmapped)
    }

    /// The server's fields, when they were left out of the response's map
    /// to be written to an HTTP/1.1 client as they came.
    pub fn raw_fields(&self) -> Option<&Fields> {
        self.case
            .as_ref()
            .filter(|_| self.unmapped)
            .map(HeaderCase::fields)
    }

    /// Makes a chunked body pass its chunk framing on as it came, for a
    /// client that reads chunked (HTTP/1.1) itself. False for any other
    /// body, or one already begun.
    pub fn pass_chunked(&mut self) -> bool {
        self.passthrough = matches!(&self.decoder, BodyDecoder::Chunked(c) if *c == Default::default())
            && !self.ended;
        self.passthrough
    }

    /// Checks the chunk framing of what arrived with the head: a body
    /// broken from its first lines makes an invalid response (a 502, a
    /// passive failure, retried when the rules allow), not a transfer that
    /// begins and is aborted at once. What arrives later is checked as it
    /// is read.
    pub(super) fn check_buffered(&self) -> Result<(), ChunkError> {
        let BodyDecoder::Chunked(_) = self.decoder else {
            return Ok(());
        };
        let mut decoder = self.decoder.clone();
        let mut at = 0;
        while at < self.buf.len() {
            let taken = match decoder.step(&self.buf[at..])? {
                Step::NeedMore | Step::End(_) => return Ok(()),
                Step::Framing(n) | Step::Data(n) => n,
                Step::Trailer { consumed, .. } => consumed,
            };
            if taken == 0 {
                break;
            }
            at += taken;
        }
        Ok(())
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
        // response, once nothing split off it is left: the head the names
        // are spelled from goes first.
        self.case = None;
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
