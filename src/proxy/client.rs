//! The upstream side of an exchange, inline in the task that has the
//! request: write the request on a [`Conn`], read the response head, and
//! hand back the body as an [`UpstreamBody`] that owns the connection until
//! the body ends. No spawned task, no channel; the read buffer exists only
//! while a response is being read.

use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use http::{HeaderMap, Method, Response};
use tokio::io::AsyncReadExt;

use super::body::{RequestBody, RequestBodyError};
use super::buffers;
use crate::http1::{HeaderCase, ResponseHead, framing};
use crate::upstream::{self, Conn, UpstreamError};

mod send;
mod upstream_body;

use send::pass_interim;
#[cfg(test)]
use send::send_request;
pub use send::{Head, Progress, Sent, send};
pub use upstream_body::UpstreamBody;

/// How much is read from a server at once.
const READ_SIZE: usize = 8 * 1024;

/// Why sending failed: the server, or the client's body.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Body(#[from] RequestBodyError),
}

/// [`receive`] for the tests' own requests: interim responses are read
/// past.
#[cfg(test)]
async fn read_response(
    conn: Conn,
    method: &Method,
    sent: Sent,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let progress = Progress::default();
    receive(
        conn,
        method,
        sent,
        &mut RequestBody::empty(),
        false,
        &progress,
    )
    .await
}

/// Reads the response to a request sent with `method`. Interim responses
/// (100 Continue, 103 Early Hints) are passed to the client's side through
/// `body` as they come, and written before the final head is read. A 101 is
/// returned as it is; its body's [`UpstreamBody::into_upgraded`] gives the
/// connection for the tunnel.
///
/// With `unmapped` (the client speaks HTTP/1.x) the final response's fields
/// stay out of its header map: the client's writer passes them on as they
/// came ([`UpstreamBody::raw_fields`]), and no map is built and dropped for
/// them. A 101's fields are always in the map: the upgrade is checked
/// against them.
///
/// Once `progress` says so, the client's connection is watched while the
/// head is awaited: a client gone ends the wait with
/// [`UpstreamError::ClientGone`].
pub async fn receive(
    mut conn: Conn,
    method: &Method,
    sent: Sent,
    body: &mut RequestBody<'_>,
    unmapped: bool,
    progress: &Progress,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let mut buf = sent.read;
    if buf.capacity() == 0 {
        buf = buffers::take_read();
    }
    loop {
        // Nothing to parse yet (the usual case, right after the request
        // went up): read first.
        if buf.is_empty() && read_more(&mut conn, &mut buf, body, progress).await? == 0 {
            return Err(UpstreamError::ClosedBeforeHead);
        }
        let head = match ResponseHead::parse(&mut buf, upstream::RESPONSE_LIMITS) {
            Ok(Some(head)) => head,
            Ok(None) => {
                if read_more(&mut conn, &mut buf, body, progress).await? == 0 {
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
            sent.complete && status != http::StatusCode::SWITCHING_PROTOCOLS && head.keeps_alive();
        let unmapped = unmapped && status != http::StatusCode::SWITCHING_PROTOCOLS;
        let headers = if unmapped {
            HeaderMap::new()
        } else {
            // Room for the field sluice may add (a sticky cookie).
            head.fields.to_header_map(1).map_err(UpstreamError::Head)?
        };
        let case = HeaderCase::new(head.fields);
        let body = UpstreamBody::new(conn, buf, kind, keep_alive, case, unmapped);
        body.check_buffered().map_err(UpstreamError::Chunked)?;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return Ok(response);
    }
}

/// Reads what the server sent next into `buf`; 0 at the end of the stream.
/// While `progress` says to, the client's connection is watched too.
async fn read_more(
    conn: &mut Conn,
    buf: &mut BytesMut,
    body: &mut RequestBody<'_>,
    progress: &Progress,
) -> Result<usize, UpstreamError> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(read) = poll_read_more(conn, buf, cx) {
            return Poll::Ready(read.map_err(UpstreamError::Read));
        }
        if progress.watching_client() && body.poll_client_gone(cx).is_ready() {
            return Poll::Ready(Err(UpstreamError::ClientGone));
        }
        Poll::Pending
    })
    .await
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

#[cfg(test)]
mod tests {
    use crate::http1::FramingError;
    use bytes::Bytes;
    use http::header::{self, HeaderMap, HeaderValue};
    use http_body::Body as _;
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
