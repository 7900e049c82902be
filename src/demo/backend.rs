//! A demo backend: the kind of server a sticky balancer exists for. It keeps
//! each visitor's session in its own memory (a visit counter under a
//! session cookie it sets), so being sent to another backend, or this one
//! crashing, visibly loses the session.
//!
//! Besides `/` it answers `/healthz` (for the active checks), `/ws` (a
//! WebSocket echo, so tunnels show up on the dashboard) and `POST /crash`:
//! the backend closes its listener and every connection, forgets every
//! session, and comes back empty [`RESTART_AFTER`] later.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// How long a crashed backend stays away.
pub const RESTART_AFTER: Duration = Duration::from_secs(10);

/// How long the connection that asked for a crash may take to receive its
/// answer.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// The cookie the backend keeps its session id in (sluice's own sticky
/// cookie is a different one: the two are the point of the demo).
pub const SESSION_COOKIE: &str = "demo_session";

/// Sessions one incarnation remembers. A benchmark without cookies makes
/// a session per request; past this many the backend forgets them all
/// rather than grow without bound.
const MAX_SESSIONS: usize = 100_000;

/// One life of a backend, from (re)start to crash.
struct Life {
    sessions: Mutex<HashMap<u64, u64>>,
    crashed: watch::Sender<bool>,
}

impl Life {
    fn new() -> Arc<Life> {
        Arc::new(Life {
            sessions: Mutex::new(HashMap::new()),
            crashed: watch::Sender::new(false),
        })
    }

    /// Counts a visit of session `id` (when this life knows it), or starts a
    /// new session. Returns the session and its visit number.
    fn visit(&self, id: Option<u64>) -> (u64, u64) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = id
            && let Some(visits) = sessions.get_mut(&id)
        {
            *visits += 1;
            return (id, *visits);
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
        let id = rand::random::<u64>();
        sessions.insert(id, 1);
        (id, 1)
    }
}

/// What a request handler knows.
#[derive(Clone)]
struct Ctx {
    name: Arc<str>,
    addr: SocketAddr,
    life: Arc<Life>,
    /// Set when this connection asked for the crash: it alone still gets
    /// its answer written, so the client learns what it did.
    crasher: Arc<AtomicBool>,
}

