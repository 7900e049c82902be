//! Message heads: the request line or status line and the header fields,
//! parsed with `httparse` and kept as the bytes received.
//!
//! A head owns the bytes it was parsed from (a request's copied out of the
//! read buffer, so the buffer is free again while the request is handled;
//! a response's split off it, as its body is read from the same buffer)
//! and records where each part lies in them, so header names keep the case
//! the peer sent, values are never re-encoded, and a field is read as a
//! slice of the head, not an allocation of its own.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode};

mod fields;

use fields::Span;
pub use fields::{Fields, Known};

/// How large a head may be, and how many fields it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole head, start line to the blank line, in bytes.
    pub max_head: usize,
    pub max_fields: usize,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("head larger than {0} bytes")]
    TooLarge(usize),
    #[error("request line longer than the head may be")]
    TargetTooLong,
    #[error("more than {0} header fields")]
    TooManyFields(usize),
    #[error("malformed head: {0}")]
    Malformed(httparse::Error),
    #[error("HTTP version other than 1.0 or 1.1")]
    Version,
}

impl HeadError {
    /// What a client whose request head this is gets told.
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::TooLarge(_) | HeadError::TooManyFields(_) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::TargetTooLong => StatusCode::URI_TOO_LONG,
            HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
            HeadError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    fn from_minor(minor: Option<u8>) -> Result<Version, HeadError> {
        match minor {
            Some(0) => Ok(Version::Http10),
            Some(1) => Ok(Version::Http11),
            _ => Err(HeadError::Version),
        }
    }

    pub fn as_http(self) -> http::Version {
        match self {
            Version::Http10 => http::Version::HTTP_10,
            Version::Http11 => http::Version::HTTP_11,
        }
    }
}

/// The four request-target forms of RFC 9112 §3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm<'a> {
    /// `/path?query`.
    Origin(&'a str),
    /// `http://authority/path?query`; `path_and_query` is empty when the
    /// target has no path (`OPTIONS http://a.test` means `OPTIONS *`).
    Absolute {
        authority: &'a str,
        path_and_query: &'a str,
    },
    /// `host:port`, meant for CONNECT only.
    Authority(&'a str),
    /// `*`, meant for server-wide OPTIONS only.
    Asterisk,
}

/// A request head as received.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub version: Version,
    target: Span,
    pub fields: Fields,
}

impl RequestHead {
    /// The request target exactly as sent.
    pub fn target(&self) -> &str {
        // httparse accepts only visible ASCII in a target.
        std::str::from_utf8(self.target.get(&self.fields.bytes)).unwrap_or_default()
    }

    /// The request target as bytes shared with the head, for a `Uri`
    /// that needs no copy.
    pub fn target_bytes(&self) -> Bytes {
        self.fields
            .bytes
            .slice(self.target.start as usize..self.target.end as usize)
    }

    pub fn target_form(&self) -> TargetForm<'_> {
        target_form(self.target())
    }

    /// The head's size on the wire.
    pub fn wire_len(&self) -> usize {
        self.fields.bytes.len()
    }

    /// Parses a request head from the front of `buf`. `Ok(None)` means the
    /// head is not complete yet (and within the limits so far); a complete
    /// head is split off `buf`, leaving what follows it.
    pub fn parse(buf: &mut BytesMut, limits: Limits) -> Result<Option<RequestHead>, HeadError> {
        match Self::parse_as_sent(buf, limits) {
            Err(HeadError::Version) => match later_minor_as_11(buf) {
                LaterMinor::Rewritten => Self::parse_as_sent(buf, limits),
                // The line's end decides, as for a head in one read.
                LaterMinor::LineIncomplete if buf.len() < limits.max_head => Ok(None),
                _ => Err(HeadError::Version),
            },
            parsed => parsed,
        }
    }

    fn parse_as_sent(buf: &mut BytesMut, limits: Limits) -> Result<Option<RequestHead>, HeadError> {
        let parsed = with_field_slots(limits.max_fields, |slots| {
            let mut req = httparse::Request::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
                &mut req,
                window(buf, limits),
                slots,
            );
            let Some(len) =
                complete(parsed, buf, limits).map_err(|e| version_or_malformed(e, buf))?
            else {
                return Ok(None);
            };
            let version = Version::from_minor(req.version)?;
            let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
                .map_err(|_| HeadError::Malformed(httparse::Error::Token))?;
            let target = Span::of(buf, req.path.unwrap_or_default().as_bytes());
            let spans = Fields::collect(buf, req.headers);
            Ok(Some((len, method, version, target, spans)))
        })?;
        let Some((len, method, version, target, spans)) = parsed else {
            return Ok(None);
        };
        // Copied out rather than split off: a split head would keep the
        // whole read buffer alive for as long as the request is handled
        // (a long poll: its whole wait), where a copy is the head's size and
        // the buffer goes back to the free list as soon as it is empty.
        let bytes = Bytes::copy_from_slice(&buf[..len]);
        buf.advance(len);
        Ok(Some(RequestHead {
            method,
            version,
            target,
            fields: Fields { bytes, spans },
        }))
    }
}

/// A response head as received.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub fields: Fields,
}

