//! In-process mock upstream servers: one readable line per server, with
//! knobs (status, latency, hang, reset, per-path status) that can be turned
//! while the server runs, and an exact record of every request it saw.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// One request as the mock upstream received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The TCP peer: the proxy's (or the test client's) source address.
    pub peer: SocketAddr,
}

impl RecordedRequest {
    /// The first value of header `name` as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How a connection is answered. Chosen per connection at accept time, so a
/// change through a setter applies to new connections.
#[derive(Debug, Clone)]
enum Mode {
    /// A real HTTP/1.1 server (hyper).
    Http,
    /// Read the request head and body, then close with a TCP RST.
    Reset,
    /// Read the request head and body, write these bytes, close.
    Raw(Bytes),
}

#[derive(Debug, Clone)]
struct Knobs {
    mode: Mode,
    status: u16,
    delay: Duration,
    hang: bool,
    echo: bool,
    routes: HashMap<String, u16>,
}

/// Builder returned by [`MockUpstream::named`] and [`MockUpstream::raw`].
#[derive(Debug, Clone)]
pub struct UpstreamBuilder {
    name: String,
    port: u16,
    knobs: Knobs,
}

impl UpstreamBuilder {
    /// Answer with this status (default 200).
    pub fn status(mut self, status: u16) -> Self {
        self.knobs.status = status;
        self
    }

    /// Wait this long after reading the request before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.knobs.delay = delay;
        self
    }

    /// Accept and read requests, never answer.
    pub fn hang(mut self) -> Self {
        self.knobs.hang = true;
        self
    }

    /// Read the request head and body, then reset the connection (RST).
    pub fn reset_after_request(mut self) -> Self {
        self.knobs.mode = Mode::Reset;
        self
    }

    /// Announce `Content-Length: 100`, send 10 bytes, close.
    pub fn truncate_body(mut self) -> Self {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nx-upstream: {}\r\n\r\n0123456789",
            self.name
        );
        self.knobs.mode = Mode::Raw(Bytes::from(head));
        self
    }

    /// Answer with a plain-text dump of the request head instead of the name.
    pub fn echo(mut self) -> Self {
        self.knobs.echo = true;
        self
    }

    /// Answer requests for exactly `path` with `status` (e.g. a health check).
    pub fn route(mut self, path: &str, status: u16) -> Self {
        self.knobs.routes.insert(path.to_owned(), status);
        self
    }

    /// Listen on this port instead of an ephemeral one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub async fn start(self) -> MockUpstream {
        let shared = Arc::new(Shared {
            name: self.name,
            knobs: Mutex::new(self.knobs),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            unhang: Notify::new(),
        });
        let listener = listen(self.port).await;
        let addr = listener.local_addr().expect("mock upstream local addr");
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), connections.clone()));
        MockUpstream {
            addr,
            shared,
            connections,
            accept: Mutex::new(Some(accept)),
        }
    }
}

struct Shared {
    name: String,
    knobs: Mutex<Knobs>,
    requests: Mutex<Vec<RecordedRequest>>,
    in_flight: AtomicUsize,
    /// The most requests ever in flight at once.
    max_in_flight: AtomicUsize,
    /// Wakes hanging requests when hanging is switched off.
    unhang: Notify,
}

impl Shared {
    fn knobs(&self) -> Knobs {
        self.knobs.lock().unwrap().clone()
    }

    async fn wait_while_hanging(&self) {
        loop {
            let released = self.unhang.notified();
            tokio::pin!(released);
            // Registered before the check, so a release in between is not lost.
            released.as_mut().enable();
            if !self.knobs().hang {
                return;
            }
            released.await;
        }
    }

    fn record(&self, request: RecordedRequest) {
        self.requests.lock().unwrap().push(request);
    }
}

