//! One health check request over the checker's own keep-alive connection.

use http::header::{HOST, HeaderValue, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::BodyExt as _;

use super::Target;
use crate::proxy::body::RequestBody;
use crate::proxy::connect::connect_to;
use crate::proxy::error::ProxyError;
use crate::proxy::pool::Sender;

/// Health responses are read to their end so the connection can be reused;
/// one larger than this is not worth keeping the connection for.
const MAX_BODY: usize = 64 * 1024;

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
    Connect(#[source] ProxyError),
    #[error("{0}")]
    Http(#[source] hyper::Error),
    #[error("path {0:?} is not a valid request target")]
    InvalidPath(String),
    #[error("address {0:?} is not a valid Host")]
    InvalidHost(String),
}

/// The checker's connection, kept open between rounds.
#[derive(Default)]
pub struct Probe {
    conn: Option<Sender>,
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
        let request = request(target)?;
        let reused = self.conn.take().filter(|c| !c.is_closed());
        let (mut conn, reused) = match reused {
            Some(conn) => (conn, true),
            None => (open(target).await?, false),
        };
        let response = match conn.try_send_request(request).await {
            Ok(response) => response,
            Err(mut e) => match e.take_message() {
                // The server closed the idle connection: nothing was sent.
                Some(request) if reused => {
                    conn = open(target).await?;
                    conn.send_request(request)
                        .await
                        .map_err(CheckFailure::Http)?
                }
                _ => return Err(CheckFailure::Http(e.into_error())),
            },
        };
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut read = 0;
        let mut complete = true;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(CheckFailure::Http)?;
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > MAX_BODY {
                complete = false;
                break;
            }
        }
        if complete {
            self.conn = Some(conn);
        }
        let (lo, hi) = target.check.status;
        if (lo..=hi).contains(&status) {
            Ok(())
        } else {
            Err(CheckFailure::Status(status))
        }
    }
}

async fn open(target: &Target) -> Result<Sender, CheckFailure> {
    connect_to(
        target.addr,
        &target.address,
        target.connect_timeout,
        target.tls.as_ref(),
    )
    .await
    .map_err(|e| match e {
        ProxyError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            CheckFailure::Refused
        }
        ProxyError::ConnectTimeout(_) => CheckFailure::Timeout,
        other => CheckFailure::Connect(other),
    })
}

fn request(target: &Target) -> Result<Request<RequestBody>, CheckFailure> {
    let uri: Uri = (target.check.path.parse())
        .map_err(|_| CheckFailure::InvalidPath(target.check.path.clone()))?;
    let host = HeaderValue::from_str(&target.address)
        .map_err(|_| CheckFailure::InvalidHost(target.address.clone()))?;
    let mut request = Request::new(RequestBody::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(HOST, host);
    headers.insert(USER_AGENT, HeaderValue::from_static("sluice-health"));
    Ok(request)
}
