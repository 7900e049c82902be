//! Sending a request on a server connection: the head, then the body as
//! it arrives, while listening for what the server says meanwhile.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use http::Method;
use http::header::HeaderMap;
use http_body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::super::body::{RequestBody, RequestBodyError};
use super::super::buffers;
use super::super::forwarding::Forwarding;
use super::super::headers;
use super::{SendError, poll_read_more};
use crate::http1::{HeaderCase, ResponseHead, Speller, write};
use crate::upstream::Conn;
use crate::upstream::UpstreamError;

/// How the request's body is framed on the way up.
#[derive(Clone, Copy)]
enum Outgoing {
    Length(u64),
    Chunked,
}

/// How an exchange goes, shared with the attempt that times it: the
/// response deadline runs from the last bytes that went up, so a long
/// upload that moves is not cut short; a stall is the client's when sluice
/// was waiting for the client's next bytes; and once the response has
/// been waited for a while, the attempt has the client's connection
/// watched.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes went up since the attempt last looked. (Atomics only because
    /// the request's future must be `Send`: one task reads and writes.)
    moved: AtomicBool,
    /// Waiting for the client's next body bytes, not for the server.
    on_client: AtomicBool,
    /// The response has been waited for long enough that the client's
    /// connection is watched too: a client gone ends the wait.
    watch_client: AtomicBool,
}

impl Progress {
    /// Whether bytes went up since the last call.
    pub fn take_moved(&self) -> bool {
        self.moved.swap(false, Ordering::Relaxed)
    }

    /// Whether the sending waits for the client.
    pub fn on_client(&self) -> bool {
        self.on_client.load(Ordering::Relaxed)
    }

    /// Whether the client's connection is watched while the response is
    /// awaited.
    pub fn watching_client(&self) -> bool {
        self.watch_client.load(Ordering::Relaxed)
    }

    /// Watches the client's connection from now on.
    pub fn watch_client(&self) {
        self.watch_client.store(true, Ordering::Relaxed);
    }

    fn note_moved(&self) {
        self.moved.store(true, Ordering::Relaxed);
    }

    fn set_on_client(&self, waiting: bool) {
        self.on_client.store(waiting, Ordering::Relaxed);
    }
}

/// A request on its way to the server, and what the server said meanwhile.
#[derive(Debug)]
pub struct Sent {
    /// The start of the response, read while the body was still going up.
    pub(super) read: BytesMut,
    /// The whole request went up; otherwise the server answered first, and
    /// the connection cannot carry another request.
    pub(super) complete: bool,
}

/// A request head on its way up: the headers as the proxy rewrote them,
/// names spelled as `case` says (the client's spelling, kept).
pub struct Head<'h> {
    pub method: &'h Method,
    /// Origin form.
    pub target: &'h str,
    pub headers: &'h HeaderMap,
    /// The fields sluice sets, written behind `headers`.
    pub forwarding: Option<&'h Forwarding<'h>>,
    pub case: Option<&'h HeaderCase>,
}

/// [`send`] for the tests' own requests: names in lower case, no client to
/// pass interim responses to. (The health checker writes its fixed request
/// itself.)
#[cfg(test)]
pub async fn send_request(
    conn: &mut Conn,
    method: &Method,
    target: &str,
    headers: HeaderMap,
    body: &mut RequestBody<'_>,
) -> Result<Sent, SendError> {
    let head = Head {
        method,
        target,
        headers: &headers,
        forwarding: None,
        case: None,
    };
    send(conn, &head, body, &Progress::default()).await
}

/// Writes the request: head, then the body as it arrives. Framing follows
/// what the client sent (a Content-Length is kept) or what is known of the
/// body; a body of unknown length is sent chunked, except with methods that
/// almost never carry one, as hyper's client does. The framing fields sluice
/// adds are written behind the others, never put in the map.
///
/// While a body goes up the server is listened to: interim responses
/// (100 Continue, 103 Early Hints) are passed to the client's side as they
/// come, and a final response that comes before the body is all sent (a
/// 413, a 401) stops the sending, so the server is never left waiting on a
/// body it does not want while its answer waits on us.
///
/// A body's sending tells `progress` when bytes go up and whether it waits
/// for the client; a request without a body is written at once and tells
/// nothing.
pub async fn send(
    conn: &mut Conn,
    head: &Head<'_>,
    body: &mut RequestBody<'_>,
    progress: &Progress,
) -> Result<Sent, SendError> {
    let mut len_text = [0u8; 20];
    let (outgoing, framing): (_, Option<(&[u8], &[u8])>) = if body.is_end_stream() {
        (None, None)
    } else if let Some(len) = headers::content_length(head.headers) {
        (Some(Outgoing::Length(len)), None)
    } else if let Some(len) = body.size_hint().exact() {
        let text = write::decimal(len, &mut len_text);
        (Some(Outgoing::Length(len)), Some((b"content-length", text)))
    } else if matches!(*head.method, Method::GET | Method::HEAD | Method::CONNECT) {
        (None, None)
    } else {
        (
            Some(Outgoing::Chunked),
            Some((b"transfer-encoding", b"chunked")),
        )
    };
    let mut out = buffers::take_read();
    let mut speller = Speller::new(head.case);
    write::request_head(
        &mut out,
        head.method.as_str(),
        head.target,
        head.headers
            .iter()
            .map(|(name, value)| (speller.spell(name), value.as_bytes()))
            .chain(head.forwarding.into_iter().flat_map(Forwarding::fields))
            .chain(framing),
    );
    let Some(outgoing) = outgoing else {
        let written = conn.write_all(&out).await;
        buffers::give_back(out);
        written.map_err(UpstreamError::Write)?;
        conn.flush().await.map_err(UpstreamError::Write)?;
        return Ok(Sent {
            read: BytesMut::new(),
            complete: true,
        });
    };
    let mut sending = Sending {
        out,
        outgoing,
        sent: 0,
        body_done: false,
        read: BytesMut::new(),
    };
    let complete = std::future::poll_fn(|cx| sending.poll(conn, body, progress, cx)).await;
    buffers::give_back(std::mem::take(&mut sending.out));
    Ok(Sent {
        read: sending.read,
        complete: complete?,
    })
}

