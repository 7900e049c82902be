//! Opening connections to servers, over TLS when the upstream says so.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::stream::Conn;
use crate::tls::ServerTls;

/// Where a server is and how to speak to it, made once per snapshot.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `None` for cleartext; never falls back to it when TLS is configured.
    pub tls: Option<ServerTls>,
}

/// Why a connection to a server could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("TLS to {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connect to {0}: timed out")]
    Timeout(SocketAddr),
}

impl ConnectError {
    /// Whether the server's host actively refused the connection.
    pub fn is_refused(&self) -> bool {
        matches!(self, ConnectError::Connect { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused)
    }
}

/// Connects to `endpoint` within `timeout`, a TLS handshake included: a
/// server that accepts TCP but never answers the handshake is as
/// unreachable as one that doesn't.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Conn, ConnectError> {
    let addr = endpoint.addr;
    let open = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ConnectError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        match &endpoint.tls {
            None => Ok(Conn::Tcp(stream)),
            Some(tls) => tls
                .connect(stream)
                .await
                .map(|tls| Conn::Tls(Box::new(tls)))
                .map_err(|source| ConnectError::Tls { addr, source }),
        }
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| ConnectError::Timeout(addr))?
}
