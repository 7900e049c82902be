//! One connection's request handler: everything between a request head
//! arriving (from sluice's HTTP/1.1 engine, or hyper's HTTP/2 server) and
//! the response going back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::access::AccessEntry;
use super::body::{ClientBody, Finish, RequestBody, ResponseBody};
use super::error::{CLIENT_CLOSED_REQUEST, ProxyError, client_closed_request};
use super::forward::{Outbound, Served, forward};
use super::forwarding::{Client, Forwarding, IpText};
use super::h1::{Settings, Stop};
use super::headers;
use super::upgrade::{self, Rules, Tunnel};
use super::validate::{host_name, validate};
use crate::http1::HeaderCase;
use crate::lifecycle::{Token, Tracker};
use crate::runtime::{ListenerRt, Shared, UpstreamRt};
use crate::sticky::Binding;

/// What every connection of a listener shares, in one worker: made by the
/// accept loop once, and again when a reload changes the listener, so a
/// connection holds a pointer to it rather than a copy each.
pub struct ListenerCtx {
    pub shared: Arc<Shared>,
    /// The listener's address: its identity across reloads.
    pub listen: SocketAddr,
    /// The listener as of accept time, used if a reload removed it while
    /// its connections drain.
    pub listener: Arc<ListenerRt>,
    /// Graceful shutdown waits for the tunnels connections open.
    pub tracker: Tracker,
    /// HTTP/1.1's settings, from `listener`.
    pub settings: Settings,
    /// The reasons to end the listener's connections gracefully.
    pub stop: Stop,
}

/// What a connection knows about itself; shared by its requests.
pub struct ConnCtx {
    pub listening: Arc<ListenerCtx>,
    pub peer: SocketAddr,
    /// The peer's address in text (`X-Forwarded-For`, `X-Real-IP`), made
    /// once for all the connection's requests; inline, not on the heap.
    pub peer_text: IpText,
    /// `Some` for a connection under TLS, with the lower-case SNI name the
    /// client sent: requests must be for it. Empty when it sent none (a
    /// name is never empty, RFC 6066 §3): one field rather than a flag and
    /// an option, as every idle connection holds it. A box, not a
    /// `String`: no capacity to keep.
    pub tls: Option<Box<str>>,
    /// Holds up graceful shutdown while the connection lives.
    pub _open: Token,
}

/// Marks an `OPTIONS` request whose target was in absolute form with no
/// path (`OPTIONS http://a.test`): it asks about the server as a whole.
#[derive(Debug, Clone, Copy)]
pub struct ServerWideOptions;

/// What handling a request gives back: the response, and for an upgrade
/// the upstream accepted, the tunnel to run once the response is written
/// (HTTP/1.1 only: HTTP/2 has no `Upgrade`, RFC 9113 §8.6).
pub struct Handled {
    pub response: Response<ResponseBody>,
    pub tunnel: Option<Tunnel>,
}

impl From<Response<ResponseBody>> for Handled {
    fn from(response: Response<ResponseBody>) -> Self {
        Handled {
            response,
            tunnel: None,
        }
    }
}

impl ConnCtx {
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The SNI name a TLS client sent, in lower case.
    pub fn sni(&self) -> Option<&str> {
        self.tls.as_deref().filter(|name| !name.is_empty())
    }

    /// A request refused before it was read whole (a malformed head, framing
    /// sluice does not accept): counted as the listener's answer, and the
    /// connection closes after it.
    pub fn refuse(&self, status: StatusCode) -> Response<ResponseBody> {
        let on = &*self.listening;
        let snapshot = on.shared.load();
        let listener = snapshot.listener(on.listen).unwrap_or(&on.listener);
        tracing::debug!(peer = %self.peer, status = status.as_u16(), "request refused");
        local_answer(listener, None, status, true)
    }

    pub async fn handle(&self, req: Request<ClientBody<'_>>) -> Handled {
        self.handle_h1(req, None).await
    }

