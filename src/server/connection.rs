//! One accepted client connection: the PROXY protocol header, the TLS
//! handshake, then HTTP/1.1 (or HTTP/2 by ALPN or prior knowledge).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Server;
use crate::config::canonical;
use crate::lifecycle::Token;
use crate::proxy::h1::{self, ClientStream, REQUEST_TIMEOUT_408, Served, Settings, Stop};
use crate::proxy::headers;
use crate::proxy::{ConnCtx, ListenerCtx};
use crate::proxy_protocol;

impl Server {
    /// Serves one client connection until it ends; shutdown, or a reload
    /// removing its listener (`on.stop`), ends it gracefully.
    ///
    /// What a connection's task holds while idle is this future, so it is
    /// built in two parts: the start (PROXY header, TLS handshake, and
    /// HTTP/2 by ALPN) runs boxed and is freed once HTTP/1.1 begins, and the
    /// future that remains holds the HTTP/1.1 loop and little else. Not an
    /// async fn: its future would keep every argument for the connection's
    /// whole life, moved or not.
    pub(super) fn serve_connection(
        self: Arc<Self>,
        on: Arc<ListenerCtx>,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        let start = Box::pin(self.start_connection(on, stream, peer));
        async move {
            // Bound by `let`, then moved into the await: a moved-from local
            // takes no room in the task, a temporary held by `if let` would.
            let Some((serving, token)) = start.await else {
                return;
            };
            // Prior knowledge: the client sent HTTP/2's preface. The context
            // comes back with the stream, so that this future need not keep
            // a copy of it.
            if let Served::H2(handoff) = serving.await {
                let (stream, ctx) = *handoff;
                Box::pin(Server::serve_h2(ctx, TokioIo::new(stream))).await;
            }
            drop(token);
        }
    }

