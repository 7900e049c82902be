//! Upgrade tunnels: a 101 with the requested protocol starts a tunnel both
//! ways; anything else stays HTTP.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{client::*, config::*, proxy::*, upstream::*, websocket::*};

/// A listener with `idle_timeout` in front of upstream `web`, built by
/// `upstream`.
fn config(idle_timeout: &str, upstream: impl FnOnce(Upstream) -> Upstream) -> String {
    Config::new()
        .listener_with(|l| l.set("upstream", "web").set("idle_timeout", idle_timeout))
        .upstream("web", upstream)
        .toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_through_the_proxy() {
    let echo = WebSocketEcho::start().await;
    let proxy = Proxy::start(&config("60s", |u| u.server(echo.address()))).await;
    let mut ws = ws_connect(&format!("ws://{}/chat", proxy.addr()))
        .await
        .expect("websocket through the proxy");
    for i in 0..20 {
        let text = format!("message {i}");
        assert_eq!(ws_echo(&mut ws, &text).await, Ok(text));
    }
    let big = "x".repeat(256 * 1024);
    assert_eq!(ws_echo(&mut ws, &big).await.map(|r| r.len()), Ok(big.len()));
    assert_eq!(echo.open(), 1);
    ws.close(None).await.expect("close");
    poll_until(
        Duration::from_secs(10),
        "the upstream session ends",
        async || echo.open() == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_answered_without_101_stays_http() {
    let web = MockUpstream::named("web").start().await;
    let proxy = Proxy::start(&config("60s", |u| u.server(&web))).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.expect("connect");
    conn.write_all(
        b"GET /a HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .expect("write upgrade request");
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.expect("read response");
    assert_eq!(raw_status(&buf[..n]), Some(200));
    let seen = web
        .last_request()
        .expect("the upgrade request reached the server");
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert_eq!(seen.header("connection"), Some("upgrade"));

    // The same connection still speaks HTTP.
    conn.write_all(b"GET /b HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write second request");
    let n = conn.read(&mut buf).await.expect("read second response");
    assert_eq!(raw_status(&buf[..n]), Some(200));
    assert_eq!(web.count(), 2);
    assert_eq!(web.last_request().expect("second").header("upgrade"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed_after_idle_timeout() {
    let echo = WebSocketEcho::start().await;
    let proxy = Proxy::start(&config("1s", |u| u.server(echo.address()))).await;
    let mut ws = ws_connect(&format!("ws://{}/chat", proxy.addr()))
        .await
        .expect("websocket through the proxy");
    assert_eq!(ws_echo(&mut ws, "hi").await.as_deref(), Ok("hi"));
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the idle tunnel stayed open");
    poll_until(
        Duration::from_secs(10),
        "the upstream session ends",
        async || echo.open() == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_binds_a_sticky_client() {
    let (a, b) = (WebSocketEcho::start().await, WebSocketEcho::start().await);
    let toml = config("60s", |u| {
        u.server(a.address())
            .server(b.address())
            .table("sticky", "cookie", "ws")
    });
    let proxy = Proxy::start(&toml).await;
    let url = format!("ws://{}/chat", proxy.addr());
    let (_ws, handshake) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("websocket through the proxy");
    let cookie = handshake
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("the 101 sets the sticky cookie")
        .to_owned();
    assert!(cookie.starts_with("ws="), "{cookie}");

    // The next handshake carrying it goes to the same server and is not
    // given the cookie again.
    let value = cookie.split(';').next().expect("name=value");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            url.as_str(),
        )
        .expect("request");
    request
        .headers_mut()
        .insert("cookie", value.parse().expect("header value"));
    let (_again, handshake) = tokio_tungstenite::connect_async(request)
        .await
        .expect("second websocket");
    assert!(handshake.headers().get("set-cookie").is_none());
    poll_until(
        Duration::from_secs(10),
        "both sessions are open",
        async || a.open() + b.open() == 2,
    )
    .await;
    assert!(
        a.open() == 2 || b.open() == 2,
        "the bound session went to the other server (a: {}, b: {})",
        a.open(),
        b.open()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_a_server_sends_right_behind_its_101_reach_the_client() {
    // The 101 and the tunnel's first bytes in one write, as a server that
    // greets on connect sends them: they arrive with the response head.
    let greeter = MockUpstream::raw(
        "greeter",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello",
    )
    .start()
    .await;
    let proxy = Proxy::start(&config("60s", |u| u.server(greeter.address()))).await;
    let response = raw_request(
        proxy.addr(),
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&response), Some(101));
    assert!(
        response.ends_with(b"\r\n\r\n\x81\x05hello"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
}
