//! One connection's request handler: everything between hyper handing over a
//! request and handing back a response.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::access::AccessEntry;
use super::body::{Finish, RequestBody, ResponseBody};
use super::client_io::ConnWatch;
use super::error::ProxyError;
use super::forward::{Outbound, Served, forward};
use super::headers::{self, Forwarded};
use super::upgrade::{self, Rules, Tunnel};
use crate::lifecycle::Tracker;
use crate::runtime::{ListenerRt, Shared, UpstreamRt};
use crate::sticky::Binding;

/// What a connection knows about itself; shared by its requests.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    /// The listener's address: its identity across reloads.
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    /// The peer's address as a header value (`X-Forwarded-For`, `X-Real-IP`),
    /// made once for all the connection's requests.
    pub peer_ip: HeaderValue,
    pub tls: bool,
    /// The lower-case SNI name a TLS client sent: requests must be for it.
    pub sni: Option<String>,
    /// The listener as of accept time, used if a reload removed it while
    /// this connection drains.
    pub listener: Arc<ListenerRt>,
    /// Graceful shutdown waits for the tunnels this connection opens.
    pub tracker: Tracker,
    /// What the socket saw that hyper does not tell.
    pub watch: Arc<ConnWatch>,
}

/// A request refused before it could reach a server.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    /// The connection's framing can no longer be trusted.
    close: bool,
}

impl ConnCtx {
    pub async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        // The one snapshot load of this request.
        let snapshot = self.shared.load();
        let listener = snapshot
            .listener(self.listen)
            .unwrap_or(&self.listener)
            .clone();
        let mut entry = snapshot.config.log.access_log.then(|| {
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

        let index = self.watch.next_request();
        let validated = if self.watch.ambiguous(index) {
            // hyper dropped the Content-Length it saw next to
            // Transfer-Encoding, or the tab around a transfer coding.
            Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                reason: "ambiguous framing",
                close: true,
            })
        } else {
            validate(&req, &listener)
        };
        let host = match validated {
            Ok(host) => host,
            Err(refusal) => {
                tracing::debug!(peer = %self.peer, reason = refusal.reason, "request refused");
                return local_answer(&listener, entry, refusal.status, refusal.close);
            }
        };
        let host_name = host_name(&host);
        if let Some(sni) = &self.sni
            && *host_name != **sni
        {
            // A client reusing this connection for a host it did not
            // handshake for (HTTP/2 coalescing, or a forged Host): 421 tells
            // it to open a connection for that host.
            tracing::debug!(peer = %self.peer, %sni, host = %host_name, "request host does not match SNI");
            return local_answer(&listener, entry, StatusCode::MISDIRECTED_REQUEST, false);
        }
        let Some(upstream) = listener.route(&host_name, req.uri().path()).cloned() else {
            return local_answer(&listener, entry, StatusCode::NOT_FOUND, false);
        };
        if let Some(entry) = &mut entry {
            entry.upstream = Some(upstream.name.clone());
        }

