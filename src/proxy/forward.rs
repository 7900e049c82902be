//! Sending one request upstream: pick a server, take a lease on it, reuse or
//! open a connection, send within `response_timeout`, and retry on another
//! server when the contract allows.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use http::{HeaderMap, Method, Response, Uri};

use super::body::{RequestBody, RequestBodyError};
use super::client::{self, UpstreamBody};
use super::error::ProxyError;
use super::forwarding::Forwarding;
use crate::balance::{self, Lease, PickCtx, queue};
use crate::http1::HeaderCase;
use crate::runtime::{Availability, ServerRt, UpstreamRt, clock};
use crate::upstream;
use crate::upstream::UpstreamError;
use crate::workers::idle::Deadline;

/// A request ready to go upstream: headers already rewritten.
pub struct Outbound<'a> {
    pub method: Method,
    /// Origin-form target.
    pub uri: Uri,
    /// The request's fields, less those `forwarding` sets.
    pub headers: HeaderMap,
    /// `X-Forwarded-*` and `X-Real-IP`, written behind `headers`.
    pub forwarding: Forwarding<'a>,
    /// How the client spelled its field names (HTTP/1.1 clients).
    pub case: Option<HeaderCase>,
    /// The response goes to an HTTP/1.x client, whose writer takes the
    /// server's fields as they came: no header map is built for them.
    pub unmapped_response: bool,
    pub body: RequestBody<'a>,
    pub client_ip: std::net::IpAddr,
    /// The server a sticky cookie binds this request to: tried first, and
    /// allowed even while it drains.
    pub preferred: Option<usize>,
}

/// A response head from a server, with what its body must hand back. The
/// body owns the server connection.
pub struct Served {
    pub response: Response<UpstreamBody>,
    pub lease: Lease,
    pub server: usize,
}