/// A running mock upstream. Dropping it stops the accept loop and every
/// connection.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    connections: Arc<Mutex<JoinSet<()>>>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl MockUpstream {
    /// An HTTP/1.1 server answering 200 with body `name` and `x-upstream: name`.
    pub fn named(name: &str) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.to_owned(),
            port: 0,
            knobs: Knobs {
                mode: Mode::Http,
                status: 200,
                delay: Duration::ZERO,
                hang: false,
                echo: false,
                routes: HashMap::new(),
            },
        }
    }

    /// A server that reads one request per connection, answers with exactly
    /// `bytes`, and closes: for malformed or truncated responses.
    pub fn raw(name: &str, bytes: &[u8]) -> UpstreamBuilder {
        let mut builder = Self::named(name);
        builder.knobs.mode = Mode::Raw(Bytes::copy_from_slice(bytes));
        builder
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:PORT"`, as a config `address` value.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A snapshot of every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.requests.lock().unwrap().last().cloned()
    }

    /// Every value of header `name` on the last request.
    pub fn seen_all(&self, name: &str) -> Vec<String> {
        let request = self.last_request().expect("the upstream saw a request");
        request
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The value of header `name` on the last request; panics if it was
    /// sent more than once.
    pub fn seen(&self, name: &str) -> Option<String> {
        let mut values = self.seen_all(name);
        assert!(
            values.len() <= 1,
            "{name} sent upstream {} times: {values:?}",
            values.len()
        );
        values.pop()
    }

    /// Forget the requests recorded so far.
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    /// Requests read but not yet answered (delayed or hanging ones).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests this server has ever had in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn set_status(&self, status: u16) {
        self.shared.knobs.lock().unwrap().status = status;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.shared.knobs.lock().unwrap().delay = delay;
    }

    /// Hang new requests, or (with `false`) release the hanging ones, which
    /// are then answered with the current knobs.
    pub fn set_hang(&self, hang: bool) {
        self.shared.knobs.lock().unwrap().hang = hang;
        if !hang {
            self.shared.unhang.notify_waiters();
        }
    }

    /// Reset new connections after reading their first request (or serve
    /// HTTP again with `false`).
    pub fn set_reset(&self, reset: bool) {
        self.shared.knobs.lock().unwrap().mode = if reset { Mode::Reset } else { Mode::Http };
    }

    pub fn set_route_status(&self, path: &str, status: u16) {
        self.shared
            .knobs
            .lock()
            .unwrap()
            .routes
            .insert(path.to_owned(), status);
    }

    /// Close the listener and every open connection; connecting is refused
    /// once this returns.
    pub async fn stop(&self) {
        let accept = self.accept.lock().unwrap().take();
        if let Some(accept) = accept {
            accept.abort();
            let _ = accept.await;
        }
        let mut connections = std::mem::take(&mut *self.connections.lock().unwrap());
        connections.shutdown().await;
    }

    /// Listen again on the same port, with the same knobs and record.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = listen(self.addr.port()).await;
        let accept = tokio::spawn(accept_loop(
            listener,
            self.shared.clone(),
            self.connections.clone(),
        ));
        *self.accept.lock().unwrap() = Some(accept);
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.lock().unwrap().take() {
            accept.abort();
        }
        self.connections.lock().unwrap().abort_all();
    }
}

async fn listen(port: u16) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("mock upstream socket");
    // A restarted server must get its port back despite TIME_WAIT sockets.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap_or_else(|e| panic!("mock upstream cannot bind port {port}: {e}"));
    socket.listen(1024).expect("mock upstream listen")
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Mutex<JoinSet<()>>>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of descriptors, most likely: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        let mut set = connections.lock().unwrap();
        while set.try_join_next().is_some() {}
        set.spawn(serve_connection(stream, peer, shared));
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mode = shared.knobs().mode;
    match mode {
        Mode::Http => {
            let service = service_fn(move |request| handle(request, peer, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Mode::Reset => {
            let mut stream = stream;
            if let Some(request) = read_raw_request(&mut stream, peer).await {
                shared.record(request);
            }
            let _ = stream.set_zero_linger();
            drop(stream);
        }
        Mode::Raw(bytes) => {
            let mut stream = stream;
            if let Some(request) = read_raw_request(&mut stream, peer).await {
                shared.record(request);
            }
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Decrements the in-flight count however the request ends, including when
/// its connection task is aborted.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize, max: &AtomicUsize) -> Self {
        let now = count.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(now, Ordering::SeqCst);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _in_flight = InFlight::enter(&shared.in_flight, &shared.max_in_flight);
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let echo = echo_text(&parts.method, &parts.uri, &parts.headers);
    let path = parts.uri.path().to_owned();
    shared.record(RecordedRequest {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
        peer,
    });
    shared.wait_while_hanging().await;
    let knobs = shared.knobs();
    if !knobs.delay.is_zero() {
        tokio::time::sleep(knobs.delay).await;
    }
    let status = knobs.routes.get(&path).copied().unwrap_or(knobs.status);
    let body = if knobs.echo {
        echo
    } else {
        shared.name.clone()
    };
    let response = Response::builder()
        .status(StatusCode::from_u16(status).expect("mock upstream status"))
        .header("x-upstream", shared.name.as_str())
        .body(Full::new(Bytes::from(body)))
        .expect("mock upstream response");
    Ok(response)
}

fn echo_text(method: &Method, uri: &Uri, headers: &HeaderMap) -> String {
    let mut text = format!("{method} {uri}\n");
    for (name, value) in headers {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text
}

/// Reads one request (head, then a Content-Length or chunked body) off a raw
/// socket, leniently: the raw modes exist to misbehave, not to validate.
async fn read_raw_request(stream: &mut TcpStream, peer: SocketAddr) -> Option<RecordedRequest> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        read_more(stream, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = Method::from_bytes(request_line.next()?.as_bytes()).ok()?;
    let uri: Uri = request_line.next()?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            HeaderValue::from_str(value.trim()).ok()?,
        );
    }
    let chunked = headers
        .get("transfer-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let body = if chunked {
        while find(&buf[head_end..], b"0\r\n\r\n").is_none() {
            read_more(stream, &mut buf).await?;
        }
        Bytes::copy_from_slice(&buf[head_end..])
    } else {
        while buf.len() < head_end + length {
            read_more(stream, &mut buf).await?;
        }
        Bytes::copy_from_slice(&buf[head_end..head_end + length])
    };
    Some(RecordedRequest {
        method,
        uri,
        headers,
        body,
        peer,
    })
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
