//! A socket in clear or under TLS, for both ends of the proxy: [`Conn`] to a
//! server, used directly by the task that sends a request or a health check
//! on it (no
//! connection task, no channel: a pooled connection is just the stream, and
//! holds no buffers while idle), and the client's stream the HTTP/1.1
//! engine serves (`proxy::h1::ClientStream`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Plain TCP, or `T` (a client or server TLS stream) over it.
#[derive(Debug)]
pub enum Stream<T> {
    Tcp(TcpStream),
    /// Boxed: a TLS session is large, and most connections are plain.
    Tls(Box<T>),
}

/// A connection to a server.
pub type Conn = Stream<TlsStream<TcpStream>>;

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Tcp(tcp) => tcp,
            Conn::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Whether an idle connection can carry another request: the server has
    /// not closed it and has sent nothing since the last response. Anything
    /// it did send (an error page, a TLS close_notify) means the server is
    /// done with it. Looks without waiting or consuming.
    pub fn is_reusable(&self) -> bool {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.tcp().poll_peek(&mut cx, &mut buf), Poll::Pending)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Conn::Tcp(client.unwrap()), server.unwrap().0)
    }

    /// Polls `check` until it gives `want`: the kernel delivers a close or
    /// bytes to the peer soon, not at once.
    async fn eventually(conn: &Conn, want: bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while conn.is_reusable() != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never became {want}"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_open_quiet_connection_is_reusable() {
        let (conn, _server) = pair().await;
        assert!(conn.is_reusable());
    }

    #[tokio::test]
    async fn a_closed_connection_is_not() {
        let (conn, server) = pair().await;
        drop(server);
        eventually(&conn, false).await;
    }

    #[tokio::test]
    async fn one_with_unexpected_bytes_is_not() {
        let (conn, mut server) = pair().await;
        server
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .unwrap();
        eventually(&conn, false).await;
    }
}
