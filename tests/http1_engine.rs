//! sluice's own HTTP/1.1 server side, seen from raw clients: pipelining,
//! HTTP/1.0, bodies whose framing the proxy must re-frame or read past.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{client::*, config::*, proxy::*, upstream::*};

/// Writes `bytes` and reads until the proxy closes the connection, which it
/// must do within 10 s.
async fn until_close(proxy: &Proxy, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut received = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the proxy did not close the connection");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let a = MockUpstream::named("a").echo().start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let response = until_close(
        &proxy,
        b"GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n\
          GET /two HTTP/1.1\r\nHost: a.test\r\n\r\n\
          GET /three HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 3, "{response}");
    let at = |path: &str| {
        response
            .find(&format!("GET {path}\n"))
            .unwrap_or_else(|| panic!("{path} not answered: {response}"))
    };
    assert!(
        at("/one") < at("/two") && at("/two") < at("/three"),
        "{response}"
    );
    assert_eq!(a.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_keep_the_connection_only_when_they_ask() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let response = until_close(&proxy, b"GET / HTTP/1.0\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(raw_status(response.as_bytes()), Some(200), "{response}");
    assert!(response.contains("connection: close"), "{response}");

    let response = until_close(
        &proxy,
        b"GET / HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n\
          GET / HTTP/1.0\r\nHost: a.test\r\n\r\n",
    )
    .await;
    assert_eq!(response.matches(" 200 OK").count(), 2, "{response}");
    assert!(response.contains("connection: keep-alive"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_responses_reach_http11_clients_chunked_and_http10_clients_until_close() {
    let a = MockUpstream::raw(
        "a",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .start()
    .await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let response = until_close(
        &proxy,
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        response.contains("transfer-encoding: chunked"),
        "{response}"
    );
    assert!(
        response.ends_with("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{response}"
    );

    let response = until_close(&proxy, b"GET / HTTP/1.0\r\nHost: a.test\r\n\r\n").await;
    assert!(!response.contains("transfer-encoding"), "{response}");
    assert!(response.ends_with("\r\n\r\nhello world"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_reach_the_upstream_whole() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let response = until_close(
        &proxy,
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(response.as_bytes()), Some(200), "{response}");
    assert_eq!(a.last_request().expect("forwarded").body, "hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_left_unread_by_a_refusal_does_not_break_the_next_request() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(
        &Config::new()
            .listener_with(|l| l.route(|r| r.set("host", "only.test").set("upstream", "web")))
            .upstream("web", |u| u.server(&a))
            .toml(),
    )
    .await;

    // No route: 404 before the body is read; the body is read past and the
    // next request on the connection is served.
    let response = until_close(
        &proxy,
        b"POST / HTTP/1.1\r\nHost: other.test\r\nContent-Length: 5\r\n\r\nhello\
          GET / HTTP/1.1\r\nHost: only.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(response.as_bytes()), Some(404), "{response}");
    assert_eq!(response.matches("HTTP/1.1 ").count(), 2, "{response}");
    assert!(response.contains("HTTP/1.1 200 OK"), "{response}");
    assert_eq!(a.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluices_own_answers_carry_a_date() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(
        &Config::new()
            .listener_with(|l| l.route(|r| r.set("path_prefix", "/app/").set("upstream", "web")))
            .upstream("web", |u| u.server(&a))
            .toml(),
    )
    .await;
    let response = until_close(
        &proxy,
        b"GET /elsewhere HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 404 "), "{response}");
    let date = response
        .lines()
        .find_map(|line| line.strip_prefix("date: "))
        .unwrap_or_else(|| panic!("no Date in {response:?}"));
    assert!(date.ends_with(" GMT"), "{date}");
}
