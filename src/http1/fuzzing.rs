//! The codec's fuzz targets, as plain functions: `fuzz/` (cargo-fuzz) calls
//! them with generated inputs, and `tests/http1_corpus.rs` runs them over the
//! stored corpus and every crash found so far, so a regression fails
//! `cargo test` even where cargo-fuzz cannot run.
//!
//! Each target reads its input as a connection's byte stream the way a proxy
//! would, and panics when a property the proxy relies on breaks:
//! - reading the stream in small pieces gives the same messages as reading
//!   it whole (no decision depends on where a read happened to end);
//! - every step consumes what it says, and a stream always makes progress;
//! - what the proxy would pass on (a head written back, chunk framing as
//!   received, trailer lines with CRLF) reads back as the same message, so a
//!   server behind sluice cannot frame it differently;
//! - a written head parses back to the same method, target and fields.

use bytes::BytesMut;
use http::Method;

use super::body::{BodyDecoder, Step};
use super::framing;
use super::head::{Limits, RequestHead, ResponseHead};
use super::write;

const LIMITS: Limits = Limits {
    max_head: 2048,
    max_fields: 32,
};

const READ_BACK: Limits = Limits {
    max_head: 4 * LIMITS.max_head,
    max_fields: LIMITS.max_fields,
};

/// One thing found in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Head(Vec<u8>),
    Data(Vec<u8>),
    Trailer(Vec<u8>),
    End,
    Refused(String),
    Truncated,
}

/// Client bytes: pipelined requests, each head followed by its body. The
/// first input byte picks the read size for the piecewise pass.
pub fn request_stream(data: &[u8]) {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let whole = requests(stream, stream.len().max(1), LIMITS);
    let pieces = requests(stream, usize::from(piece % 16) + 1, LIMITS);
    assert_eq!(whole.0, pieces.0, "reading in pieces changed the messages");
    let (events, forwarded) = whole;
    assert_eq!(
        // A written head may be longer than the one received (`a:b`
        // becomes `a: b`): the read-back is not about limits.
        requests(&forwarded, forwarded.len().max(1), READ_BACK).0,
        complete_messages(&events),
        "what would be forwarded reads back differently"
    );
}

/// Server bytes answering one request: interim responses, then the final
/// response and its body. The first input byte picks the request method
/// (HEAD or GET) and the read size for the piecewise pass.
pub fn response_stream(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let method = if first & 0x80 != 0 {
        Method::HEAD
    } else {
        Method::GET
    };
    let whole = response(&method, stream, stream.len().max(1), LIMITS);
    let pieces = response(&method, stream, usize::from(first % 16) + 1, LIMITS);
    assert_eq!(whole.0, pieces.0, "reading in pieces changed the response");
    let (events, forwarded) = whole;
    if events.last() == Some(&Event::End) {
        assert_eq!(
            response(&method, &forwarded, forwarded.len().max(1), READ_BACK).0,
            events,
            "what would be forwarded reads back differently"
        );
    }
}

/// The events of the messages that ended, without whatever came after the
/// last complete one: only complete messages are forwarded.
fn complete_messages(events: &[Event]) -> Vec<Event> {
    let end = events
        .iter()
        .rposition(|e| *e == Event::End)
        .map_or(0, |i| i + 1);
    events[..end].to_vec()
}

/// A connection's bytes, arriving `piece` at a time.
struct Reader<'a> {
    stream: &'a [u8],
    read: usize,
    piece: usize,
    buf: BytesMut,
}

impl<'a> Reader<'a> {
    fn new(stream: &'a [u8], piece: usize) -> Self {
        Reader {
            stream,
            read: 0,
            piece,
            buf: BytesMut::new(),
        }
    }

    /// Reads one more piece; false at the end of the stream.
    fn fill(&mut self) -> bool {
        let end = (self.read + self.piece).min(self.stream.len());
        self.buf.extend_from_slice(&self.stream[self.read..end]);
        let more = end > self.read;
        self.read = end;
        more
    }
}

fn requests(stream: &[u8], piece: usize, limits: Limits) -> (Vec<Event>, Vec<u8>) {
    let mut reader = Reader::new(stream, piece);
    let mut events = Vec::new();
    let mut forwarded = BytesMut::new();
    loop {
        let head = match RequestHead::parse(&mut reader.buf, limits) {
            Ok(Some(head)) => head,
            Ok(None) if reader.fill() => continue,
            Ok(None) => return (events, forwarded.to_vec()),
            Err(e) => {
                events.push(Event::Refused(e.to_string()));
                return (events, forwarded.to_vec());
            }
        };
        check_request_round_trip(&head);
        let start = format!("{} {}", head.method, head.target());
        events.push(Event::Head(head_summary(start, head.fields.iter())));
        let kind = match framing::request_body(&head) {
            Ok(kind) => kind,
            Err(e) => {
                events.push(Event::Refused(e.to_string()));
                return (events, forwarded.to_vec());
            }
        };
        let mut message = BytesMut::new();
        write::request_head(
            &mut message,
            head.method.as_str(),
            head.target(),
            head.fields.iter(),
        );
        let mut body = BodyDecoder::new(kind);
        if !follow_body(&mut body, &mut reader, &mut events, &mut message) {
            return (events, forwarded.to_vec());
        }
        forwarded.extend_from_slice(&message);
    }
}

