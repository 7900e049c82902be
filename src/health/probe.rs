//! One health check request over the checker's own keep-alive connection.

use http::Method;
use http::header::{HOST, HeaderMap, HeaderValue, USER_AGENT};
use http_body_util::BodyExt as _;

use super::Target;
use crate::proxy::body::RequestBody;
use crate::proxy::client::{self, SendError, UpstreamError};
use crate::upstream::{self, Conn, ConnectError};

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
    Connect(#[source] ConnectError),
    #[error("{0}")]
    Send(#[source] SendError),
    #[error("{0}")]
    Http(#[source] UpstreamError),
    #[error("path {0:?} is not a valid request target")]
    InvalidPath(String),
    #[error("address {0:?} is not a valid Host")]
    InvalidHost(String),
}

/// The checker's connection, kept open between rounds.
#[derive(Default)]
pub struct Probe {
    conn: Option<Conn>,
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
        let headers = request_headers(target)?;
        let path = &target.check.path;
        if path.parse::<http::Uri>().is_err() {
            return Err(CheckFailure::InvalidPath(path.clone()));
        }
        let mut conn = match self.conn.take().filter(Conn::is_reusable) {
            Some(conn) => conn,
            None => open(target).await?,
        };
        let sent = client::send_request(
            &mut conn,
            &Method::GET,
            path,
            headers,
            &mut RequestBody::empty(),
        )
        .await
        .map_err(CheckFailure::Send)?;
        let response = client::read_response(conn, &Method::GET, sent)
            .await
            .map_err(CheckFailure::Http)?;
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
            self.conn = body.take_reusable();
        }
        let (lo, hi) = target.check.status;
        if (lo..=hi).contains(&status) {
            Ok(())
        } else {
            Err(CheckFailure::Status(status))
        }
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

fn request_headers(target: &Target) -> Result<HeaderMap, CheckFailure> {
    let host = HeaderValue::from_str(&target.address)
        .map_err(|_| CheckFailure::InvalidHost(target.address.clone()))?;
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(HOST, host);
    headers.insert(USER_AGENT, HeaderValue::from_static("sluice-health"));
    Ok(headers)
}
