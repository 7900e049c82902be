//! One health check request over the checker's own keep-alive connection,
//! written and read with the HTTP/1.1 codec.

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderValue;
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Target;
use crate::http1::{BodyDecoder, ResponseHead, Step, framing, write};
use crate::upstream::{self, Conn, ConnectError, UpstreamError};

/// Health responses are read to their end so the connection can be reused;
/// one larger than this is not worth keeping the connection for.
const MAX_BODY: usize = 64 * 1024;

/// How much is read from the server at once.
const READ_SIZE: usize = 8 * 1024;

/// Why a check failed, as the state-change log line says it.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailure {
    #[error("status {0}")]
    Status(u16),
    #[error("timeout")]
    Timeout,
    #[error("connection refused")]
    Refused,
    #[error("{0}")]
    Connect(#[source] ConnectError),
    #[error(transparent)]
    Exchange(#[from] UpstreamError),
    #[error("path {0:?} is not a valid request target")]
    InvalidPath(String),
    #[error("address {0:?} is not a valid Host")]
    InvalidHost(String),
}

/// The checker's connection, kept open between rounds, and its request.
#[derive(Default)]
pub struct Probe {
    conn: Option<Conn>,
    request: Option<Request>,
}

/// The check's request head as written from a `path` and an `address`:
/// checked and written once, again only when a reload changes the path.
struct Request {
    path: String,
    address: String,
    head: Bytes,
}

impl Probe {
    /// Runs one check within the check's `timeout`.
    pub async fn check(&mut self, target: &Target) -> Result<(), CheckFailure> {
        match tokio::time::timeout(target.check.timeout, self.exchange(target)).await {
            Ok(result) => result,
            Err(_) => {
                // Whatever was half sent or read makes the connection useless.
                self.conn = None;
                Err(CheckFailure::Timeout)
            }
        }
    }

    async fn exchange(&mut self, target: &Target) -> Result<(), CheckFailure> {
        let head = self.request_head(target)?;
        let mut conn = match self.conn.take().filter(Conn::is_reusable) {
            Some(conn) => conn,
            None => open(target).await?,
        };
        conn.write_all(&head).await.map_err(UpstreamError::Write)?;
        conn.flush().await.map_err(UpstreamError::Write)?;
        let (status, reusable) = read_response(&mut conn).await?;
        if reusable {
            self.conn = Some(conn);
        }
        let (lo, hi) = target.check.status;
        if (lo..=hi).contains(&status.as_u16()) {
            Ok(())
        } else {
            Err(CheckFailure::Status(status.as_u16()))
        }
    }

    fn request_head(&mut self, target: &Target) -> Result<Bytes, CheckFailure> {
        let (path, address) = (&target.check.path, &target.address);
        if let Some(request) = &self.request
            && request.path == *path
            && request.address == *address
        {
            return Ok(request.head.clone());
        }
        let host = HeaderValue::from_str(address)
            .map_err(|_| CheckFailure::InvalidHost(address.clone()))?;
        if path.parse::<http::Uri>().is_err() {
            return Err(CheckFailure::InvalidPath(path.clone()));
        }
        let mut head = BytesMut::new();
        write::request_head(
            &mut head,
            Method::GET.as_str(),
            path,
            [
                (&b"host"[..], host.as_bytes()),
                (&b"user-agent"[..], &b"sluice-health"[..]),
            ],
        );
        let head = head.freeze();
        self.request = Some(Request {
            path: path.clone(),
            address: address.clone(),
            head: head.clone(),
        });
        Ok(head)
    }
}

async fn open(target: &Target) -> Result<Conn, CheckFailure> {
    upstream::connect(&target.endpoint, target.connect_timeout)
        .await
        .map_err(|e| match e {
            e if e.is_refused() => CheckFailure::Refused,
            ConnectError::Timeout(_) => CheckFailure::Timeout,
            other => CheckFailure::Connect(other),
        })
}

/// Reads the response to the check's `GET`, interim responses skipped and
/// the body read to its end (or past [`MAX_BODY`]). Gives its status and
/// whether the connection can carry the next check.
async fn read_response(conn: &mut Conn) -> Result<(StatusCode, bool), CheckFailure> {
    let mut buf = BytesMut::new();
    let head = loop {
        match ResponseHead::parse(&mut buf, upstream::RESPONSE_LIMITS)
            .map_err(UpstreamError::Head)?
        {
            Some(head)
                if head.status.is_informational()
                    && head.status != StatusCode::SWITCHING_PROTOCOLS => {}
            Some(head) => break head,
            None => {
                if read_more(conn, &mut buf).await? == 0 {
                    return Err(UpstreamError::ClosedBeforeHead.into());
                }
            }
        }
    };
    let kind = framing::response_body(&Method::GET, &head).map_err(UpstreamError::Framing)?;
    let mut body = BodyDecoder::new(kind);
    let mut read = 0;
    let ended = loop {
        match body.step(&buf).map_err(UpstreamError::Chunked)? {
            Step::NeedMore => {
                if read_more(conn, &mut buf).await? == 0 {
                    body.at_eof().map_err(|_| UpstreamError::Truncated)?;
                    // Ended by the close: nothing left to reuse.
                    return Ok((head.status, false));
                }
            }
            Step::Data(n) => {
                buf.advance(n);
                read += n;
                if read > MAX_BODY {
                    break false;
                }
            }
            Step::Framing(n) | Step::Trailer { consumed: n, .. } => buf.advance(n),
            Step::End(n) => {
                buf.advance(n);
                break true;
            }
        }
    };
    let reusable = ended
        && head.status != StatusCode::SWITCHING_PROTOCOLS
        && head.keeps_alive()
        && body.keeps_connection()
        && buf.is_empty();
    Ok((head.status, reusable))
}

/// Reads what the server sent next into `buf`; 0 at the end of the stream.
async fn read_more(conn: &mut Conn, buf: &mut BytesMut) -> Result<usize, CheckFailure> {
    buf.reserve(READ_SIZE);
    Ok(conn.read_buf(buf).await.map_err(UpstreamError::Read)?)
}