fn response(method: &Method, stream: &[u8], piece: usize, limits: Limits) -> (Vec<Event>, Vec<u8>) {
    let mut reader = Reader::new(stream, piece);
    let mut events = Vec::new();
    let mut forwarded = BytesMut::new();
    loop {
        let head = match ResponseHead::parse(&mut reader.buf, limits) {
            Ok(Some(head)) => head,
            Ok(None) if reader.fill() => continue,
            Ok(None) => {
                events.push(Event::Truncated);
                return (events, forwarded.to_vec());
            }
            Err(e) => {
                events.push(Event::Refused(e.to_string()));
                return (events, forwarded.to_vec());
            }
        };
        let start = head.status.as_str().to_owned();
        events.push(Event::Head(head_summary(start, head.fields.iter())));
        write::response_head(&mut forwarded, head.status, head.fields.iter());
        let kind = match framing::response_body(method, &head) {
            Ok(kind) => kind,
            Err(e) => {
                events.push(Event::Refused(e.to_string()));
                return (events, forwarded.to_vec());
            }
        };
        let mut body = BodyDecoder::new(kind);
        if !follow_body(&mut body, &mut reader, &mut events, &mut forwarded) {
            return (events, forwarded.to_vec());
        }
        // Interim responses come before the final one, which ends the
        // exchange; so does a switch to another protocol.
        if !head.status.is_informational() || head.status == http::StatusCode::SWITCHING_PROTOCOLS {
            return (events, forwarded.to_vec());
        }
    }
}

/// Follows one body to its end, passing it on into `out` as a proxy
/// between HTTP/1.1 peers would. False when the stream ended or was refused.
fn follow_body(
    body: &mut BodyDecoder,
    reader: &mut Reader<'_>,
    events: &mut Vec<Event>,
    out: &mut BytesMut,
) -> bool {
    loop {
        let input = &reader.buf[..];
        let step = match body.step(input) {
            Ok(step) => step,
            Err(e) => {
                events.push(Event::Refused(e.to_string()));
                return false;
            }
        };
        let consumed = match step {
            Step::NeedMore => {
                if reader.fill() {
                    continue;
                }
                match body.at_eof() {
                    Ok(()) => {
                        events.push(Event::End);
                        return false;
                    }
                    Err(_) => {
                        events.push(Event::Truncated);
                        return false;
                    }
                }
            }
            Step::Framing(n) => {
                assert!(n > 0 && n <= input.len());
                out.extend_from_slice(&input[..n]);
                n
            }
            Step::Data(n) => {
                assert!(n > 0 && n <= input.len());
                push_data(events, &input[..n]);
                out.extend_from_slice(&input[..n]);
                n
            }
            Step::Trailer { line, consumed } => {
                assert!(line < consumed && consumed <= input.len());
                events.push(Event::Trailer(input[..line].to_vec()));
                write::trailer_line(out, &input[..line]);
                consumed
            }
            Step::End(n) => {
                assert!(n <= input.len());
                if n > 0 {
                    out.extend_from_slice(b"\r\n");
                }
                let _ = reader.buf.split_to(n);
                events.push(Event::End);
                assert_eq!(body.step(&reader.buf), Ok(Step::End(0)), "End is final");
                return true;
            }
        };
        let _ = reader.buf.split_to(consumed);
    }
}

/// Data is one event however many reads it took.
fn push_data(events: &mut Vec<Event>, data: &[u8]) {
    match events.last_mut() {
        Some(Event::Data(previous)) => previous.extend_from_slice(data),
        _ => events.push(Event::Data(data.to_vec())),
    }
}

fn head_summary<'a>(start: String, fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut summary = start.into_bytes();
    for (name, value) in fields {
        summary.push(b'\n');
        summary.extend_from_slice(name);
        summary.push(b':');
        summary.extend_from_slice(value);
    }
    summary
}

fn check_request_round_trip(head: &RequestHead) {
    let mut out = BytesMut::new();
    write::request_head(
        &mut out,
        head.method.as_str(),
        head.target(),
        head.fields.iter(),
    );
    let limits = Limits {
        max_head: out.len(),
        max_fields: LIMITS.max_fields,
    };
    let again = RequestHead::parse(&mut out, limits)
        .expect("a written head parses")
        .expect("a written head is complete");
    assert_eq!(again.method, head.method);
    assert_eq!(again.target(), head.target());
    assert!(again.fields.iter().eq(head.fields.iter()));
    assert!(out.is_empty());
}