    /// [`handle`](Self::handle) for a request read by the HTTP/1.1 engine,
    /// with the spelling of its field names (`case`) to write them on with.
    /// Not an async fn: its future would hold `req` and `case` twice (as
    /// passed and as moved into the body), and it is part of every
    /// request's future, moved and copied with it.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn's future holds its arguments twice"
    )]
    pub fn handle_h1<'a>(
        &'a self,
        req: Request<ClientBody<'a>>,
        case: Option<HeaderCase>,
    ) -> impl Future<Output = Handled> + 'a {
        async move {
            let started = Instant::now();
            // The one snapshot load of this request.
            let on = &*self.listening;
            let snapshot = on.shared.load();
            let listener = snapshot.listener(on.listen).unwrap_or(&on.listener).clone();
            let entry = snapshot.config.log.access_log.then(|| {
                Box::new(AccessEntry {
                    listener: listener.name.clone(),
                    client: self.peer.ip(),
                    method: req.method().clone(),
                    path: req.uri().path().to_owned(),
                    started,
                    upstream: None,
                    server: None,
                })
            });
            let mut pending = Unanswered::new(&listener, entry);

            let host = match validate(&req, &listener) {
                Ok(host) => host,
                Err(refusal) => {
                    tracing::debug!(peer = %self.peer, reason = refusal.reason, "request refused");
                    return local_answer(
                        &listener,
                        pending.answer(),
                        refusal.status,
                        refusal.close,
                    )
                    .into();
                }
            };
            let host_name = host_name(&host);
            if let Some(sni) = self.sni()
                && *host_name != *sni
            {
                // A client reusing this connection for a host it did not
                // handshake for (HTTP/2 coalescing, or a forged Host): 421 tells
                // it to open a connection for that host.
                tracing::debug!(peer = %self.peer, %sni, host = %host_name, "request host does not match SNI");
                return local_answer(
                    &listener,
                    pending.answer(),
                    StatusCode::MISDIRECTED_REQUEST,
                    false,
                )
                .into();
            }
            let Some(upstream) = listener.route(&host_name, req.uri().path()).cloned() else {
                return local_answer(&listener, pending.answer(), StatusCode::NOT_FOUND, false)
                    .into();
            };
            if let Some(entry) = &mut pending.entry {
                entry.upstream = Some(upstream.name.clone());
            }

            let trusted = &snapshot.config.global.trusted_proxies;
            let peer_ip = self.peer.ip();
            let client_ip = headers::client_ip(peer_ip, req.headers(), trusted);
            // Upgrade is HTTP/1.1 only (HTTP/2 forbids it).
            let h1_upgrade =
                req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers());
            let upgrade = if h1_upgrade {
                req.headers().get(header::UPGRADE).cloned()
            } else {
                None
            };
            let server_wide = req.extensions().get::<ServerWideOptions>().is_some();
            let (parts, body) = req.into_parts();
            let binding = upstream
                .sticky
                .as_ref()
                .map_or(Binding::Missing, |sticky| sticky.binding(&parts.headers));
            let mut out_headers = parts.headers;
            headers::strip_hop_by_hop(&mut out_headers, upgrade.is_some());
            if parts.version == Version::HTTP_2 {
                headers::join_cookies(&mut out_headers);
            }
            if upgrade.is_some() {
                out_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            }
            out_headers.insert(header::HOST, host.clone());
            let forwarding = Forwarding::new(
                &mut out_headers,
                &Client {
                    peer: &self.peer_text,
                    ip: client_ip,
                    peer_trusted: headers::is_trusted(peer_ip, trusted),
                    proto: if self.is_tls() { "https" } else { "http" },
                    host: &host,
                },
            );
            // Buffered when small, so a failed attempt can be retried elsewhere.
            let buffered = RequestBody::buffer(
                body,
                listener.cfg.max_body_size,
                upstream.cfg.response_timeout,
            );
            let result = match buffered.await {
                Ok(body) => {
                    let out = Outbound {
                        uri: if parts.method == Method::OPTIONS && server_wide {
                            // `OPTIONS http://a.test` asks about the server as a
                            // whole: origin form `*` (RFC 9112 §3.2.4).
                            Uri::from_static("*")
                        } else {
                            origin_form(&parts.uri)
                        },
                        method: parts.method,
                        headers: out_headers,
                        forwarding,
                        // Only an HTTP/1.x client's request comes with its
                        // spelling, and only its writer passes fields on raw.
                        unmapped_response: case.is_some(),
                        case,
                        body,
                        client_ip,
                        preferred: match binding {
                            Binding::Server(i) => Some(i),
                            Binding::Missing | Binding::Invalid => None,
                        },
                    };
                    forward(&upstream, out).await
                }
                Err(e) => Err(ProxyError::RequestBody(e)),
            };
            let elapsed = started.elapsed();
            upstream.state.latency.observe(elapsed);
            if let Ok(served) = &result {
                upstream.servers[served.server]
                    .state
                    .latency
                    .observe(elapsed);
            }
            match result {
                Ok(served) if served.response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    let accepted =
                        upgrade.filter(|protocol| upgrade::accepted(protocol, &served.response));
                    match accepted {
                        Some(_) => {
                            self.tunnel(&listener, &upstream, served, binding, pending.answer())
                        }
                        None => {
                            // A switch nobody asked for: the connection is no
                            // longer HTTP, so it is dropped, not pooled.
                            let server = &upstream.servers[served.server].cfg.address;
                            tracing::warn!(upstream = %upstream.name, %server, "upstream switched protocols without a matching Upgrade request");
                            local_answer(
                                &listener,
                                pending.answer(),
                                StatusCode::BAD_GATEWAY,
                                false,
                            )
                            .into()
                        }
                    }
                }
                Ok(served) => {
                    let (mut head, incoming) = served.response.into_parts();
                    headers::strip_hop_by_hop(&mut head.headers, false);
                    let status = head.status;
                    let server = &upstream.servers[served.server];
                    server.state.responses.record(status.as_u16());
                    listener.responses.record(status.as_u16());
                    self.bind_cookie(&upstream, binding, served.server, &mut head.headers);
                    let log = pending.answer().map(|mut entry| {
                        entry.server = Some(server.cfg.address.clone());
                        (entry, status)
                    });
                    let finish = Finish {
                        lease: served.lease,
                        keepalive: upstream.cfg.keepalive,
                        keepalive_timeout: upstream.cfg.keepalive_timeout,
                        log,
                    };
                    Response::from_parts(head, ResponseBody::upstream(incoming, finish)).into()
                }
                Err(err) => {
                    let status = err.status();
                    if matches!(err, ProxyError::RequestBody(_) | ProxyError::ClientGone) {
                        tracing::debug!(peer = %self.peer, error = %err, "client failed");
                    } else {
                        tracing::warn!(upstream = %upstream.name, error = %err, status = status.as_u16(), "request failed");
                    }
                    let close = matches!(err, ProxyError::RequestBody(_) | ProxyError::ClientGone);
                    local_answer(&listener, pending.answer(), status, close).into()
                }
            }
        }
    }

    /// Adds the sticky cookie naming `server`, the one that answered whatever
    /// a retry did, when it changes what the client holds.
    fn bind_cookie(
        &self,
        upstream: &UpstreamRt,
        binding: Binding,
        server: usize,
        headers: &mut http::HeaderMap,
    ) {
        let Some(sticky) = &upstream.sticky else {
            return;
        };
        if binding == Binding::Server(server) {
            upstream.state.sticky_honoured.inc();
        } else if let Some(cookie) = sticky.set_cookie(server, self.is_tls()) {
            if binding != Binding::Missing {
                upstream.state.sticky_reissued.inc();
            }
            headers.append(header::SET_COOKIE, cookie);
        }
    }

    /// Answers 101 with the tunnel the connection runs once the 101 is
    /// written. The request's lease ends here; the tunnel is counted on the
    /// server instead. A WebSocket handshake binds a sticky client like any
    /// response.
    fn tunnel(
        &self,
        listener: &ListenerRt,
        upstream: &UpstreamRt,
        served: Served,
        binding: Binding,
        entry: Option<Box<AccessEntry>>,
    ) -> Handled {
        let server = &upstream.servers[served.server];
        let protocol = upgrade::protocol(&served.response);
        let (mut head, body) = served.response.into_parts();
        let Some(upstream_io) = body.into_upgraded() else {
            // The body of a 101 has not been read, so its connection is
            // there; this is the answer should that ever change.
            return local_answer(listener, entry, StatusCode::BAD_GATEWAY, false).into();
        };
        headers::strip_hop_by_hop(&mut head.headers, true);
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        self.bind_cookie(upstream, binding, served.server, &mut head.headers);
        server.state.responses.record(head.status.as_u16());
        listener.responses.record(head.status.as_u16());
        let tunnel = Tunnel::open(
            upstream_io,
            Rules {
                server: server.state.clone(),
                protocol,
                websocket: upstream.cfg.websocket,
                idle_timeout: listener.cfg.idle_timeout,
            },
            self.listening.tracker.token(),
            entry.map(|mut entry| {
                entry.server = Some(server.cfg.address.clone());
                entry
            }),
        );
        Handled {
            response: Response::from_parts(head, ResponseBody::empty()),
            tunnel: Some(tunnel),
        }
    }
}

