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
    /// The client closed its connection while the response was awaited:
    /// nginx's 499, "client closed request".
    #[error("the client went away before the response")]
    ClientGone,
}

/// nginx's "client closed request": no response carries it, but the access
/// log and the counters do.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// [`CLIENT_CLOSED_REQUEST`] as a status (a valid code: 100 to 999).
pub fn client_closed_request() -> StatusCode {
    StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST)
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
            ProxyError::ClientGone => client_closed_request(),
        }
    }

    /// Whether the failure is the server's, for passive health.
    pub fn counts_against_server(&self) -> bool {
        !matches!(
            self,
            ProxyError::NoServer | ProxyError::RequestBody(_) | ProxyError::ClientGone
        )
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
