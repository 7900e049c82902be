//! Test clients: a pooled HTTP/1.1 client, one-shot helpers, a client bound
//! to a chosen source address, raw TCP for malformed requests, and polling.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Any transport or protocol failure, as the test client saw it.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Longest a helper waits for a whole response before giving up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const RAW_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A complete response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    /// The first value of header `name` as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, e.g. each `Set-Cookie`.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The `x-upstream` header: which mock served the request.
    pub fn upstream(&self) -> Option<&str> {
        self.header("x-upstream")
    }

    /// The mock that served the request. Panics when the proxy answered
    /// itself: every caller expects a server's answer.
    pub fn served_by(&self) -> &str {
        assert_eq!(self.status, 200, "{self:?}");
        self.upstream()
            .unwrap_or_else(|| panic!("no x-upstream: {self:?}"))
    }
}

/// Who served each of `n` GETs of `url`, sent one after another.
pub async fn served_by(client: &Client, url: &str, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        names.push(client.get(url).await.served_by().to_owned());
    }
    names
}

/// An HTTP/1.1 client with a keep-alive pool: requests reuse connections.
/// Create one per test (a pool belongs to the runtime it was used on).
#[derive(Clone)]
pub struct Client {
    inner: LegacyClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Client {
            inner: LegacyClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.request(Method::GET, url, &[], Bytes::new()).await
    }

    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.request(Method::GET, url, headers, Bytes::new()).await
    }

    /// Panics on a transport error; see [`Client::try_request`].
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let what = format!("{method} {url}");
        self.try_request(method, url, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    pub async fn try_get(&self, url: &str) -> Result<Resp, Error> {
        self.try_request(Method::GET, url, &[], Bytes::new()).await
    }

    /// A request that may fail: a reset, a truncated body, a timeout.
    pub async fn try_request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp, Error> {
        let request = build_request(method, url.parse()?, headers, body.into())?;
        let exchange = async {
            let response = self.inner.request(request).await?;
            read_response(response).await
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no complete response within {REQUEST_TIMEOUT:?}"))?
    }
}

/// GET on a fresh connection (nothing pooled between calls).
pub async fn get(url: &str) -> Resp {
    Client::new().get(url).await
}

pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Resp {
    Client::new().get_with(url, headers).await
}

pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    Client::new().request(method, url, headers, body).await
}

pub async fn try_get(url: &str) -> Result<Resp, Error> {
    Client::new().try_get(url).await
}

pub async fn try_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Resp, Error> {
    Client::new().try_request(method, url, headers, body).await
}

/// One GET over a connection whose source address is `source` (any
/// 127.x.y.z works on Linux loopback): a distinct client IP for ip_hash.
pub async fn get_from(source: IpAddr, url: &str) -> Resp {
    try_get_from(source, url, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {url} from {source} failed: {e}"))
}

pub async fn try_get_from(
    source: IpAddr,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Resp, Error> {
    let uri: Uri = url.parse()?;
    let authority = uri.authority().ok_or("url without host:port")?.clone();
    let target: SocketAddr = tokio::net::lookup_host(authority.as_str())
        .await?
        .next()
        .ok_or("url host does not resolve")?;
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let exchange = async {
        let stream = socket.connect(target).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut request = build_request(Method::GET, path.parse()?, headers, Bytes::new())?;
        if !request.headers().contains_key(http::header::HOST) {
            request.headers_mut().insert(
                http::header::HOST,
                HeaderValue::from_str(authority.as_str())?,
            );
        }
        let response = sender.send_request(request).await?;
        read_response(response).await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no complete response within {REQUEST_TIMEOUT:?}"))?
}

/// An HTTP/2 connection by prior knowledge (what a cleartext listener
/// speaks) to `addr`, its connection task spawned: send requests on it.
pub async fn h2_prior_knowledge(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

/// Writes `bytes` as they are and returns everything read back until the
/// peer closes or 5 s pass: for requests no well-behaved client would send.
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.write_all(bytes).await.expect("write raw request");
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + RAW_READ_TIMEOUT;
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&chunk[..n]),
            // EOF, a reset, or the deadline: what arrived is the answer.
            _ => return received,
        }
    }
}

/// [`raw_request`], its answer as text.
pub async fn raw_text(addr: SocketAddr, bytes: &[u8]) -> String {
    String::from_utf8_lossy(&raw_request(addr, bytes).await).into_owned()
}

/// The status code of the first response in raw bytes, if there is one.
pub fn raw_status(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

/// Polls `condition` every 20 ms until it holds and returns how long that
/// took; panics naming `what` once `timeout` has passed. Use instead of
/// sleeping.
pub async fn poll_until(
    timeout: Duration,
    what: &str,
    mut condition: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if condition().await {
            return start.elapsed();
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn build_request(
    method: Method,
    uri: Uri,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, Error> {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    Ok(request.body(Full::new(body))?)
}

async fn read_response(response: http::Response<hyper::body::Incoming>) -> Result<Resp, Error> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Resp {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