/// The state of a request whose body is being sent.
struct Sending {
    /// Bytes ready to go up.
    out: BytesMut,
    outgoing: Outgoing,
    sent: u64,
    body_done: bool,
    /// What the server sent meanwhile, interim responses removed.
    read: BytesMut,
}

impl Sending {
    /// Ready with `true` once everything went up and was flushed, with
    /// `false` once the server's final response began first.
    fn poll(
        &mut self,
        conn: &mut Conn,
        body: &mut RequestBody<'_>,
        progress: &Progress,
        cx: &mut Context<'_>,
    ) -> Poll<Result<bool, SendError>> {
        progress.set_on_client(false);
        loop {
            // Interim responses already passed on go out to the client as
            // it reads them; the body goes up meanwhile.
            if let Poll::Ready(Err(e)) = body.poll_interim(cx) {
                return Poll::Ready(Err(RequestBodyError::Read(e).into()));
            }
            match poll_read_more(conn, &mut self.read, cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(false)),
                Poll::Ready(Ok(_)) => {
                    if final_response_began(&mut self.read, body)? {
                        return Poll::Ready(Ok(false));
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(UpstreamError::Read(e).into())),
                Poll::Pending => {}
            }
            if !self.out.is_empty() {
                match Pin::new(&mut *conn).poll_write(cx, &self.out) {
                    Poll::Ready(Ok(0)) => {
                        let closed = io::Error::from(io::ErrorKind::WriteZero);
                        return Poll::Ready(Err(UpstreamError::Write(closed).into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.out.advance(n);
                        progress.note_moved();
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(UpstreamError::Write(e).into())),
                    // Backpressure: no more of the body is taken until the
                    // server reads.
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.body_done {
                return match Pin::new(&mut *conn).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(true)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(UpstreamError::Write(e).into())),
                    Poll::Pending => Poll::Pending,
                };
            }
            let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) else {
                progress.set_on_client(true);
                return Poll::Pending;
            };
            match frame {
                Some(Ok(frame)) => {
                    // Trailers are not sent: `Trailer` is hop-by-hop, so the
                    // server was never told to expect them.
                    if let Ok(data) = frame.into_data() {
                        self.encode(&data)?;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(e.into())),
                None => {
                    match self.outgoing {
                        Outgoing::Length(len) if self.sent != len => {
                            return Poll::Ready(Err(RequestBodyError::LengthMismatch.into()));
                        }
                        Outgoing::Length(_) => {}
                        Outgoing::Chunked => self.out.extend_from_slice(b"0\r\n\r\n"),
                    }
                    self.body_done = true;
                }
            }
        }
    }

    fn encode(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.sent += data.len() as u64;
        match self.outgoing {
            Outgoing::Length(len) if self.sent > len => {
                return Err(RequestBodyError::LengthMismatch.into());
            }
            Outgoing::Length(_) => self.out.extend_from_slice(data),
            Outgoing::Chunked if data.is_empty() => {}
            Outgoing::Chunked => {
                self.out
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                self.out.extend_from_slice(data);
                self.out.extend_from_slice(b"\r\n");
            }
        }
        Ok(())
    }
}

/// Takes complete interim responses off the front of `read`, passing them
/// to the client's side; true once a final response has begun there (or
/// bytes that are no interim response).
fn final_response_began(
    read: &mut BytesMut,
    body: &mut RequestBody<'_>,
) -> Result<bool, SendError> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut head = httparse::Response::new(&mut fields);
        match head.parse(read) {
            Ok(httparse::Status::Complete(_))
                if head
                    .code
                    .is_some_and(|c| (100..200).contains(&c) && c != 101) =>
            {
                match ResponseHead::parse(read, crate::upstream::RESPONSE_LIMITS) {
                    Ok(Some(interim)) => pass_interim(&interim, body),
                    // `receive` refuses it in turn.
                    _ => return Ok(true),
                }
            }
            Ok(httparse::Status::Partial) if head.code.is_none_or(|c| (100..200).contains(&c)) => {
                return Ok(false);
            }
            // A final response, or something `receive` will refuse.
            _ => return Ok(true),
        }
    }
}

/// Hands an interim response to the client's side, as received but for its
/// hop-by-hop fields (RFC 9110 §15.2: a proxy forwards 1xx responses).
/// The client's side decides whether its client gets it.
pub(super) fn pass_interim(head: &ResponseHead, body: &mut RequestBody<'_>) {
    let mut out = BytesMut::new();
    write::response_head(&mut out, head.status, headers::end_to_end(&head.fields));
    body.pass_interim(head.status, out.freeze());
}
