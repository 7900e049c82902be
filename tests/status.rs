//! The failure table of the contract: what the client sees when the request
//! is bad, too big or too slow, or when no server can answer. A request
//! refused for its own sake never reaches a backend.

mod support;

use support::{client::*, config::*, proxy::*, upstream::*};

/// A listener with the keys `listener` adds, in front of upstream `web`
/// built by `upstream`.
fn config(
    listener: impl FnOnce(Listener) -> Listener,
    upstream: impl FnOnce(Upstream) -> Upstream,
) -> String {
    Config::new()
        .listener_with(|l| listener(l.set("upstream", "web")))
        .upstream("web", upstream)
        .toml()
}

fn status_of(response: &str) -> Option<u16> {
    raw_status(response.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refused_is_502() {
    // A port nobody listens on: connecting is refused.
    let closed = free_port();
    let proxy = Proxy::start(&config(|l| l, |u| u.server(format!("127.0.0.1:{closed}")))).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_before_the_response_is_502() {
    let a = MockUpstream::named("a").reset_after_request().start().await;
    let proxy = Proxy::start(&config(|l| l, |u| u.server(&a))).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502);
    assert!(a.count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_down_is_503() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(
        |l| l,
        |u| {
            u.server_with(&a, |s| s.set("down", true))
                .server_with(&b, |s| s.set("down", true))
        },
    ))
    .await;
    assert_eq!(get(&proxy.url("/")).await.status, 503);
    assert_eq!(a.count() + b.count(), 0);
}

/// A proxy with `response_timeout = "300ms"` in front of a server that
/// never answers.
async fn behind_a_hanging_server() -> (MockUpstream, Proxy) {
    let a = MockUpstream::named("a").hang().start().await;
    let proxy = Proxy::start(&config(
        |l| l,
        |u| u.set("response_timeout", "300ms").server(&a),
    ))
    .await;
    (a, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_timeout_is_504() {
    let (a, proxy) = behind_a_hanging_server().await;
    assert_eq!(get(&proxy.url("/")).await.status, 504);
    assert!(a.count() >= 1, "the request reached the hanging server");
}

/// The response deadline is the worker's, not a timer of the request's
/// own: an HTTP/2 request (a stream of hyper's HTTP/2 server) is timed by
/// it as an HTTP/1.1 one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_timeout_is_504_over_http2_too() {
    use http_body_util::Empty;

    let (a, proxy) = behind_a_hanging_server().await;
    let mut sender = h2_prior_knowledge(proxy.addr()).await;
    let request = http::Request::get(proxy.url("/"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sender.send_request(request),
    )
    .await
    .expect("answered well before 10 s")
    .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 504);
    assert!(a.count() >= 1, "the request reached the hanging server");
}

/// Requests that are malformed or ambiguous: 400 and nothing upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_and_never_forwarded() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(|l| l, |u| u.server(&a))).await;

    let cases: [(&str, &[u8]); 4] = [
        ("no Host", b"GET / HTTP/1.1\r\n\r\n"),
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        ),
        (
            "Content-Length and Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "malformed chunked body",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              zz\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let response = raw_text(proxy.addr(), bytes).await;
        assert_eq!(status_of(&response), Some(400), "{what}: {response}");
        assert_eq!(a.count(), 0, "{what}: the backend saw the request");
    }
    // The proxy itself is fine.
    assert_eq!(get(&proxy.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_other_than_chunked_are_refused() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(|l| l, |u| u.server(&a))).await;

    for coding in ["gzip, chunked", "chunked, chunked", "gzip", "chunked, gzip"] {
        let request = format!(
            "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: {coding}\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
        );
        let response = raw_text(proxy.addr(), request.as_bytes()).await;
        let status = status_of(&response);
        assert!(
            matches!(status, Some(400 | 501)),
            "Transfer-Encoding: {coding}: {response}"
        );
    }
    assert_eq!(a.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_over_max_header_size_is_431() {
    let a = MockUpstream::named("a").start().await;
    // Below and above hyper's own 8 KiB read-buffer floor.
    for (limit, size) in [("2KiB", 3 * 1024), ("16KiB", 20 * 1024)] {
        let proxy = Proxy::start(&config(
            |l| l.set("max_header_size", limit),
            |u| u.server(&a),
        ))
        .await;
        let big = "x".repeat(size);
        let response = raw_text(
            proxy.addr(),
            format!("GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&response), Some(431), "limit {limit}: {response}");
        // Just under the limit passes.
        let fits = "x".repeat(size / 2);
        let resp = get_with(&proxy.url("/"), &[("x-fits", &fits)]).await;
        assert_eq!(resp.status, 200, "limit {limit}");
    }
    assert_eq!(a.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_max_headers_is_431() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(|l| l.set("max_headers", 10), |u| u.server(&a))).await;

    let mut head = String::from("GET / HTTP/1.1\r\nHost: a.test\r\n");
    for i in 0..20 {
        head.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    let response = raw_text(proxy.addr(), head.as_bytes()).await;
    assert_eq!(status_of(&response), Some(431), "{response}");
    assert_eq!(a.count(), 0);
    let few: Vec<(String, String)> = (0..5).map(|i| (format!("x-h{i}"), i.to_string())).collect();
    let few: Vec<(&str, &str)> = few.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(get_with(&proxy.url("/"), &few).await.status, 200);
}

/// The same limit over HTTP/2, where the head arrives whole; an HTTP/2
/// client's cookie fields (one per cookie) count as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_max_headers_is_431_over_http2_too() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(|l| l.set("max_headers", 10), |u| u.server(&a))).await;
    let sender = h2_prior_knowledge(proxy.addr()).await;
    let send = async |fields: &[(String, String)]| {
        let mut request = http::Request::get("http://a.test/");
        for (name, value) in fields {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender
            .clone()
            .send_request(request)
            .await
            .expect("h2 response")
            .status()
    };
    let many: Vec<(String, String)> = (0..20)
        .map(|i| (format!("x-h{i}"), i.to_string()))
        .collect();
    assert_eq!(send(&many).await, 431);
    assert_eq!(a.count(), 0);
    let few: Vec<(String, String)> = (0..5).map(|i| (format!("x-h{i}"), i.to_string())).collect();
    assert_eq!(send(&few).await, 200);
    let cookies: Vec<(String, String)> = (0..20)
        .map(|i| ("cookie".to_owned(), format!("c{i}={i}")))
        .collect();
    assert_eq!(send(&cookies).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_over_max_body_size_is_413_without_100_continue() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(
        |l| l.set("max_body_size", "1KiB"),
        |u| u.server(&a),
    ))
    .await;

    let response = raw_text(
        proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4096\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), Some(413), "{response}");

    // The client waits for 100 Continue before sending: it must get the 413
    // instead, and never a 100.
    let response = raw_text(
        proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4096\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), Some(413), "{response}");
    assert!(
        !response.contains(" 100 "),
        "a 100 Continue was sent: {response}"
    );
    assert_eq!(a.count(), 0);

    // A body within the limit goes through.
    let resp = request(http::Method::POST, &proxy.url("/"), &[], "x".repeat(1024)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(a.last_request().expect("forwarded").body.len(), 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_max_body_size_is_413() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(
        |l| l.set("max_body_size", "1KiB"),
        |u| u.server(&a),
    ))
    .await;

    let chunk = "y".repeat(2048);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let response = raw_text(proxy.addr(), request.as_bytes()).await;
    assert_eq!(status_of(&response), Some(413), "{response}");
}

/// A client that sends its whole body before it reads (as curl does with
/// `-T`) still gets the 413: sluice reads and drops the rest of the body
/// after answering (a lingering close) instead of closing with bytes
/// unread, which would reset the connection and lose the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_its_body_reads_the_413_after_it() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(
        |l| l.set("max_body_size", "1KiB"),
        |u| u.server(&a),
    ))
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for framing in ["Transfer-Encoding: chunked", "Content-Length: 8388608"] {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let head = format!("POST / HTTP/1.1\r\nHost: a.test\r\n{framing}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'y'; 64 * 1024];
        let chunked = framing.starts_with("Transfer");
        // 8 MiB, all of it written before anything is read.
        for _ in 0..128 {
            if chunked {
                stream.write_all(b"10000\r\n").await.unwrap();
            }
            stream.write_all(&chunk).await.unwrap();
            if chunked {
                stream.write_all(b"\r\n").await.unwrap();
            }
        }
        if chunked {
            stream.write_all(b"0\r\n\r\n").await.unwrap();
        }
        let mut response = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut response),
        )
        .await
        .expect("the connection ends");
        let response = String::from_utf8_lossy(&response);
        assert!(read.is_ok(), "{framing}: {read:?} after {response:?}");
        assert_eq!(status_of(&response), Some(413), "{framing}: {response}");
    }
    assert_eq!(a.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_head_after_header_timeout_is_408() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(
        |l| l.set("header_timeout", "300ms"),
        |u| u.server(&a),
    ))
    .await;

    // raw_request reads until the proxy closes (or 5 s pass).
    let response = raw_text(proxy.addr(), b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: ").await;
    assert_eq!(status_of(&response), Some(408), "{response:?}");
    assert_eq!(a.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_gets_408_after_header_timeout() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(
        |l| l.set("header_timeout", "300ms"),
        |u| u.server(&a),
    ))
    .await;

    let response = raw_text(proxy.addr(), b"").await;
    assert_eq!(status_of(&response), Some(408), "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_closes_without_a_response() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(
        |l| l.set("header_timeout", "300ms"),
        |u| u.server(&a),
    ))
    .await;

    // One complete exchange, then silence: the timeout closes the
    // connection quietly, with nothing after the first response.
    let response = raw_text(proxy.addr(), b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status_of(&response), Some(200), "{response}");
    assert_eq!(response.matches("HTTP/1.1").count(), 1, "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_target_too_long_is_414_or_431() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(
        |l| l.set("max_header_size", "16KiB"),
        |u| u.server(&a),
    ))
    .await;

    let path = format!("/{}", "p".repeat(20 * 1024));
    let response = raw_text(
        proxy.addr(),
        format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        matches!(status_of(&response), Some(414 | 431)),
        "{}",
        &response[..response.len().min(200)]
    );
    assert_eq!(a.count(), 0);
}

/// The same refusals over TLS: the watched socket sits under hyper there too.
mod over_tls {
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct TlsProxy {
        proxy: Proxy,
        connector: tokio_rustls::TlsConnector,
        _certs: tempfile::TempDir,
    }

    async fn tls_proxy(upstream: &MockUpstream) -> TlsProxy {
        let certs = tempfile::tempdir().expect("temp dir");
        let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("self-signed certificate");
        let (cert, key) = (certs.path().join("c.pem"), certs.path().join("c.key"));
        std::fs::write(&cert, issued.cert.pem()).expect("write cert");
        std::fs::write(&key, issued.key_pair.serialize_pem()).expect("write key");
        let proxy = Proxy::start(&config(
            |l| {
                l.set("header_timeout", "300ms")
                    .table("tls", "cert", cert.display().to_string())
                    .table("tls", "key", key.display().to_string())
            },
            |u| u.server(upstream),
        ))
        .await;
        let mut roots = RootCertStore::empty();
        roots
            .add(issued.cert.der().clone())
            .expect("trust the cert");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsProxy {
            proxy,
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            _certs: certs,
        }
    }

    /// Sends `bytes` over TLS and reads the decrypted answer until close.
    async fn exchange(tls: &TlsProxy, bytes: &[u8]) -> String {
        let tcp = tokio::net::TcpStream::connect(tls.proxy.addr())
            .await
            .expect("connect");
        let name = ServerName::try_from("localhost").expect("server name");
        let mut stream = tls.connector.connect(name, tcp).await.expect("handshake");
        stream.write_all(bytes).await.expect("write");
        let mut received = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut received),
        )
        .await;
        assert!(read.is_ok(), "the proxy did not close the connection");
        String::from_utf8_lossy(&received).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn incomplete_head_gets_408_over_tls() {
        let a = MockUpstream::named("a").start().await;
        let tls = tls_proxy(&a).await;
        let response = exchange(&tls, b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow:").await;
        assert_eq!(status_of(&response), Some(408), "{response:?}");
        assert_eq!(a.count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn content_length_with_transfer_encoding_is_400_over_tls() {
        let a = MockUpstream::named("a").start().await;
        let tls = tls_proxy(&a).await;
        let response = exchange(
            &tls,
            b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&response), Some(400), "{response}");
        assert_eq!(a.count(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_second_request_on_a_keep_alive_connection_is_400() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(|l| l, |u| u.server(&a))).await;

    // Pipelined: a clean request, then one with both framing headers.
    let response = raw_text(
        proxy.addr(),
        b"POST /first HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello\
          POST /second HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    // Bodies are not newline-terminated: find each status line by its prefix.
    let statuses: Vec<&str> = response
        .match_indices("HTTP/1.1 ")
        .map(|(at, prefix)| &response[at + prefix.len()..at + prefix.len() + 3])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{response}");
    let seen: Vec<String> = a.requests().iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(seen, ["/first"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_within_the_limit_gets_100_then_the_response() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(
        |l| l.set("max_body_size", "1KiB"),
        |u| u.server(&a),
    ))
    .await;

    let mut stream = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\
              Expect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write head");
    // The body is sent only after the 100.
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.expect("read 100");
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    stream.write_all(b"hello").await.expect("write body");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("read response");
    assert_eq!(
        raw_status(&rest),
        Some(200),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(a.last_request().expect("forwarded").body, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_response_with_bad_framing_is_502() {
    let both = MockUpstream::raw(
        "both",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .start()
    .await;
    let proxy = Proxy::start(&config(|l| l, |u| u.server(&both))).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502);

    let twice = MockUpstream::raw(
        "twice",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .start()
    .await;
    let proxy = Proxy::start(&config(|l| l, |u| u.server(&twice))).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502);
}
