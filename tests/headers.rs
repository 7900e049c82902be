//! The Headers section of the contract, end to end: `Host` preserved, the
//! `X-Forwarded-*` family and `X-Real-IP`, `trusted_proxies`, and hop-by-hop
//! headers removed in both directions.

mod support;

use support::{client::*, config::*, proxy::*, upstream::*};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_preserved_and_forwarded_headers_are_set() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let resp = get_with(&proxy.url("/p?q=1"), &[("host", "app.example.com:8443")]).await;
    assert_eq!(resp.status, 200);
    let request = a.last_request().expect("forwarded");
    assert_eq!(request.uri, "/p?q=1");
    assert_eq!(a.seen("host").as_deref(), Some("app.example.com:8443"));
    assert_eq!(a.seen("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(a.seen("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        a.seen("x-forwarded-host").as_deref(),
        Some("app.example.com:8443")
    );
    assert_eq!(a.seen("x-real-ip").as_deref(), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_client_cannot_spoof_forwarded_headers() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    get_with(
        &proxy.url("/"),
        &[
            ("host", "real.test"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
        ],
    )
    .await;
    assert_eq!(a.seen("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(a.seen("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(a.seen("x-forwarded-host").as_deref(), Some("real.test"));
    assert_eq!(a.seen("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(a.seen("forwarded"), None);
    assert_eq!(a.seen("x-forwarded-port"), None);
    assert_eq!(a.seen("x-forwarded-prefix"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_chain_is_joined_in_order_and_extended() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).trusting_loopback().toml()).await;

    get_with(
        &proxy.url("/"),
        &[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ],
    )
    .await;
    assert_eq!(
        a.seen_all("x-forwarded-for"),
        ["1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"],
        "one joined line, in order, with the peer appended"
    );
    // The client is the right-most address that is not a trusted proxy.
    assert_eq!(a.seen("x-real-ip").as_deref(), Some("3.3.3.3"));

    // Without an incoming chain, the trusted peer is the client.
    get(&proxy.url("/")).await;
    assert_eq!(a.seen("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(a.seen("x-real-ip").as_deref(), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_keeps_its_forwarded_proto_and_host() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).trusting_loopback().toml()).await;

    get_with(
        &proxy.url("/"),
        &[
            ("host", "inner.test"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "outer.test"),
        ],
    )
    .await;
    assert_eq!(a.seen("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(a.seen("x-forwarded-host").as_deref(), Some("outer.test"));
    assert_eq!(a.seen("host").as_deref(), Some("inner.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_removed() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let response = raw_request(
        proxy.addr(),
        b"GET /hop HTTP/1.1\r\nHost: hop.test\r\n\
          Connection: x-secret, X-Other, close\r\n\
          X-Secret: 1\r\nX-Other: 2\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\n\
          Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n\
          Proxy: http://evil.test:3128\r\nProxy-Foo: 1\r\n\
          Upgrade: websocket\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert_eq!(
        raw_status(&response),
        Some(200),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let request = a.last_request().expect("forwarded");
    for name in [
        "x-secret",
        "x-other",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "proxy",
        "proxy-foo",
        "upgrade",
    ] {
        assert!(
            !request.headers.contains_key(name),
            "{name} reached the upstream"
        );
    }
    // The proxy's own connection to the upstream may say keep-alive, but
    // nothing the client listed.
    for value in a.seen_all("connection") {
        let value = value.to_ascii_lowercase();
        assert!(
            !value.contains("x-secret") && !value.contains("x-other"),
            "connection: {value}"
        );
    }
    assert_eq!(request.header("x-kept"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_never_forwarded() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let response = raw_request(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost: h2c.test\r\n\
          Connection: Upgrade, HTTP2-Settings, close\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    // Served as plain HTTP/1.1: no 101, no switch.
    assert_eq!(
        raw_status(&response),
        Some(200),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let request = a.last_request().expect("forwarded");
    assert_eq!(request.header("upgrade"), None);
    assert_eq!(request.header("http2-settings"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_removed() {
    let a = MockUpstream::raw(
        "a",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\
          Connection: X-Private\r\nX-Private: secret\r\n\
          Keep-Alive: timeout=5, max=100\r\nProxy-Authenticate: Basic\r\n\
          Proxy-Connection: keep-alive\r\nUpgrade: foo\r\nTrailer: X-Sum\r\n\
          X-Kept: yes\r\n\r\nok",
    )
    .start()
    .await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let resp = get(&proxy.url("/")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "ok");
    for name in [
        "x-private",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "upgrade",
        "trailer",
    ] {
        assert_eq!(resp.header(name), None, "{name} reached the client");
    }
    if let Some(connection) = resp.header("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-private"),
            "{connection}"
        );
    }
    assert_eq!(resp.header("x-kept"), Some("yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_is_the_host_not_the_host_field() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let mut sender = h2_prior_knowledge(proxy.addr()).await;
    let request = http::Request::get("http://app.test:8443/h2")
        .header("host", "evil.test")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    assert_eq!(a.seen("host").as_deref(), Some("app.test:8443"));
    assert_eq!(a.seen("x-forwarded-host").as_deref(), Some("app.test:8443"));
    assert_eq!(a.last_request().expect("forwarded").uri, "/h2");
}

/// HTTP/2 clients send one `cookie` field per cookie; an HTTP/1.1 server
/// gets them joined into one `Cookie` line (RFC 9113 §8.2.3), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookie_fields_reach_the_upstream_as_one_cookie_line() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let mut sender = h2_prior_knowledge(proxy.addr()).await;
    let request = http::Request::get("http://app.test/cookies")
        .header("cookie", "a=b")
        .header("x-between", "1")
        .header("cookie", "sid=7")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    let seen = a.last_request().expect("forwarded");
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=b; sid=7"]);
}
