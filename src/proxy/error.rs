//! Why a request could not be served, and the status the client sees.

use http::StatusCode;

use super::body::RequestBodyError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route and no default upstream")]
    NoRoute,
    #[error("no available server")]
    NoServer,
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS to {addr}: {source}")]
    Tls {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {0}: timed out")]
    ConnectTimeout(std::net::SocketAddr),
    #[error("upstream: {0}")]
    Upstream(#[source] hyper::Error),
    #[error("upstream response head not received within response_timeout")]
    ResponseTimeout,
    #[error("upstream response has invalid framing ({0})")]
    BadFraming(&'static str),
    #[error(transparent)]
    RequestBody(#[from] RequestBodyError),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoServer => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. }
            | ProxyError::Tls { .. }
            | ProxyError::ConnectTimeout(_)
            | ProxyError::Upstream(_)
            | ProxyError::BadFraming(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RequestBody(RequestBodyError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestBody(RequestBodyError::Client(_)) => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the failure is the server's, for passive health.
    pub fn counts_against_server(&self) -> bool {
        !matches!(
            self,
            ProxyError::NoRoute | ProxyError::NoServer | ProxyError::RequestBody(_)
        )
    }

    /// Whether the request can have reached the server's application.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. } | ProxyError::Tls { .. } | ProxyError::ConnectTimeout(_)
        )
    }

    /// Finds a client body error hyper wrapped while sending the request.
    pub fn from_send(err: hyper::Error) -> ProxyError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(body) = e.downcast_ref::<RequestBodyError>() {
                return ProxyError::RequestBody(match body {
                    RequestBodyError::TooLarge => RequestBodyError::TooLarge,
                    RequestBodyError::Client(_) => {
                        // hyper::Error is not Clone; the outer error carries it.
                        return ProxyError::RequestBody(RequestBodyError::Client(err));
                    }
                });
            }
            source = e.source();
        }
        ProxyError::Upstream(err)
    }
}
