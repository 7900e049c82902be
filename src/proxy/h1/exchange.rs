//! One request on an HTTP/1.1 connection: its head made into the request
//! the handler sees, its body read from the connection while the handler
//! runs, the response written, and what is left of the body read past.

use http::header;
use http::{Method, Request, StatusCode, Uri};
use tokio::time::Instant;

use super::ClientStream;
use super::reader::{Continue, H1Body, Reader};
use super::response::write_response;
use crate::http1::{HeaderCase, RequestHead, TargetForm, Version, framing};
use crate::proxy::body::{ClientBody, ResponseBody};
use crate::proxy::error::CLIENT_CLOSED_REQUEST;
use crate::proxy::headers;
use crate::proxy::service::{ConnCtx, ServerWideOptions};
use crate::proxy::upgrade::Tunnel;

/// What a connection does after an exchange.
pub(super) enum Next {
    /// Read the next request.
    Head,
    Close,
    /// Close after a response given while the client may still be sending
    /// (its body refused or not read): see [`linger`](super::linger).
    Linger,
    /// The response's body failed: close without an orderly shutdown.
    Abort,
    /// The response was a 101: the connection is this tunnel's now.
    Tunnel(Tunnel),
}

/// Serves one request: hands it to the handler with its body read from the
/// connection, writes the response, and reads past what the handler left
/// of the body.
///
/// Not an async fn, whose future would hold `head` twice (as passed and as
/// moved into the body): this future is boxed, and so copied, per request.
pub(super) fn exchange<'a>(
    ctx: &'a ConnCtx,
    reader: &'a mut Reader,
    head: RequestHead,
) -> impl Future<Output = Next> + 'a {
    let (settings, stop) = (&ctx.listening.settings, &ctx.listening.stop);
    async move {
        let method = head.method.clone();
        let version = head.version;
        // The request is made by a plain function, so that nothing it
        // borrowed on the way (a local borrowed keeps its room in the state
        // until its scope ends) sits in the future beside the handler's.
        let Exchange {
            request,
            case,
            keep_alive,
        } = match begin(reader, head) {
            Ok(begun) => begun,
            Err(status) => {
                refuse(ctx, &mut reader.stream, status, &method, version).await;
                return Next::Linger;
            }
        };
        let request = request.map(|()| ClientBody::H1(H1Body::new(reader)));
        let handled = ctx.handle_h1(request, Some(case)).await;
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
        // The client went away while the response was awaited: sluice's
        // own 499, which no response carries (a server's 499 is passed on
        // as any status). Nothing to write.
        if handled.response.status().as_u16() == CLIENT_CLOSED_REQUEST
            && matches!(handled.response.body(), ResponseBody::Full(_))
        {
            return Next::Close;
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
        // The drain deadline costs a clock read, which a request whose body
        // was read whole (nearly all) does without.
        if matches!(&written, Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted) {
            return Next::Abort;
        }
        if matches!(written, Ok(false))
            && (reader.body_done
                || reader
                    .drain_body(Instant::now() + settings.header_timeout)
                    .await)
        {
            Next::Head
        } else if written.is_ok() && !reader.body_done {
            Next::Linger
        } else {
            Next::Close
        }
    }
}

/// The request `head` asks for, its body ready to be read from `reader`,
/// with the spelling of its field names and whether the client keeps the
/// connection; or the status to refuse it with. Framing is judged on the
/// head as received, before the head becomes the request; a head that
/// cannot be one is refused first.
fn begin(reader: &mut Reader, head: RequestHead) -> Result<Exchange, StatusCode> {
    let kind = framing::request_body(&head);
    let version = head.version;
    let exchange = Exchange::from_head(head).ok_or(StatusCode::BAD_REQUEST)?;
    let kind = kind.map_err(|e| e.request_status())?;
    reader.start_body(kind, expect_continue(&exchange.request), version);
    // A request without a body needs its read buffer no more (unless the
    // client pipelined the next one behind it): while the request is
    // handled, the connection holds none.
    if reader.body_done {
        reader.release();
    }
    Ok(exchange)
}

/// Answers a request that cannot be served (`ctx` counts it) and closes:
/// what follows its head can no longer be framed.
pub(super) async fn refuse(
    ctx: &ConnCtx,
    stream: &mut ClientStream,
    status: StatusCode,
    method: &Method,
    version: Version,
) {
    let response = ctx.refuse(status);
    let _ = write_response(stream, response, method, true, version).await;
}

/// A request head made into the request the handler sees.
struct Exchange {
    request: Request<()>,
    /// The field names as the client spelled them; beside the request, not
    /// in its extensions, which would cost a map and a box per request.
    case: HeaderCase,
    /// The client lets the connection carry another request.
    keep_alive: bool,
}

impl Exchange {
    /// `None` for a head that cannot be one (a target or field `http`
    /// refuses).
    fn from_head(head: RequestHead) -> Option<Exchange> {
        let server_wide = head.method == Method::OPTIONS
            && matches!(
                head.target_form(),
                TargetForm::Absolute {
                    path_and_query: "",
                    ..
                }
            );
        let uri = Uri::from_maybe_shared(head.target_bytes()).ok()?;
        // Room for the one field the proxy may add to the map (an upgrade's
        // `Connection`); the X-Forwarded family is kept beside it.
        let headers = head.fields.to_header_map(1).ok()?;
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
        Some(Exchange {
            request,
            case: HeaderCase::new(head.fields),
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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::http1::{Limits, RequestHead};
    use crate::upstream::stream::Stream;

    const LIMITS: Limits = Limits {
        max_head: 4096,
        max_fields: 16,
    };

    /// A reader on a connection the client has sent `sent` on, all of it
    /// read, and the first head parsed; the client's side stays open.
    async fn read_head(sent: &[u8]) -> (Reader, RequestHead, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(sent).await.unwrap();
        let mut reader = Reader::new(Stream::Tcp(server));
        while reader.buf.len() < sent.len() {
            let n = std::future::poll_fn(|cx| reader.poll_fill(cx))
                .await
                .unwrap();
            assert!(n > 0, "the client's bytes all arrive");
        }
        let head = RequestHead::parse(&mut reader.buf, LIMITS)
            .unwrap()
            .unwrap();
        (reader, head, client)
    }

    #[tokio::test]
    async fn a_request_without_a_body_holds_no_read_buffer_while_it_is_handled() {
        let (mut reader, head, _client) = read_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(reader.buf.capacity() > 0);
        let exchange = begin(&mut reader, head).unwrap();
        assert_eq!(reader.buf.capacity(), 0);
        assert_eq!(exchange.request.headers()["host"], "a");
    }

    #[tokio::test]
    async fn a_body_or_a_pipelined_request_keeps_it() {
        let (mut reader, head, _client) =
            read_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi").await;
        begin(&mut reader, head).unwrap();
        assert_eq!(&reader.buf[..], b"hi");
        let (mut reader, head, _client) =
            read_head(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n\r\n").await;
        begin(&mut reader, head).unwrap();
        assert_eq!(&reader.buf[..], b"GET /2 HTTP/1.1\r\n\r\n");
    }
}
