//! Sending one request upstream: pick a server, take a lease on it, reuse or
//! open a connection, send within `response_timeout`, and retry on another
//! server when the contract allows.

use std::sync::Arc;

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::body::{Lease, RequestBody};
use super::connect::connect;
use super::error::ProxyError;
use super::pool::Sender;
use crate::balance::PickCtx;
use crate::runtime::{Availability, ServerRt, UpstreamRt, clock};

/// A request ready to go upstream: headers already rewritten.
pub struct Outbound {
    pub method: Method,
    /// Origin-form target.
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: RequestBody,
    pub client_ip: std::net::IpAddr,
}

/// A response head from a server, with what its body must hand back.
pub struct Served {
    pub response: Response<Incoming>,
    pub lease: Lease,
    pub conn: Sender,
    pub server: usize,
}

/// Methods that may be sent twice (RFC 9110 idempotent methods nginx retries).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Tries up to `tries` servers. Returns the first response head, or the
/// error of the last attempt.
pub async fn forward(up: &Arc<UpstreamRt>, mut out: Outbound) -> Result<Served, ProxyError> {
    let idempotent = is_idempotent(&out.method);
    let tries = up.cfg.tries.get();
    let mut tried: Vec<usize> = Vec::new();
    let mut attempts = 0;
    let mut last_err = None;
    let mut body = Some(std::mem::replace(&mut out.body, RequestBody::empty()));

    while attempts < tries {
        let now_ms = clock::now_ms();
        let ctx = PickCtx {
            client_ip: out.client_ip,
            uri: &out.uri,
            headers: &out.headers,
            now_ms,
            tried: &tried,
        };
        let Some(i) = up.balancer.pick(up, &ctx) else {
            break;
        };
        tried.push(i);
        let server = &up.servers[i];
        let Some(lease) = Lease::acquire(&server.state, &up.state, server.max_conns()) else {
            continue;
        };
        let trial = server.availability(now_ms, false) == Availability::Trial;
        if trial && !server.state.claim_trial() {
            continue;
        }
        attempts += 1;
        match attempt(up, server, &out, &mut body).await {
            Ok((response, conn)) => {
                if up.cfg.fail_on_status.contains(&response.status().as_u16()) {
                    note_failure(up, server, &format!("status {}", response.status()));
                } else if server.state.record_success() {
                    tracing::info!(upstream = %up.name, server = %server.cfg.address, "server recovered: request succeeded");
                }
                return Ok(Served {
                    response,
                    lease,
                    conn,
                    server: i,
                });
            }
            Err(err) => {
                if err.counts_against_server() {
                    note_failure(up, server, &err.to_string());
                } else if trial {
                    server.state.abandon_trial();
                }
                let body_left = body.as_ref().is_some_and(|b| matches!(b, RequestBody::Full(_)));
                let retry = !matches!(err, ProxyError::RequestBody(_))
                    && (err.nothing_sent() || idempotent)
                    && body_left;
                tracing::debug!(upstream = %up.name, server = %server.cfg.address, error = %err, retry, "attempt failed");
                if !retry {
                    return Err(err);
                }
                last_err = Some(err);
            }
        }
    }
    Err(last_err.unwrap_or(ProxyError::NoServer))
}

fn note_failure(up: &UpstreamRt, server: &ServerRt, reason: &str) {
    if server
        .state
        .record_failure(up.max_fails(), up.cfg.fail_timeout)
    {
        tracing::warn!(
            upstream = %up.name,
            server = %server.cfg.address,
            reason,
            fail_timeout = ?up.cfg.fail_timeout,
            "server marked failed"
        );
    }
}

/// One attempt on one server. The body is taken only once a connection is
/// open, so a connect failure leaves it for the next server.
async fn attempt(
    up: &UpstreamRt,
    server: &ServerRt,
    out: &Outbound,
    body: &mut Option<RequestBody>,
) -> Result<(Response<Incoming>, Sender), ProxyError> {
    let addr = server.cfg.addr;
    let (mut sender, reused) = match server.state.pool.take() {
        Some(sender) => (sender, true),
        None => (connect(addr, up.cfg.connect_timeout).await?, false),
    };
    let req_body = match body {
        Some(RequestBody::Full(bytes)) => RequestBody::Full(bytes.clone()),
        other => other.take().unwrap_or_else(RequestBody::empty),
    };
    let mut req = Request::new(req_body);
    *req.method_mut() = out.method.clone();
    *req.uri_mut() = out.uri.clone();
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = out.headers.clone();

    let send = async {
        match sender.try_send_request(req).await {
            Ok(response) => Ok(response),
            Err(mut e) => match e.take_message() {
                // A pooled connection the server closed while idle: nothing
                // was sent, so a fresh connection may carry it for any method.
                Some(req) if reused => {
                    sender = connect(addr, up.cfg.connect_timeout).await?;
                    sender.send_request(req).await.map_err(ProxyError::from_send)
                }
                _ => Err(ProxyError::from_send(e.into_error())),
            },
        }
    };
    let response = tokio::time::timeout(up.cfg.response_timeout, send)
        .await
        .map_err(|_| ProxyError::ResponseTimeout)??;
    check_framing(response.headers())?;
    Ok((response, sender))
}

/// A response with both `Content-Length` and `Transfer-Encoding`, or several
/// `Content-Length`s, is ambiguous: smuggling territory. Refuse it.
fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
        return Err(ProxyError::BadFraming(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if headers.get_all(CONTENT_LENGTH).iter().nth(1).is_some() {
        return Err(ProxyError::BadFraming("duplicate Content-Length"));
    }
    Ok(())
}
