//! Heads written into a caller's buffer, fields in the order and case given.

use bytes::{BufMut, BytesMut};
use http::StatusCode;

/// Writes `METHOD target HTTP/1.1`, the fields and the blank line.
pub fn request_head<'a>(
    out: &mut BytesMut,
    method: &str,
    target: &str,
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) {
    out.reserve(method.len() + target.len() + 12);
    out.put_slice(method.as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    write_fields(out, fields);
}

/// Writes `HTTP/1.1 status reason`, the fields and the blank line.
pub fn response_head<'a>(
    out: &mut BytesMut,
    status: StatusCode,
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) {
    let reason = status.canonical_reason().unwrap_or("");
    out.reserve(15 + reason.len());
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason.as_bytes());
    out.put_slice(b"\r\n");
    write_fields(out, fields);
}

/// `n` in decimal, written into `buf`: a `Content-Length` value without an
/// allocation.
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// A trailer line as the chunked decoder found it, with the CRLF it needs.
pub fn trailer_line(out: &mut BytesMut, line: &[u8]) {
    out.reserve(line.len() + 2);
    out.put_slice(line);
    out.put_slice(b"\r\n");
}

/// `fields` is usually a chain of sources (a server's fields, a map's,
/// those the proxy adds): `for_each` runs through each source in turn,
/// where a `for` loop would ask the chain which source it is in at every
/// field.
fn write_fields<'a>(out: &mut BytesMut, fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
    fields.into_iter().for_each(|(name, value)| {
        out.reserve(name.len() + value.len() + 4);
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    });
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::{Limits, RequestHead, ResponseHead};

    const LIMITS: Limits = Limits {
        max_head: 4096,
        max_fields: 16,
    };

    #[test]
    fn a_written_request_head_parses_back_the_same() {
        let mut out = BytesMut::new();
        let fields: [(&[u8], &[u8]); 2] = [(b"Host", b"a.test"), (b"X-CamelCase", b"v, w")];
        request_head(&mut out, "PUT", "/x?y=1", fields);
        assert_eq!(
            &out[..],
            b"PUT /x?y=1 HTTP/1.1\r\nHost: a.test\r\nX-CamelCase: v, w\r\n\r\n"
        );
        let head = RequestHead::parse(&mut out, LIMITS).unwrap().unwrap();
        assert_eq!(head.fields.iter().collect::<Vec<_>>(), fields);
        assert!(out.is_empty());
    }

    #[test]
    fn a_written_response_head_parses_back_the_same() {
        let mut out = BytesMut::new();
        response_head(
            &mut out,
            StatusCode::NOT_FOUND,
            [(&b"Content-Length"[..], &b"0"[..])],
        );
        assert_eq!(
            &out[..],
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        );
        let head = ResponseHead::parse(&mut out, LIMITS).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::NOT_FOUND);

        let mut out = BytesMut::new();
        response_head(&mut out, StatusCode::from_u16(599).unwrap(), []);
        assert_eq!(&out[..], b"HTTP/1.1 599 \r\n\r\n");
    }

    #[test]
    fn decimals() {
        let mut buf = [0; 20];
        for n in [0, 7, 10, 4096, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn trailer_lines_get_crlf() {
        let mut out = BytesMut::new();
        trailer_line(&mut out, b"X-Sum: 1");
        assert_eq!(&out[..], b"X-Sum: 1\r\n");
    }
}
