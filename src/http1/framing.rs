//! How long a message body is (RFC 9112 §6.3), decided from its head once,
//! strictly: anything two parsers could read differently is refused.

use http::{Method, StatusCode};

use super::head::{Fields, Known, RequestHead, ResponseHead, Version};

/// Where a body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, ended by its last chunk.
    Chunked,
    /// Responses only: everything until the server closes the connection.
    UntilClose,
}

/// Why a head's framing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("both Content-Length and Transfer-Encoding")]
    Ambiguous,
    #[error("several Content-Length fields")]
    DuplicateLength,
    #[error("invalid Content-Length")]
    BadLength,
    #[error("transfer coding other than a single chunked")]
    UnsupportedCoding,
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    CodingInHttp10,
    #[error("empty Transfer-Encoding")]
    EmptyCoding,
}

impl FramingError {
    /// What a client whose request this is gets told (a server's response
    /// with such framing is a 502 instead).
    pub fn request_status(&self) -> StatusCode {
        match self {
            FramingError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The framing of a request's body.
///
/// Content-Length together with Transfer-Encoding is refused, not resolved
/// in favour of chunked as RFC 9112 §6.3 permits: another server in the
/// chain may resolve it the other way, which is how requests are smuggled.
pub fn request_body(head: &RequestHead) -> Result<BodyKind, FramingError> {
    let length = content_length(&head.fields)?;
    match codings(&head.fields)? {
        Codings::None => Ok(length.map_or(BodyKind::Empty, |len| match len {
            0 => BodyKind::Empty,
            len => BodyKind::Length(len),
        })),
        _ if length.is_some() => Err(FramingError::Ambiguous),
        _ if head.version == Version::Http10 => Err(FramingError::CodingInHttp10),
        Codings::Chunked => Ok(BodyKind::Chunked),
        Codings::Other { .. } => Err(FramingError::UnsupportedCoding),
    }
}

/// The framing of a response's body, given the request it answers.
///
/// A chunked body is recognised only as the one coding: its bytes are passed
/// on as they came, and a coding beneath it would be lost with the
/// `Transfer-Encoding` field, which is hop-by-hop.
pub fn response_body(request: &Method, head: &ResponseHead) -> Result<BodyKind, FramingError> {
    let status = head.status;
    if *request == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(BodyKind::Empty);
    }
    let length = content_length(&head.fields)?;
    match codings(&head.fields)? {
        Codings::None => Ok(length.map_or(BodyKind::UntilClose, |len| match len {
            0 => BodyKind::Empty,
            len => BodyKind::Length(len),
        })),
        _ if length.is_some() => Err(FramingError::Ambiguous),
        _ if head.version == Version::Http10 => Err(FramingError::CodingInHttp10),
        Codings::Chunked => Ok(BodyKind::Chunked),
        Codings::Other {
            chunked_last: true, ..
        } => Err(FramingError::UnsupportedCoding),
        // RFC 9112 §6.3 (4): not chunked last, so the close ends it.
        Codings::Other { .. } => Ok(BodyKind::UntilClose),
    }
}

/// The one Content-Length, if any: `1*DIGIT`, nothing else. A list
/// (`5, 5`) or a second field is refused even when the values agree, as
/// nginx does.
fn content_length(fields: &Fields) -> Result<Option<u64>, FramingError> {
    let mut values = fields.named(Known::ContentLength);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(FramingError::DuplicateLength);
    }
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(FramingError::BadLength);
    }
    value
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .map(Some)
        .ok_or(FramingError::BadLength)
}

enum Codings {
    None,
    /// Exactly one coding, `chunked`.
    Chunked,
    Other {
        chunked_last: bool,
    },
}