impl ResponseHead {
    /// As [`RequestHead::parse`], for a status line and its fields.
    pub fn parse(buf: &mut BytesMut, limits: Limits) -> Result<Option<ResponseHead>, HeadError> {
        let parsed = with_field_slots(limits.max_fields, |slots| {
            let mut res = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut res,
                window(buf, limits),
                slots,
            );
            let Some(len) = complete(parsed, buf, limits)? else {
                return Ok(None);
            };
            let version = Version::from_minor(res.version)?;
            let status = res
                .code
                .and_then(|code| StatusCode::from_u16(code).ok())
                .ok_or(HeadError::Malformed(httparse::Error::Status))?;
            let spans = Fields::collect(buf, res.headers);
            Ok(Some((len, status, version, spans)))
        })?;
        let Some((len, status, version, spans)) = parsed else {
            return Ok(None);
        };
        let bytes = buf.split_to(len).freeze();
        Ok(Some(ResponseHead {
            status,
            version,
            fields: Fields { bytes, spans },
        }))
    }

    /// Whether the server lets the connection carry another request: an
    /// HTTP/1.1 server unless it says `close`, an HTTP/1.0 one only if it
    /// says `keep-alive`.
    pub fn keeps_alive(&self) -> bool {
        let mut close = false;
        let mut keep_alive = false;
        for value in self.fields.named(Known::Connection) {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                // The length first: a token is rarely both lengths' word.
                close |= token.len() == 5 && token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.len() == 10 && token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        match self.version {
            Version::Http11 => !close,
            Version::Http10 => keep_alive && !close,
        }
    }
}

/// What [`later_minor_as_11`] found.
enum LaterMinor {
    /// The line read `HTTP/1.2` … `HTTP/1.9` and now reads `HTTP/1.1`.
    Rewritten,
    /// The line has not ended yet.
    LineIncomplete,
    Other,
}

/// Makes a request line's `HTTP/1.2` … `HTTP/1.9` read `HTTP/1.1`: a
/// later minor version is processed as the highest one implemented (RFC
/// 9112 §2.3), as nginx does; httparse knows only 1.0 and 1.1. Only a
/// whole line is changed.
fn later_minor_as_11(buf: &mut [u8]) -> LaterMinor {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let Some(end) = buf[start..].iter().position(|&b| b == b'\r' || b == b'\n') else {
        return LaterMinor::LineIncomplete;
    };
    let line = &mut buf[start..start + end];
    let Some(at) = line.len().checked_sub(9) else {
        return LaterMinor::Other;
    };
    let (before, version) = line.split_at_mut(at);
    if !before.is_empty() && version.starts_with(b" HTTP/1.") && matches!(version[8], b'2'..=b'9') {
        version[8] = b'1';
        return LaterMinor::Rewritten;
    }
    LaterMinor::Other
}

/// A version error only for a request line whose third part is an HTTP
/// version (`HTTP/2.0`); anything else there (a PROXY protocol header sent
/// to a listener that does not expect one) is just malformed. httparse stops
/// at the first byte that is not `HTTP/1.`, so the part it saw decides the
/// same way however the head was split into reads.
fn version_or_malformed(err: HeadError, buf: &[u8]) -> HeadError {
    if err != HeadError::Version {
        return err;
    }
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = buf[start..]
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    match line.splitn(3, |&b| b == b' ').nth(2) {
        Some(version) if version.starts_with(b"HTTP/") => err,
        _ => HeadError::Malformed(httparse::Error::Version),
    }
}

/// Fields the parser can hold on the stack (8 KiB of it); more (a
/// `max_headers` above this) are given room on the heap. As many as a
/// response head may have, so reading one never allocates for it.
const STACK_FIELDS: usize = 256;

/// Runs `parse` with room for `max` fields: on the stack for the usual
/// limits, so parsing a head allocates only the head's own field list.
fn with_field_slots<'b, R>(
    max: usize,
    parse: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if max <= STACK_FIELDS {
        let mut slots = [const { MaybeUninit::uninit() }; STACK_FIELDS];
        parse(&mut slots[..max])
    } else {
        let mut slots: Vec<_> = (0..max).map(|_| MaybeUninit::uninit()).collect();
        parse(&mut slots)
    }
}

/// What the parser is shown: no more than a head may be. A byte past the
/// limit is never looked at, so how a head over the limit is refused does
/// not depend on how much of it one read happened to bring.
fn window(buf: &[u8], limits: Limits) -> &[u8] {
    &buf[..buf.len().min(limits.max_head)]
}

/// The head's length once httparse found all of it; `None` while it is
/// incomplete and still within the limit.
fn complete(
    parsed: httparse::Result<usize>,
    buf: &[u8],
    limits: Limits,
) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) => match over_limit(buf, limits.max_head) {
            Some(err) => Err(err),
            None => Ok(None),
        },
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyFields(limits.max_fields)),
        Err(httparse::Error::Version) => Err(HeadError::Version),
        Err(e) => Err(HeadError::Malformed(e)),
    }
}

/// Whether an incomplete head already breaks the limit. A request line that
/// alone does not fit is a target too long (414), anything else a head too
/// large (431).
fn over_limit(buf: &[u8], max_head: usize) -> Option<HeadError> {
    if buf.len() <= max_head {
        return None;
    }
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    match buf[start..].iter().position(|&b| b == b'\n') {
        Some(end) if end <= max_head => Some(HeadError::TooLarge(max_head)),
        _ => Some(HeadError::TargetTooLong),
    }
}

fn target_form(target: &str) -> TargetForm<'_> {
    if target.starts_with('/') {
        return TargetForm::Origin(target);
    }
    if target == "*" {
        return TargetForm::Asterisk;
    }
    let scheme_end = target.find("://");
    let scheme_ok = scheme_end.is_some_and(|end| {
        let scheme = &target[..end];
        scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
    });
    match scheme_end {
        Some(end) if scheme_ok => {
            let rest = &target[end + 3..];
            let split = rest.find(['/', '?']).unwrap_or(rest.len());
            let (authority, path_and_query) = rest.split_at(split);
            TargetForm::Absolute {
                authority,
                path_and_query,
            }
        }
        _ => TargetForm::Authority(target),
    }
}

#[cfg(test)]
mod tests;