        let trusted = &snapshot.config.global.trusted_proxies;
        let peer_ip = self.peer.ip();
        let client_ip = headers::client_ip(peer_ip, req.headers(), trusted);
        // Upgrade is HTTP/1.1 only (HTTP/2 forbids it); the client side of a
        // tunnel must be claimed before the request is taken apart.
        let h1_upgrade = req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers());
        let upgrade = if h1_upgrade {
            req.headers()
                .get(header::UPGRADE)
                .cloned()
                .map(|protocol| (protocol, hyper::upgrade::on(&mut req)))
        } else {
            None
        };
        let (parts, body) = req.into_parts();
        let binding = upstream
            .sticky
            .as_ref()
            .map_or(Binding::Missing, |sticky| sticky.binding(&parts.headers));
        let mut out_headers = parts.headers;
        headers::strip_hop_by_hop(&mut out_headers, upgrade.is_some());
        if upgrade.is_some() {
            out_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        out_headers.insert(header::HOST, host.clone());
        headers::set_forwarded(
            &mut out_headers,
            &Forwarded {
                peer: &self.peer_ip,
                client: client_ip,
                peer_trusted: headers::is_trusted(peer_ip, trusted),
                proto: if self.tls { "https" } else { "http" },
                host: &host,
            },
        );
        // Buffered when small, so a failed attempt can be retried elsewhere.
        let result = match RequestBody::buffer(body, listener.cfg.max_body_size).await {
            Ok(body) => {
                let out = Outbound {
                    uri: if parts.method == Method::OPTIONS && self.watch.options_server_wide(index)
                    {
                        // `OPTIONS http://a.test` asks about the server as a
                        // whole: origin form `*` (RFC 9112 §3.2.4).
                        Uri::from_static("*")
                    } else {
                        origin_form(&parts.uri)
                    },
                    method: parts.method,
                    headers: out_headers,
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
                    upgrade.filter(|(protocol, _)| upgrade::accepted(protocol, &served.response));
                match accepted {
                    Some((_, client)) => {
                        self.tunnel(&listener, &upstream, served, client, binding, entry)
                    }
                    None => {
                        // A switch nobody asked for: the connection is no
                        // longer HTTP, so it is dropped, not pooled.
                        let server = &upstream.servers[served.server].cfg.address;
                        tracing::warn!(upstream = %upstream.name, %server, "upstream switched protocols without a matching Upgrade request");
                        local_answer(&listener, entry, StatusCode::BAD_GATEWAY, false)
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
                let log = entry.map(|mut entry| {
                    entry.server = Some(server.cfg.address.clone());
                    (entry, status)
                });
                let finish = Finish {
                    lease: served.lease,
                    keepalive: upstream.cfg.keepalive,
                    keepalive_timeout: upstream.cfg.keepalive_timeout,
                    log,
                };
                Response::from_parts(head, ResponseBody::upstream(incoming, finish))
            }
            Err(err) => {
                let status = err.status();
                if matches!(err, ProxyError::RequestBody(_)) {
                    tracing::debug!(peer = %self.peer, error = %err, "client body failed");
                } else {
                    tracing::warn!(upstream = %upstream.name, error = %err, status = status.as_u16(), "request failed");
                }
                let close = matches!(err, ProxyError::RequestBody(_));
                local_answer(&listener, entry, status, close)
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
        } else if let Some(cookie) = sticky.set_cookie(server, self.tls) {
            if binding != Binding::Missing {
                upstream.state.sticky_reissued.inc();
            }
            headers.append(header::SET_COOKIE, cookie);
        }
    }

    /// Answers 101 and hands both connections to an upgrade tunnel once
    /// hyper has switched them. The request's lease ends here; the tunnel is
    /// counted on the server instead. A WebSocket handshake binds a sticky
    /// client like any response.
    fn tunnel(
        &self,
        listener: &ListenerRt,
        upstream: &UpstreamRt,
        served: Served,
        client: OnUpgrade,
        binding: Binding,
        entry: Option<Box<AccessEntry>>,
    ) -> Response<ResponseBody> {
        let server = &upstream.servers[served.server];
        let protocol = upgrade::protocol(&served.response);
        let (mut head, body) = served.response.into_parts();
        let Some(upstream_io) = body.into_upgraded() else {
            // The body of a 101 has not been read, so its connection is
            // there; this is the answer should that ever change.
            return local_answer(listener, entry, StatusCode::BAD_GATEWAY, false);
        };
        headers::strip_hop_by_hop(&mut head.headers, true);
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        self.bind_cookie(upstream, binding, served.server, &mut head.headers);
        server.state.responses.record(head.status.as_u16());
        listener.responses.record(head.status.as_u16());
        Tunnel {
            client,
            upstream: upstream_io,
            rules: Rules {
                server: server.state.clone(),
                protocol,
                websocket: upstream.cfg.websocket,
                idle_timeout: listener.cfg.idle_timeout,
            },
            token: self.tracker.token(),
            log: entry.map(|mut entry| {
                entry.server = Some(server.cfg.address.clone());
                entry
            }),
        }
        .spawn();
        Response::from_parts(head, ResponseBody::empty())
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

/// Checks what hyper lets through but the contract refuses, and returns the
/// request's host (the `Host` header, or `:authority` over HTTP/2).
fn validate(req: &Request<Incoming>, listener: &ListenerRt) -> Result<HeaderValue, Refusal> {
    let refuse = |status, reason| Refusal {
        status,
        reason,
        close: true,
    };
    let headers = req.headers();
    if listener.cfg.max_header_size < HYPER_MIN_BUF_SIZE
        && head_size(req) > listener.cfg.max_header_size
    {
        return Err(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head over max_header_size",
        ));
    }
    let te = headers.get_all(header::TRANSFER_ENCODING);
    if te.iter().next().is_some() {
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "both Content-Length and Transfer-Encoding",
            ));
        }
        let mut codings = te
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(str::trim);
        let single_chunked = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case("chunked"))
            && codings.next().is_none();
        if !single_chunked {
            return Err(refuse(
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding other than a single chunked",
            ));
        }
    }
    if let (Some(max), Some(len)) = (listener.cfg.max_body_size, content_length(headers))
        && len > max
    {
        // Refused before the body is read; hyper sends no 100 Continue for
        // a body nobody polls.
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Content-Length over max_body_size",
        ));
    }

    if req.method() == Method::CONNECT {
        // sluice is a reverse proxy: it opens no tunnels to where clients say.
        return Err(refuse(StatusCode::NOT_IMPLEMENTED, "CONNECT"));
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(refuse(StatusCode::BAD_REQUEST, "several Host headers"));
    }
    if req.version() != Version::HTTP_2 {
        let uri = req.uri();
        match (uri.scheme_str(), uri.authority()) {
            // Authority form (`host:port`) is for CONNECT only (RFC 9112 §3.2.3).
            (None, Some(_)) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "authority-form target without CONNECT",
                ));
            }
            // Absolute form: the target's authority wins over Host and
            // replaces it (RFC 9112 §3.2.2).
            (Some(scheme), Some(authority)) => {
                let host = HeaderValue::from_str(authority.as_str())
                    .ok()
                    .filter(|h| valid_host(h) && matches!(scheme, "http" | "https"));
                return host.ok_or_else(|| {
                    refuse(StatusCode::BAD_REQUEST, "invalid absolute-form target")
                });
            }
            _ => {}
        }
    }
    if req.version() == Version::HTTP_2 {
        // `:authority` is the host; a differing `host` field is not trusted.
        if let Some(authority) = req.uri().authority() {
            return HeaderValue::from_str(authority.as_str())
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, "invalid :authority"));
        }
    }
    match host_header {
        Some(host) if !host.is_empty() && valid_host(host) => Ok(host.clone()),
        Some(_) => Err(refuse(StatusCode::BAD_REQUEST, "invalid Host")),
        None if req.version() == Version::HTTP_10 => {
            HeaderValue::from_str(&listener.cfg.listen.to_string())
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, "no Host"))
        }
        None => Err(refuse(StatusCode::BAD_REQUEST, "no Host header")),
    }
}