/// The transfer codings of every Transfer-Encoding field, in order.
///
/// Only spaces are taken as the whitespace around a coding: nginx does the
/// same, and refuses `Transfer-Encoding:<TAB>chunked` (an old smuggling
/// obfuscation) as an unknown coding, so sluice does too.
fn codings(fields: &Fields) -> Result<Codings, FramingError> {
    let mut count = 0;
    let mut first_chunked = false;
    let mut last_chunked = false;
    let mut any = false;
    for value in fields.named_raw(Known::TransferEncoding) {
        any = true;
        for coding in value.split(|&b| b == b',') {
            let coding = trim_spaces(coding);
            if coding.trim_ascii().is_empty() {
                continue;
            }
            if count == 0 {
                first_chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
            // Read loosely here: a response ending in `chunked<TAB>` is
            // refused, not read until the close by sluice and as chunked by
            // whoever reads it next.
            last_chunked = coding.trim_ascii().eq_ignore_ascii_case(b"chunked");
            count += 1;
        }
    }
    match (any, count) {
        (false, _) => Ok(Codings::None),
        (true, 0) => Err(FramingError::EmptyCoding),
        (true, 1) if first_chunked => Ok(Codings::Chunked),
        _ => Ok(Codings::Other {
            chunked_last: last_chunked,
        }),
    }
}

fn trim_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' '] = bytes {
        bytes = rest;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::http1::head::Limits;

    const LIMITS: Limits = Limits {
        max_head: 4096,
        max_fields: 16,
    };

    fn request(fields: &str) -> Result<BodyKind, FramingError> {
        request_v(fields, "1.1")
    }

    fn request_v(fields: &str, version: &str) -> Result<BodyKind, FramingError> {
        let text = format!("POST / HTTP/{version}\r\nHost: x\r\n{fields}\r\n");
        let head = RequestHead::parse(&mut BytesMut::from(text.as_bytes()), LIMITS)
            .unwrap()
            .unwrap();
        request_body(&head)
    }

    fn response(method: Method, head: &str) -> Result<BodyKind, FramingError> {
        let text = format!("{head}\r\n");
        let head = ResponseHead::parse(&mut BytesMut::from(text.as_bytes()), LIMITS)
            .unwrap()
            .unwrap();
        response_body(&method, &head)
    }

    #[test]
    fn request_lengths() {
        assert_eq!(request(""), Ok(BodyKind::Empty));
        assert_eq!(request("Content-Length: 0\r\n"), Ok(BodyKind::Empty));
        assert_eq!(request("Content-Length: 12\r\n"), Ok(BodyKind::Length(12)));
        assert_eq!(
            request("content-length: 18446744073709551615\r\n"),
            Ok(BodyKind::Length(u64::MAX))
        );
        for bad in [
            "Content-Length: 18446744073709551616\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +1\r\n",
            "Content-Length: 1 2\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: \r\n",
            "Content-Length: 5, 5\r\n",
        ] {
            assert_eq!(request(bad), Err(FramingError::BadLength), "{bad}");
        }
        assert_eq!(
            request("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Err(FramingError::DuplicateLength)
        );
    }

    #[test]
    fn request_codings() {
        assert_eq!(
            request("Transfer-Encoding: chunked\r\n"),
            Ok(BodyKind::Chunked)
        );
        assert_eq!(
            request("Transfer-Encoding:   ChunKed  \r\n"),
            Ok(BodyKind::Chunked)
        );
        for unsupported in [
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked, identity\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Transfer-Encoding: chunked;q=1\r\n",
            "Transfer-Encoding: identity\r\n",
            "Transfer-Encoding:\tchunked\r\n",
            "Transfer-Encoding: chunked\t\r\n",
        ] {
            let err = request(unsupported).unwrap_err();
            assert_eq!(err, FramingError::UnsupportedCoding, "{unsupported}");
            assert_eq!(err.request_status(), StatusCode::NOT_IMPLEMENTED);
        }
        assert_eq!(
            request("Transfer-Encoding: ,\r\n"),
            Err(FramingError::EmptyCoding)
        );
        assert_eq!(
            request("Transfer-Encoding: \t,\r\n"),
            Err(FramingError::EmptyCoding)
        );
        assert_eq!(
            request("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
            Err(FramingError::Ambiguous)
        );
        assert_eq!(
            request("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
            Err(FramingError::Ambiguous)
        );
        assert_eq!(
            request_v("Transfer-Encoding: chunked\r\n", "1.0"),
            Err(FramingError::CodingInHttp10)
        );
    }

    #[test]
    fn response_framing() {
        let ok = "HTTP/1.1 200 OK\r\n";
        assert_eq!(response(Method::GET, ok), Ok(BodyKind::UntilClose));
        assert_eq!(
            response(Method::GET, &format!("{ok}Content-Length: 3\r\n")),
            Ok(BodyKind::Length(3))
        );
        assert_eq!(
            response(Method::GET, &format!("{ok}Content-Length: 0\r\n")),
            Ok(BodyKind::Empty)
        );
        assert_eq!(
            response(Method::HEAD, &format!("{ok}Content-Length: 3\r\n")),
            Ok(BodyKind::Empty)
        );
        for status in [
            "100 Continue",
            "103 Early Hints",
            "204 No Content",
            "304 Not Modified",
        ] {
            assert_eq!(
                response(
                    Method::GET,
                    &format!("HTTP/1.1 {status}\r\nContent-Length: 3\r\n")
                ),
                Ok(BodyKind::Empty),
                "{status}"
            );
        }
        assert_eq!(
            response(Method::GET, &format!("{ok}Transfer-Encoding: chunked\r\n")),
            Ok(BodyKind::Chunked)
        );
        assert_eq!(
            response(Method::GET, &format!("{ok}Transfer-Encoding: gzip\r\n")),
            Ok(BodyKind::UntilClose)
        );
        assert_eq!(
            response(
                Method::GET,
                &format!("{ok}Transfer-Encoding: gzip, chunked\r\n")
            ),
            Err(FramingError::UnsupportedCoding)
        );
        assert_eq!(
            response(
                Method::GET,
                &format!("{ok}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n")
            ),
            Err(FramingError::Ambiguous)
        );
        assert_eq!(
            response(
                Method::GET,
                &format!("{ok}Content-Length: 3\r\nContent-Length: 4\r\n")
            ),
            Err(FramingError::DuplicateLength)
        );
        assert_eq!(
            response(Method::GET, &format!("{ok}Content-Length: abc\r\n")),
            Err(FramingError::BadLength)
        );
    }
}
