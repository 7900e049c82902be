//! Why a request could not be served, and the status the client sees.

use http::StatusCode;

use super::body::RequestBodyError;
use super::client::SendError;
use crate::upstream::ConnectError;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no available server")]
    NoServer,
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("upstream: {0}")]
    Upstream(#[source] UpstreamError),
    #[error("upstream response head not received within response_timeout")]
    ResponseTimeout,
    #[error(transparent)]
    RequestBody(#[from] RequestBodyError),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoServer => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RequestBody(RequestBodyError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestBody(RequestBodyError::TimedOut) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::RequestBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the failure is the server's, for passive health.
    pub fn counts_against_server(&self) -> bool {
        !matches!(self, ProxyError::NoServer | ProxyError::RequestBody(_))
    }

    /// Whether the request can have reached the server's application.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, ProxyError::Connect(_))
    }
}

impl From<SendError> for ProxyError {
    fn from(err: SendError) -> Self {
        match err {
            SendError::Upstream(e) => ProxyError::Upstream(e),
            SendError::Body(e) => ProxyError::RequestBody(e),
        }
    }
}
