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
use crate::proxy::forwarding::IpText;
use crate::proxy::h1::{self, ClientStream, REQUEST_TIMEOUT_408, Settings, Stop};
use crate::proxy::headers;
use crate::proxy::prefixed::Prefixed;
use crate::proxy::{ConnCtx, ListenerCtx};
use crate::proxy_protocol;

impl Server {
    /// Starts serving one client connection: the PROXY protocol header,
    /// the TLS handshake, HTTP/2 by ALPN, then HTTP/1.1 in a task of its
    /// own. Shutdown, or a reload removing its listener (`on.stop`), ends
    /// it gracefully.
    ///
    /// What a connection's task holds while idle is its future, so the
    /// start (whose state, a TLS handshake's included, is large) is a task
    /// of its own that ends once HTTP/1.1 begins, and the HTTP/1.1 loop's
    /// task holds that loop and nothing else.
    pub(super) async fn serve_connection(
        self: Arc<Self>,
        on: Arc<ListenerCtx>,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) {
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
            return;
        }
        let Some(peer) = self
            .proxy_header(listen, &mut stream, peer, tls.is_none())
            .await
        else {
            return;
        };
        // The connection's `ConnCtx::tls`: its SNI name, empty for none.
        let (stream, tls) = match tls {
            None => (ClientStream::Tcp(stream), None),
            // The session is boxed: held in the HTTP/1.1 loop's state, it
            // would be as large as the session itself.
            Some(tls) => match tls.accept(stream).await.map(Box::new) {
                Ok(stream) => {
                    let session = &stream.get_ref().1;
                    let sni = session
                        .server_name()
                        .map(|name| name.to_ascii_lowercase().into_boxed_str())
                        .unwrap_or_default();
                    if session.alpn_protocol() == Some(b"h2") {
                        if let Some(ctx) = self.conn_ctx(on, peer, Some(sni), token) {
                            Server::serve_h2(ctx, TokioIo::new(*stream)).await;
                        }
                        return;
                    }
                    (ClientStream::Tls(stream), Some(sni))
                }
                Err(e) => {
                    tracing::debug!(%peer, %listen, error = %e, "TLS handshake failed");
                    return;
                }
            },
        };
        if let Some(ctx) = self.conn_ctx(on, peer, tls, token) {
            tokio::spawn(http1(ctx, stream));
        }
    }

    /// What a connection's requests share about it; `None` once a reload
    /// removed its listener (during the TLS handshake, say).
    fn conn_ctx(
        &self,
        on: Arc<ListenerCtx>,
        peer: SocketAddr,
        tls: Option<Box<str>>,
        open: Token,
    ) -> Option<ConnCtx> {
        self.shared.load().listener(on.listen)?;
        Some(ConnCtx {
            listening: on,
            peer,
            peer_text: IpText::new(peer.ip()),
            tls,
            _open: open,
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

/// An HTTP/1.1 connection's task: the future every idle connection holds.
fn http1(ctx: ConnCtx, stream: ClientStream) -> impl Future<Output = ()> + Send + 'static {
    h1::serve(ctx, stream, h2_by_prior_knowledge)
}

/// Serves a client that opened with HTTP/2's preface on an HTTP/1.1
/// listener (prior knowledge), the bytes read put back in front.
fn h2_by_prior_knowledge(
    stream: Prefixed<ClientStream>,
    ctx: ConnCtx,
) -> impl Future<Output = ()> + Send {
    Server::serve_h2(ctx, TokioIo::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without making one.
    fn output_size<F, A, B, R>(_: F) -> usize
    where
        F: FnOnce(A, B) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// What an idle connection's task holds besides its socket: the
    /// HTTP/1.1 loop, with no timer and no stop waiter of its own (its
    /// worker's idle registry times it and wakes it), no copy of what every
    /// connection of its listener shares, and nothing of the connection's
    /// start.
    #[test]
    fn an_idle_connection_stays_small() {
        let http1 = output_size(http1);
        eprintln!(
            "HTTP/1.1 task future {http1} bytes, ConnCtx {}, Settings {}, Stop {}",
            std::mem::size_of::<ConnCtx>(),
            std::mem::size_of::<Settings>(),
            std::mem::size_of::<Stop>(),
        );
        // tokio's task cell is aligned to 128 bytes (x86_64) and adds 104
        // to the future: up to 280 bytes the task takes 384, up to 408 it
        // takes 512, in every idle connection. 784 bytes in release with a
        // `Sleep`, a stop waiter and the listener's settings in it.
        assert!(http1 <= 280, "HTTP/1.1 task future {http1} bytes");
    }
}
