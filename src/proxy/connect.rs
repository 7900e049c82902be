//! Opening HTTP/1.1 connections to servers, over TLS when the upstream says so.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::pool::Sender;
use crate::runtime::{ServerRt, UpstreamRt};
use crate::tls::UpstreamTls;

/// Connects within `timeout` and starts the connection's task.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Sender, ProxyError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ProxyError::Connect { addr, source }),
        Err(_) => return Err(ProxyError::ConnectTimeout(addr)),
    };
    let _ = stream.set_nodelay(true);
    handshake(addr, TokioIo::new(stream)).await
}

/// Connects to `server` as its upstream is configured: plain, or TLS with
/// the handshake counted in `connect_timeout` (a server that accepts TCP but
/// never answers the handshake is as unreachable as one that doesn't).
pub async fn connect_server(up: &UpstreamRt, server: &ServerRt) -> Result<Sender, ProxyError> {
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
/// whose host TLS verifies when the upstream has no `server_name`).
pub async fn connect_to(
    addr: SocketAddr,
    address: &str,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
) -> Result<Sender, ProxyError> {
    let Some(tls) = tls else {
        return connect(addr, timeout).await;
    };
    let open = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ProxyError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        tls.connect(stream, address)
            .await
            .map_err(|source| ProxyError::Tls { addr, source })
    };
    let stream = tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| ProxyError::ConnectTimeout(addr))??;
    handshake(addr, TokioIo::new(stream)).await
}

async fn handshake<T>(addr: SocketAddr, io: T) -> Result<Sender, ProxyError>
where
    T: Read + Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await
        .map_err(ProxyError::Upstream)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}