/// Serves `listener` as backend `name` forever, crashing and restarting on
/// request.
pub async fn run(mut listener: TcpListener, name: String) {
    let name: Arc<str> = name.into();
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    loop {
        let life = Life::new();
        accept_until_crash(&listener, &name, addr, &life).await;
        drop(listener);
        tracing::warn!(backend = %name, %addr, "demo backend crashed: listener and connections closed, sessions lost; back in {RESTART_AFTER:?}");
        tokio::time::sleep(RESTART_AFTER).await;
        listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(error) => {
                    tracing::warn!(backend = %name, %addr, %error, "demo backend cannot listen again yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        tracing::info!(backend = %name, %addr, "demo backend is back, with no sessions");
    }
}

async fn accept_until_crash(
    listener: &TcpListener,
    name: &Arc<str>,
    addr: SocketAddr,
    life: &Arc<Life>,
) {
    let mut crashed = life.crashed.subscribe();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = crashed.wait_for(|c| *c) => return,
        };
        let ctx = Ctx {
            name: name.clone(),
            addr,
            life: life.clone(),
            crasher: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(connection(stream, ctx));
    }
}

async fn connection(stream: tokio::net::TcpStream, ctx: Ctx) {
    let mut crashed = ctx.life.crashed.subscribe();
    // Accepted just as the backend crashed: it must not serve this one.
    if *crashed.borrow_and_update() {
        return;
    }
    let service_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = service_ctx.clone();
        async move { Ok::<_, Infallible>(handle(req, &ctx)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    // Dropping the connection at a crash closes its socket mid-whatever,
    // as a dying process would. The crash is looked at first, so no
    // request is served once it has happened.
    tokio::select! {
        biased;
        _ = crashed.wait_for(|c| *c) => {}
        _ = &mut conn => return,
    }
    if ctx.crasher.load(Ordering::Relaxed) {
        // Its answer says `Connection: close`: the connection ends once
        // the answer is written.
        let _ = tokio::time::timeout(LAST_WORDS, conn).await;
    }
}

fn handle(mut req: Request<Incoming>, ctx: &Ctx) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(ctx, StatusCode::OK, "ok\n".to_owned()),
        (&Method::POST, "/crash") => {
            // Crash now, before the answer goes out: a request that follows
            // the answer must find the backend gone, not serve it once more.
            ctx.crasher.store(true, Ordering::Relaxed);
            ctx.life.crashed.send_replace(true);
            let mut response = text(
                ctx,
                StatusCode::OK,
                format!(
                    "{} ({}) crashes now: its connections close, its sessions are lost, and it comes back empty in {} s\n",
                    ctx.name,
                    ctx.addr,
                    RESTART_AFTER.as_secs()
                ),
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        (&Method::GET, "/ws") => match req.headers().get("sec-websocket-key") {
            Some(key) if is_websocket(&req) => {
                let accept = derive_accept_key(key.as_bytes());
                let upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(echo(upgrade, ctx.life.crashed.subscribe()));
                let mut response = text(ctx, StatusCode::SWITCHING_PROTOCOLS, String::new());
                let headers = response.headers_mut();
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                if let Ok(accept) = HeaderValue::from_str(&accept) {
                    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
                }
                response
            }
            _ => text(
                ctx,
                StatusCode::BAD_REQUEST,
                "/ws takes a WebSocket handshake\n".to_owned(),
            ),
        },
        _ => visit(&req, ctx),
    }
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Counts a visit in the caller's session and says who answered.
fn visit(req: &Request<Incoming>, ctx: &Ctx) -> Response<Full<Bytes>> {
    let presented = session_cookie(req);
    let (id, visits) = ctx.life.visit(presented);
    let mut body = format!(
        "Hello from {} ({}): {} {}, visit {visits} of session {id:016x}",
        ctx.name,
        ctx.addr,
        req.method(),
        req.uri()
    );
    if let Some(old) = presented.filter(|old| *old != id) {
        body.push_str(&format!(
            " (a new one: this backend never saw session {old:016x})"
        ));
    }
    body.push('\n');
    let mut response = text(ctx, StatusCode::OK, body);
    let headers = response.headers_mut();
    headers.insert("x-visit", HeaderValue::from(visits));
    if presented != Some(id)
        && let Ok(cookie) =
            HeaderValue::from_str(&format!("{SESSION_COOKIE}={id:016x}; Path=/; HttpOnly"))
    {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The session id in the request's `demo_session` cookie, if it parses.
fn session_cookie(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .and_then(|(_, value)| u64::from_str_radix(value, 16).ok())
}

fn text(ctx: &Ctx, status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(name) = HeaderValue::from_str(&ctx.name) {
        headers.insert("x-backend", name);
    }
    response
}

/// Echoes every text and binary message until the client leaves or the
/// backend crashes.
async fn echo(upgrade: hyper::upgrade::OnUpgrade, mut crashed: watch::Receiver<bool>) {
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    let session = async {
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = session => {}
        _ = crashed.wait_for(|c| *c) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_session_counts_up_and_an_unknown_one_starts_over() {
        let life = Life::new();
        let (id, first) = life.visit(None);
        assert_eq!(first, 1);
        assert_eq!(life.visit(Some(id)), (id, 2));
        assert_eq!(life.visit(Some(id)), (id, 3));
        let (other, visits) = life.visit(Some(id.wrapping_add(1)));
        assert_eq!(visits, 1);
        assert_ne!(other, id.wrapping_add(1), "an unknown id is not adopted");
        // A crash is a new life: nothing is remembered.
        assert_eq!(Life::new().visit(Some(id)).1, 1);
    }
}
