//! Binding listening sockets, one per worker.

use std::net::SocketAddr;

use super::ServerError;

/// Binds a listening socket on `addr` for each of `workers` workers. With
/// more than one, every socket has `SO_REUSEPORT`, so the kernel spreads
/// new connections over the workers (and no worker's accept wakes the
/// others). They are handed over unregistered, for [`Server::serve`] to
/// register each with its worker's runtime.
pub async fn bind(
    addr: SocketAddr,
    workers: usize,
) -> Result<Vec<std::net::TcpListener>, ServerError> {
    let bind_all = || {
        let first = bind_one(addr, workers > 1)?;
        // Port 0: the other workers join the port the first one got.
        let bound = first.local_addr()?;
        let mut sockets = Vec::with_capacity(workers);
        sockets.push(first);
        for _ in 1..workers {
            sockets.push(bind_one(bound, true)?);
        }
        Ok(sockets)
    };
    bind_all().map_err(|source| ServerError::Bind { addr, source })
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}
