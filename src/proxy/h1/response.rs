//! Writing a response to an HTTP/1.1 client: the head, with the fields the
//! framing needs, then the body as it comes.

use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::{BufMut, BytesMut};
use http::HeaderMap;
use http::header;
use http::{Method, Response, StatusCode};
use http_body::Body;
use tokio::io::AsyncWriteExt;

use super::super::body::ResponseBody;
use super::super::buffers;
use super::super::headers;
use super::ClientStream;
use crate::http1::head::{Fields, Known};
use crate::http1::{Speller, Version, write};

/// Response body bytes copied behind the head (or behind other small
/// frames) to leave in one write; larger frames are written on their own.
const COALESCE_MAX: usize = 4096;

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
/// is the close (an HTTP/1.0 client, a length unknown). A body that fails
/// is `ConnectionAborted`: the client's transfer must not look ended, so a
/// body whose end is the close is then ended by a reset.
///
/// The fields the response came with are written as the server spelled
/// them: a server's fields as they came, in their order, with no map built
/// for them ([`ResponseBody::raw_fields`]; hop-by-hop ones left out), then
/// those in the response's map (sluice's own answers, a sticky cookie).
/// Those sluice adds for the framing and the connection (`Content-Length`
/// it computed, `Transfer-Encoding`, `Date` when missing, `Connection`) go
/// behind them, in sluice's own lower case, never through the map.
pub(super) async fn write_response(
    stream: &mut ClientStream,
    response: Response<ResponseBody>,
    method: &Method,
    mut close: bool,
    version: Version,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let (has_length, has_date) = length_and_date(&parts.headers, body.raw_fields());
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut len_text = [0u8; 20];
    let mut added: [Option<(&[u8], &[u8])>; 3] = [None; 3];
    // The body ends where the connection does: only a reset can tell the
    // client that it was cut short.
    let mut by_close = false;
    let framing = if no_body {
        Framing::None
    } else if has_length {
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
        by_close = true;
        Framing::Plain
    };
    let date = (!has_date).then(crate::http1::date::now);
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
        body.raw_fields()
            .into_iter()
            .flat_map(headers::end_to_end)
            .chain(
                parts
                    .headers
                    .iter()
                    .map(|(name, value)| (speller.spell(name), value.as_bytes())),
            )
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
            Some(Err(e)) => {
                if by_close {
                    stream.reset_on_close();
                }
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, e));
            }
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

/// Whether the response has a `Content-Length` field and a `Date` field,
/// in its map or among a server's fields as they came: one look at each
/// field for both.
fn length_and_date(headers: &HeaderMap, raw: Option<&Fields>) -> (bool, bool) {
    let mut length = headers.contains_key(header::CONTENT_LENGTH);
    let mut date = headers.contains_key(header::DATE);
    for (known, _, _) in raw.into_iter().flat_map(Fields::iter_known) {
        length |= known == Known::ContentLength;
        date |= known == Known::Date;
    }
    (length, date)
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