/// A request not answered yet. Its handler's future is dropped before the
/// answer only when the client went away (an HTTP/2 stream reset, or the
/// connection closed), and then, as nginx does, the request is counted and
/// logged with status 499, having sent nothing. Once answered, the response
/// (its body, or the tunnel) logs the request instead: never twice.
struct Unanswered<'l> {
    /// `None` once answered.
    listener: Option<&'l ListenerRt>,
    entry: Option<Box<AccessEntry>>,
}

impl<'l> Unanswered<'l> {
    fn new(listener: &'l ListenerRt, entry: Option<Box<AccessEntry>>) -> Self {
        Unanswered {
            listener: Some(listener),
            entry,
        }
    }

    /// The access-log entry, for whatever answers the request.
    fn answer(&mut self) -> Option<Box<AccessEntry>> {
        self.listener = None;
        self.entry.take()
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        listener.responses.record(CLIENT_CLOSED_REQUEST);
        if let Some(entry) = self.entry.take() {
            entry.log(client_closed_request(), 0, false);
        }
    }
}

/// A response sluice gives itself (a refusal, or an upstream failure):
/// counted in the listener's responses and logged with no body bytes.
fn local_answer(
    listener: &ListenerRt,
    entry: Option<Box<AccessEntry>>,
    status: StatusCode,
    close: bool,
) -> Response<ResponseBody> {
    listener.responses.record(status.as_u16());
    if let Some(entry) = entry {
        entry.log(status, 0, true);
    }
    error_response(status, close)
}

fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// A short plain-text response for a request sluice answers itself.
pub fn error_response(status: StatusCode, close: bool) -> Response<ResponseBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(ResponseBody::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
