//! One accepted client connection: the PROXY protocol header, the TLS
//! handshake, then HTTP/1.1 (or HTTP/2 by ALPN or prior knowledge).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Server;
use crate::config::canonical;
use crate::proxy::ConnCtx;
use crate::proxy::h1::{self, ClientStream, REQUEST_TIMEOUT_408, Served, Settings, Stop};
use crate::proxy::headers;
use crate::proxy_protocol;

impl Server {
    /// Serves one client connection until it ends; shutdown, or a reload
    /// removing its listener (`removed`), ends it gracefully.
    pub(super) async fn serve_connection(
        self: Arc<Self>,
        listen: SocketAddr,
        mut stream: TcpStream,
        peer: SocketAddr,
        removed: watch::Receiver<bool>,
    ) {
        // Taken at accept, so a TLS handshake in progress also holds up
        // graceful shutdown (for at most its handshake_timeout).
        let _token = self.tracker.token();
        let _ = stream.set_nodelay(true);
        let tls = self.tls_listener(listen);
        let wants_tls = self
            .shared
            .load()
            .listener(listen)
            .map(|l| l.cfg.tls.is_some());
        // A reload drops a listener's TLS side before the snapshot that
        // removes the listener (or its TLS) is swapped in; a connection
        // accepted in between must not be served in plaintext.
        match (wants_tls, &tls) {
            (None, _) => return,
            (Some(true), None) => {
                tracing::debug!(%peer, %listen, "TLS listener removed by a reload: closing");
                return;
            }
            _ => {}
        }
        // Boxed, as the TLS handshake and HTTP/2 below: a task is as large as
        // its largest state, and an idle HTTP/1.1 connection should cost only
        // what its own loop needs.
        let Some(peer) =
            Box::pin(self.proxy_header(listen, &mut stream, peer, tls.is_none())).await
        else {
            return;
        };
        let (stream, sni) = match tls {
            None => (ClientStream::Tcp(stream), None),
            // The session is boxed inside the handshake's own future: held
            // in this one, it would stay allocated with every connection.
            Some(tls) => match Box::pin(async { tls.accept(stream).await.map(Box::new) }).await {
                Ok(stream) => {
                    let session = &stream.get_ref().1;
                    let sni = session.server_name().map(str::to_ascii_lowercase);
                    if session.alpn_protocol() == Some(b"h2") {
                        let io = TokioIo::new(*stream);
                        Box::pin(self.serve_h2(listen, io, peer, Some(sni), removed)).await;
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
        // Built in a block, so that only the serving future, not these
        // values moved into it, stays in this task's state.
        let served = {
            let Some(ctx) = self.conn_ctx(listen, peer, sni.clone()) else {
                return;
            };
            let cfg = &ctx.listener.cfg;
            let settings = Settings {
                limits: crate::http1::Limits {
                    max_head: cfg.max_header_size,
                    max_fields: cfg.max_headers,
                },
                header_timeout: cfg.header_timeout,
                idle_timeout: cfg.idle_timeout,
            };
            let stop = Stop {
                shutdown: self.shutdown.subscribe(),
                removed: removed.clone(),
            };
            h1::serve(ctx, stream, settings, stop)
        }
        .await;
        if let Served::H2(stream) = served {
            Box::pin(self.serve_h2(listen, TokioIo::new(stream), peer, sni, removed)).await;
        }
    }

    /// What a connection's requests share about it, from the listener as
    /// it is now; `None` once a reload removed the listener.
    pub(super) fn conn_ctx(
        &self,
        listen: SocketAddr,
        peer: SocketAddr,
        tls: Option<Option<String>>,
    ) -> Option<ConnCtx> {
        let listener = self.shared.load().listener(listen).cloned()?;
        Some(ConnCtx {
            shared: self.shared.clone(),
            listen,
            peer,
            peer_ip: headers::ip_value(peer.ip()),
            tls: tls.is_some(),
            sni: tls.flatten(),
            listener,
            tracker: self.tracker.clone(),
        })
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