/// How long a response is waited for before the client's connection is
/// watched too, so that a client gone (an abandoned long poll) frees its
/// server. Not from the start: watching costs a system call, which nearly
/// every response comes before.
const WATCH_CLIENT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Methods that may be sent twice (RFC 9110 idempotent methods nginx retries).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// Tries up to `tries` servers. Returns the first usable response head, or
/// the error of the last attempt.
///
/// A retry goes to a server this request has not tried, only while the
/// upstream's retry budget has room, and only when the request can safely be
/// sent again: nothing of it reached a server (connect failure), or it is
/// idempotent and its body is still at hand (buffered, or not yet sent). No
/// response byte has reached the client at this point: the response head is
/// returned from here, never streamed before.
/// Not an async fn: its future would hold `up` and `out` twice (as passed
/// and as moved into the body), and this future is part of every
/// request's, moved and copied with it.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn's future holds its arguments twice"
)]
pub fn forward<'a>(
    up: &'a Arc<UpstreamRt>,
    mut out: Outbound<'a>,
) -> impl Future<Output = Result<Served, ProxyError>> + 'a {
    async move {
        let idempotent = is_idempotent(&out.method);
        let tries = up.cfg.tries.get();
        let mut tried = Tried::default();
        let mut attempts = 0;
        let mut last_err = None;
        // A response whose status is in `fail_on_status`, returned if no other
        // server does better (as nginx's `proxy_next_upstream http_503`).
        let mut fallback: Option<Served> = None;
        let mut body = Some(std::mem::replace(&mut out.body, RequestBody::empty()));
        // The request's clock read: the retry deposit, the pick, the
        // server's availability, the pool's keep-alive check and the
        // response deadline all take it, until something awaits.
        let mut now = Now::read();
        up.state
            .retry_budget
            .deposit_at(up.cfg.retry_budget, now.ms);

        while attempts < tries {
            // A retry's token is taken before its pick: a refused retry must
            // not move the balancer (round-robin would hand the next
            // request the server that just failed). It goes back when no
            // server is left to try.
            if attempts > 0 && !up.state.retry_budget.try_withdraw(up.cfg.retry_min_per_sec) {
                up.state.retries_refused.inc();
                tracing::debug!(upstream = %up.name, "retry budget spent: not retrying");
                break;
            }
            let take = |now_ms: u64| -> Option<(usize, Lease)> {
                let ctx = PickCtx {
                    client_ip: out.client_ip,
                    uri: &out.uri,
                    headers: &out.headers,
                    set: Some(&out.forwarding),
                    now_ms,
                    tried: tried.as_slice(),
                };
                // A failed acquire lost a race for the last slot; the server is
                // full now, so the next pick looks elsewhere.
                (0..=up.servers.len()).find_map(|_| {
                    let bound_pick = out
                        .preferred
                        .filter(|&p| p < up.servers.len() && balance::eligible_bound(up, p, &ctx));
                    let i = bound_pick.or_else(|| up.balancer.pick(up, &ctx))?;
                    let server = &up.servers[i];
                    let lease = Lease::acquire(&server.state, &up.state, server.max_conns())?;
                    // A drain or disable applied since the pick: dropping
                    // the lease gives the slot back and the next pick
                    // skips the server.
                    server
                        .admits(out.preferred == Some(i))
                        .then_some((i, lease))
                })
            };
            // Newcomers queue behind requests already waiting for a slot.
            let taken = match queue::has_waiters(&up.state) {
                false => take(now.ms),
                true => None,
            };
            let taken = match taken {
                Some(taken) => Some(taken),
                None => {
                    let queued = queue::wait(up, tried.as_slice(), take);
                    let waited = unless_client_gone(queued, body.as_mut()).await;
                    now = Now::read();
                    match waited {
                        Some(taken) => taken,
                        // Gone while in line: its place goes to the next
                        // request, and no server ever sees it.
                        None => {
                            if attempts > 0 {
                                up.state.retry_budget.give_back();
                            }
                            return Err(ProxyError::ClientGone);
                        }
                    }
                }
            };
            let Some((i, lease)) = taken else {
                if attempts > 0 {
                    up.state.retry_budget.give_back();
                }
                break;
            };
            let bound = out.preferred == Some(i);
            tried.push(i);
            let server = &up.servers[i];
            let trial = if server.availability(now.ms, bound) == Availability::Trial {
                match Trial::claim(server) {
                    Some(trial) => Some(trial),
                    None => {
                        if attempts > 0 {
                            up.state.retry_budget.give_back();
                        }
                        continue;
                    }
                }
            } else {
                None
            };
            if attempts > 0 {
                up.state.retries.inc();
            }
            attempts += 1;
            if bound {
                server.state.note_bound_request();
            }
            match attempt(up, server, &out, &mut body, now.at).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let served = Served {
                        response,
                        lease,
                        server: i,
                    };
                    if !up.cfg.fail_on_status.contains(&status) {
                        if server.state.record_success() {
                            tracing::info!(upstream = %up.name, server = %server.cfg.address, "server recovered: request succeeded");
                        }
                        Trial::settle(trial);
                        return Ok(served);
                    }
                    note_failure(up, server, &format!("status {status}"));
                    Trial::settle(trial);
                    if !(idempotent && body.is_some()) {
                        return Ok(served);
                    }
                    tracing::debug!(upstream = %up.name, server = %server.cfg.address, status, "status in fail_on_status: trying another server");
                    fallback = Some(served);
                }
                Err(err) => {
                    if err.counts_against_server() {
                        note_failure(up, server, &err.to_string());
                        Trial::settle(trial);
                    }
                    // A streamed body is gone once sending began; connect
                    // failures leave it untouched. A server's interim
                    // response (a 103) passed on began the response.
                    let retry = !matches!(err, ProxyError::RequestBody(_) | ProxyError::ClientGone)
                        && (err.nothing_sent() || idempotent)
                        && body.as_ref().is_some_and(|b| !b.interim_passed());
                    tracing::debug!(upstream = %up.name, server = %server.cfg.address, error = %err, retry, "attempt failed");
                    if !retry {
                        return fallback.ok_or(err);
                    }
                    last_err = Some(err);
                }
            }
            now = Now::read();
        }
        match fallback {
            Some(served) => Ok(served),
            None => Err(last_err.unwrap_or(ProxyError::NoServer)),
        }
    }
}