/// hyper's smallest HTTP/1.1 read buffer. The server sets its buffer to
/// `max_header_size` and answers 431 itself when a head does not fit, but
/// cannot go below this, so smaller limits are checked here.
const HYPER_MIN_BUF_SIZE: usize = 8192;

/// The request head's size on the wire (HTTP/1.1 form): request line, each
/// `name: value` line, and the blank line.
fn head_size(req: &Request<Incoming>) -> usize {
    let request_line =
        req.method().as_str().len() + req.uri().to_string().len() + " HTTP/1.1\r\n".len() + 1;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    request_line + fields + "\r\n".len()
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A host is `name[:port]` with no spaces, slashes or userinfo.
fn valid_host(host: &HeaderValue) -> bool {
    host.as_bytes()
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// The lower-case host name without its port, for routing. Borrowed when
/// the client already sent it in lower case, as clients almost always do.
fn host_name(host: &HeaderValue) -> Cow<'_, str> {
    let host = host.to_str().unwrap_or_default();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
    };
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_drops_port_and_case() {
        assert_eq!(
            host_name(&HeaderValue::from_static("API.Example.com:8080")),
            "api.example.com"
        );
        assert_eq!(host_name(&HeaderValue::from_static("[::1]:80")), "::1");
        assert_eq!(
            host_name(&HeaderValue::from_static("example.com")),
            "example.com"
        );
    }
}
