//! The request target's four forms (RFC 9112 §3.2) and the end of a chunked
//! body: what is routed where, what is refused, and that a connection never
//! falls out of step with its client.

mod support;

use std::time::Duration;

use support::{client::*, config::*, proxy::*, upstream::*};

/// Listener on a fresh port; `a.test` routes to upstream `a`, anything else
/// to the default upstream `b`.
fn two_hosts(a: &MockUpstream, b: &MockUpstream) -> Config {
    Config::new()
        .listener_with(|l| {
            l.set("upstream", "b")
                .route(|r| r.set("host", "a.test").set("upstream", "a"))
        })
        .upstream("a", |u| u.server(a))
        .upstream("b", |u| u.server(b))
}

/// The status of every response in `response`: bodies are not followed by
/// a newline, so a status line may start in the middle of a line.
fn statuses(response: &str) -> Vec<u16> {
    response
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| raw_status(&response.as_bytes()[at..]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_routed_and_forwarded_by_its_authority() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&two_hosts(&a, &b).toml()).await;
    let response = raw_text(
        proxy.addr(),
        b"GET http://a.test/x?q=1 HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&response), [200], "{response}");
    assert_eq!(b.count(), 0, "routed by Host instead of the target");
    let seen = a.last_request().expect("a got the request");
    assert_eq!(
        seen.uri.to_string(),
        "/x?q=1",
        "not forwarded in origin form"
    );
    assert_eq!(seen.header("host"), Some("a.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_for_the_whole_server_reaches_it_as_asterisk() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&two_hosts(&a, &b).toml()).await;
    let response = raw_text(
        proxy.addr(),
        b"OPTIONS http://a.test HTTP/1.1\r\nHost: a.test\r\n\r\n\
          OPTIONS http://a.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&response), [200, 200], "{response}");
    let targets: Vec<String> = a.requests().iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(targets, ["*", "/"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authority_form_without_connect_is_400_and_closes() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&two_hosts(&a, &b).toml()).await;
    // The pipelined request must not be answered: the connection closes.
    let response = raw_text(
        proxy.addr(),
        b"GET a.test:80 HTTP/1.1\r\nHost: a.test\r\n\r\n\
          GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&response), [400], "{response}");
    assert_eq!(a.count() + b.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_501_logged_and_never_reaches_a_server() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&two_hosts(&a, &b).set("log", "format", "json").toml()).await;
    let response = raw_text(
        proxy.addr(),
        b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&response), [501], "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert_eq!(a.count() + b.count(), 0);
    let logged_501 = || {
        proxy
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| {
                v["target"] == "sluice::access" && v["method"] == "CONNECT" && v["status"] == 501
            })
    };
    poll_until(
        Duration::from_secs(10),
        "the access log says 501",
        async || logged_501(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_lf_after_the_last_chunk_ends_the_request() {
    let a = MockUpstream::named("a").echo().start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&two_hosts(&a, &b).toml()).await;
    let response = raw_text(proxy.addr(), b"POST /one HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n0\r\n\n",
    )
    .await;
    assert_eq!(statuses(&response), [200], "{response}");
    assert_eq!(a.last_request().expect("forwarded").body, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pipelined_after_a_bare_lf_trailer_end_is_answered_too() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&two_hosts(&a, &b).toml()).await;
    let response = raw_text(
        proxy.addr(),
        b"POST /one HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\nX-Sum: 1\n\n\
          GET /two HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&response), [200, 200], "{response}");
    let paths: Vec<String> = a.requests().iter().map(|r| r.uri.to_string()).collect();
    assert_eq!(paths, ["/one", "/two"], "out of step with the client");
    assert_eq!(a.requests()[0].body, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_http1_minor_version_is_served_as_11_and_http2_text_is_505() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&two_hosts(&a, &b).toml()).await;
    let response = raw_text(
        proxy.addr(),
        b"GET /x HTTP/1.2\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&response), [200], "{response}");
    assert_eq!(a.count(), 1);
    let response = raw_text(proxy.addr(), b"GET /x HTTP/3.0\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(statuses(&response), [505], "{response}");
    assert_eq!(a.count(), 1);
}