/// `wait`'s outcome, or `None` once the client has closed its connection
/// first (a request waiting in the queue).
async fn unless_client_gone<T>(
    wait: impl Future<Output = T>,
    mut body: Option<&mut RequestBody<'_>>,
) -> Option<T> {
    let mut wait = std::pin::pin!(wait);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = wait.as_mut().poll(cx) {
            return Poll::Ready(Some(done));
        }
        match body.as_mut().map(|body| body.poll_client_gone(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One clock read, as an `Instant` and in [`clock::now_ms`] milliseconds,
/// converted once for the several uses a request makes of it.
#[derive(Clone, Copy)]
struct Now {
    at: Instant,
    ms: u64,
}

impl Now {
    fn read() -> Now {
        let at = Instant::now();
        Now {
            at,
            ms: clock::ms_at(at),
        }
    }
}

/// The servers one request has tried, in order. Held inline: `tries` is
/// rarely more than a few, and a request should not allocate for this.
enum Tried {
    Inline([usize; 8], usize),
    Spilled(Vec<usize>),
}

impl Default for Tried {
    fn default() -> Self {
        Tried::Inline([0; 8], 0)
    }
}

impl Tried {
    fn push(&mut self, i: usize) {
        match self {
            Tried::Inline(items, len) if *len < items.len() => {
                items[*len] = i;
                *len += 1;
            }
            Tried::Inline(items, _) => {
                let mut spilled = items.to_vec();
                spilled.push(i);
                *self = Tried::Spilled(spilled);
            }
            Tried::Spilled(items) => items.push(i),
        }
    }

    fn as_slice(&self) -> &[usize] {
        match self {
            Tried::Inline(items, len) => &items[..*len],
            Tried::Spilled(items) => items,
        }
    }
}

/// The single request allowed to a failed server once its `fail_timeout`
/// has passed. Dropped unsettled (the client went away, or its body failed),
/// it gives the trial back, so the server is not left out forever.
struct Trial<'a>(&'a ServerRt);

impl<'a> Trial<'a> {
    fn claim(server: &'a ServerRt) -> Option<Self> {
        server.state.claim_trial().then_some(Trial(server))
    }

    /// The outcome was recorded, which ended the trial.
    fn settle(trial: Option<Self>) {
        std::mem::forget(trial);
    }
}

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        self.0.state.abandon_trial();
    }
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

/// One attempt on one server, inline: write the request on a pooled or new
/// connection and read the response head, within `response_timeout`. The
/// body is taken only once a connection is open, so a connect failure
/// leaves it for the next server. `now` is the caller's clock read: the
/// pool's keep-alive check takes it, and so does the response deadline on
/// a pooled connection (a new one reads the clock once connected).
///
/// The response timeout is a [`Deadline`] on the worker's idle waits, not
/// a tokio timer: every request has one and nearly all end long before
/// it, so a timer-wheel entry made and removed per request is cost for
/// nothing. It may fire up to 100 ms late.
async fn attempt(
    up: &UpstreamRt,
    server: &ServerRt,
    out: &Outbound<'_>,
    body: &mut Option<RequestBody<'_>>,
    now: Instant,
) -> Result<Response<UpstreamBody>, ProxyError> {
    // Connecting is boxed: its future (a TLS handshake's included) is large,
    // and held inline it would make every request's future that large, to
    // be moved around on each await even when a pooled connection is reused.
    let (mut conn, sending) = match server.state.pool.take(up.cfg.keepalive_timeout, now) {
        Some(conn) => (conn, now),
        None => {
            let conn =
                Box::pin(upstream::connect(&server.endpoint, up.cfg.connect_timeout)).await?;
            (conn, Instant::now())
        }
    };
    let mut req_body = RequestBody::for_attempt(body);
    let head = client::Head {
        method: &out.method,
        target: out.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        headers: &out.headers,
        forwarding: Some(&out.forwarding),
        case: out.case.as_ref(),
    };
    let timeout = up.cfg.response_timeout;
    // The response is due by `due`; the deadline first comes at the
    // point where the client's connection starts being watched, if that
    // is sooner.
    let mut due = sending + timeout;
    let mut deadline = Deadline::new(due.min(sending + WATCH_CLIENT_AFTER).into());
    let progress = client::Progress::default();
    let mut exchange = pin!(async {
        let sent = client::send(&mut conn, &head, &mut req_body, &progress).await?;
        client::receive(
            conn,
            &out.method,
            sent,
            &mut req_body,
            out.unmapped_response,
            &progress,
        )
        .await
        .map_err(|e| match e {
            UpstreamError::ClientGone => ProxyError::ClientGone,
            e => ProxyError::Upstream(e),
        })
    });
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = exchange.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            // The response is due `timeout` after the last bytes that went
            // up, which went in this poll.
            if progress.take_moved() {
                let now = Instant::now();
                due = now + timeout;
                deadline.move_to(due.min(now + WATCH_CLIENT_AFTER).into());
            }
            if deadline.poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() < due {
                // Not the deadline but the point where the wait is long
                // enough to watch the client's connection (unless it is
                // the client's body being waited for): from now on the
                // deadline is the response's.
                if !progress.on_client() {
                    progress.watch_client();
                }
                deadline.move_to(due.into());
                continue;
            }
            return Poll::Ready(Err(match progress.on_client() {
                true => RequestBodyError::TimedOut.into(),
                false => ProxyError::ResponseTimeout,
            }));
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_keeps_order_past_its_inline_capacity() {
        let mut tried = Tried::default();
        assert!(tried.as_slice().is_empty());
        for i in 0..20 {
            tried.push(i * 3);
        }
        let expected: Vec<usize> = (0..20).map(|i| i * 3).collect();
        assert_eq!(tried.as_slice(), expected);
    }
}