    /// Everything before HTTP/1.1: returns the HTTP/1.1 loop to run, with
    /// the connection's shutdown token, or `None` when the connection is done with (closed, or
    /// served as HTTP/2).
    async fn start_connection(
        self: Arc<Self>,
        on: Arc<ListenerCtx>,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(impl Future<Output = Served> + Send + 'static, Token)> {
        // Taken at accept, so a TLS handshake in progress also holds up
        // graceful shutdown (for at most its handshake_timeout).
        let token = self.tracker.token();
        let _ = stream.set_nodelay(true);
        let listen = on.listen;
        let tls = self.tls_listener(listen);
        let wants_tls = on.listener.cfg.tls.is_some();
        // A reload drops a listener's TLS side before the snapshot that
        // removes the listener (or its TLS) is swapped in; a connection
        // accepted in between must not be served in plaintext.
        if wants_tls && tls.is_none() {
            tracing::debug!(%peer, %listen, "TLS listener removed by a reload: closing");
            return None;
        }
        let peer = self
            .proxy_header(listen, &mut stream, peer, tls.is_none())
            .await?;
        let (stream, sni) = match tls {
            None => (ClientStream::Tcp(stream), None),
            // The session is boxed: held in the HTTP/1.1 loop's state, it
            // would be as large as the session itself.
            Some(tls) => match tls.accept(stream).await.map(Box::new) {
                Ok(stream) => {
                    let session = &stream.get_ref().1;
                    let sni = session
                        .server_name()
                        .map(|name| name.to_ascii_lowercase().into_boxed_str());
                    if session.alpn_protocol() == Some(b"h2") {
                        let ctx = self.conn_ctx(on, peer, Some(sni))?;
                        Server::serve_h2(ctx, TokioIo::new(*stream)).await;
                        return None;
                    }
                    (ClientStream::Tls(stream), Some(sni))
                }
                Err(e) => {
                    tracing::debug!(%peer, %listen, error = %e, "TLS handshake failed");
                    return None;
                }
            },
        };
        let ctx = self.conn_ctx(on, peer, sni)?;
        Some((h1::serve(ctx, stream), token))
    }

    /// What a connection's requests share about it; `None` once a reload
    /// removed its listener (during the TLS handshake, say).
    fn conn_ctx(
        &self,
        on: Arc<ListenerCtx>,
        peer: SocketAddr,
        tls: Option<Option<Box<str>>>,
    ) -> Option<ConnCtx> {
        self.shared.load().listener(on.listen)?;
        Some(ConnCtx {
            listening: on,
            peer,
            peer_ip: headers::ip_value(peer.ip()),
            tls: tls.is_some(),
            sni: tls.flatten(),
        })
    }

    /// What the connections of the listener on `listen` share, as the
    /// listener is now: `cached` while the listener is unchanged, made anew
    /// (and cached) after a reload changed it. `None` once a reload removed
    /// it. Called by the accept loop at every accept.
    pub(super) fn listener_ctx(
        &self,
        listen: SocketAddr,
        removed: &watch::Receiver<bool>,
        cached: &mut Option<Arc<ListenerCtx>>,
    ) -> Option<Arc<ListenerCtx>> {
        let snapshot = self.shared.load();
        let listener = snapshot.listener(listen)?;
        if let Some(on) = cached
            && Arc::ptr_eq(&on.listener, listener)
        {
            return Some(on.clone());
        }
        let cfg = &listener.cfg;
        let on = Arc::new(ListenerCtx {
            shared: self.shared.clone(),
            listen,
            listener: listener.clone(),
            tracker: self.tracker.clone(),
            settings: Settings {
                limits: crate::http1::Limits {
                    max_head: cfg.max_header_size,
                    max_fields: cfg.max_headers,
                },
                header_timeout: cfg.header_timeout,
                idle_timeout: cfg.idle_timeout,
            },
            stop: Stop {
                shutdown: self.shutdown.subscribe(),
                removed: removed.clone(),
            },
        });
        *cached = Some(on.clone());
        Some(on)
    }

    /// A trusted peer (a load balancer) may start the connection with a
    /// PROXY protocol header naming the client it relays; that client then
    /// stands for the connection everywhere (`X-Forwarded-For`, `X-Real-IP`,
    /// `ip_hash`, logs, the next `trusted_proxies` decision). It comes before
    /// any TLS. Bytes from an untrusted peer are never looked at: a PROXY
    /// header from it is left to HTTP, which refuses it. Returns the client
    /// address, or `None` when the connection is done with (a malformed
    /// header, or nothing within `header_timeout`, answered 408 in clear).
    async fn proxy_header(
        &self,
        listen: SocketAddr,
        stream: &mut TcpStream,
        peer: SocketAddr,
        cleartext: bool,
    ) -> Option<SocketAddr> {
        let header_timeout = {
            let snapshot = self.shared.load();
            let trusted = &snapshot.config.global.trusted_proxies;
            if !headers::is_trusted(canonical(peer.ip()), trusted) {
                return Some(peer);
            }
            snapshot.listener(listen)?.cfg.header_timeout
        };
        let mut shutdown = self.shutdown.subscribe();
        tokio::select! {
            read = tokio::time::timeout(header_timeout, proxy_protocol::read_header(stream)) => match read {
                Ok(Ok(header)) => Some(header.map_or(peer, |h| h.client(peer))),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, %listen, error = %e, "bad PROXY protocol header; closing");
                    None
                }
                Err(_) => {
                    if cleartext {
                        let _ = stream.try_write(REQUEST_TIMEOUT_408);
                    }
                    None
                }
            },
            // Nothing was asked yet: nothing to finish.
            _ = shutdown.wait_for(|s| *s) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without making one.
    fn output_size<F, A, B, C, D, R>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D) -> R,
    {
        std::mem::size_of::<R>()
    }

    fn output_size2<F, A, B, R>(_: F) -> usize
    where
        F: FnOnce(A, B) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// An idle connection's task holds the HTTP/1.1 loop and a few words
    /// besides: not the start's state, nor a second copy of the loop or of
    /// what it was made from.
    #[test]
    fn a_connection_is_little_more_than_its_http1_loop() {
        let connection = output_size(Server::serve_connection);
        let http1 = output_size2(h1::serve);
        assert!(
            connection <= http1 + 64,
            "connection future {connection} bytes, HTTP/1.1 loop {http1}"
        );
    }

    /// What an idle connection holds besides its socket: the HTTP/1.1
    /// loop, with no timer and no stop waiter of its own (its worker's idle
    /// registry times it and wakes it), and no copy of what every
    /// connection of its listener shares.
    #[test]
    fn an_idle_http1_loop_stays_small() {
        let http1 = output_size2(h1::serve);
        let connection = output_size(Server::serve_connection);
        eprintln!(
            "HTTP/1.1 loop {http1} bytes, connection {connection}, ConnCtx {}, Settings {}, Stop {}",
            std::mem::size_of::<ConnCtx>(),
            std::mem::size_of::<Settings>(),
            std::mem::size_of::<Stop>(),
        );
        // 784 bytes in release with a `Sleep`, a stop waiter and the
        // listener's settings in it.
        assert!(http1 <= 384, "HTTP/1.1 loop {http1} bytes");
        // tokio's task cell is aligned to 128 bytes (x86_64) and adds some
        // 104 to the future: up to 408 bytes the task takes 512, past it
        // 640, in every idle connection.
        assert!(connection <= 408, "connection {connection} bytes");
    }
}
