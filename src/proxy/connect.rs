//! Opening connections to servers, over TLS when the upstream says so.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::conn::Conn;
use super::error::ProxyError;
use crate::runtime::{ServerRt, UpstreamRt};
use crate::tls::UpstreamTls;

/// Connects to `server` as its upstream is configured.
pub async fn connect_server(up: &UpstreamRt, server: &ServerRt) -> Result<Conn, ProxyError> {
    let cfg = &server.cfg;
    connect_to(
        cfg.addr,
        &cfg.address,
        up.cfg.connect_timeout,
        up.tls.as_ref(),
    )
    .await
}

/// Connects to the server at `addr`, configured as `address` (`host:port`,
/// whose host TLS verifies when the upstream has no `server_name`), within
/// `timeout`, a TLS handshake included: a server that accepts TCP but never
/// answers the handshake is as unreachable as one that doesn't.
pub async fn connect_to(
    addr: SocketAddr,
    address: &str,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
) -> Result<Conn, ProxyError> {
    let open = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ProxyError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok(Conn::Tcp(stream)),
            Some(tls) => tls
                .connect(stream, address)
                .await
                .map(|tls| Conn::Tls(Box::new(tls)))
                .map_err(|source| ProxyError::Tls { addr, source }),
        }
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| ProxyError::ConnectTimeout(addr))?
}
