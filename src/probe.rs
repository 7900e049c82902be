//! `sluice probe URL`: one plain-HTTP GET, so a container's HEALTHCHECK can
//! ask sluice itself without an HTTP client in the image.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("not a URL: {0}")]
    Url(#[from] http::uri::InvalidUri),
    #[error("only http:// URLs can be probed")]
    Scheme,
    #[error("the URL names no host")]
    NoHost,
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// GETs `url` and returns the answer's status, within `timeout`.
pub async fn get(url: &str, timeout: Duration) -> Result<StatusCode, ProbeError> {
    let uri: Uri = url.parse()?;
    tokio::time::timeout(timeout, exchange(&uri))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

async fn exchange(uri: &Uri) -> Result<StatusCode, ProbeError> {
    if uri.scheme_str() != Some("http") {
        return Err(ProbeError::Scheme);
    }
    let authority = uri.authority().ok_or(ProbeError::NoHost)?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = TcpStream::connect((host, authority.port_u16().unwrap_or(80)))
        .await
        .map_err(ProbeError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(HOST, authority.as_str())
        .header(
            USER_AGENT,
            concat!("sluice-probe/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(request).await?.status())
}
