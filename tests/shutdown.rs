//! Graceful shutdown through the real binary: SIGTERM/SIGINT stop accepting,
//! let in-flight requests and tunnels finish for up to `shutdown_timeout`,
//! then exit 0; a second signal exits at once.

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{client::*, config::*, proxy::*, upstream::*, websocket::*};

const WAIT: Duration = Duration::from_secs(10);
const GENEROUS: Duration = Duration::from_secs(30);

/// `/ws` goes to `ws`, everything else to `web`.
fn config(shutdown_timeout: &str, web: &str, ws: &str) -> String {
    Config::new()
        .global("shutdown_timeout", shutdown_timeout)
        .listener_with(|l| {
            l.set("upstream", "web")
                .route(|r| r.set("path_prefix", "/ws").set("upstream", "ws"))
        })
        .upstream("web", |u| u.server(web))
        .upstream("ws", |u| u.server(ws))
        .toml()
}

async fn refused(proxy: &Proxy) -> bool {
    TcpStream::connect(proxy.addr()).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_slow_request_and_the_tunnel_then_exits_zero() {
    let slow = MockUpstream::named("slow")
        .delay(Duration::from_secs(2))
        .start()
        .await;
    let echo = WebSocketEcho::start().await;
    let mut proxy = Proxy::start(&config("20s", &slow.address(), &echo.address())).await;
    let mut ws = ws_connect(&format!("ws://{}/ws", proxy.addr()))
        .await
        .expect("websocket through the proxy");
    assert_eq!(ws_echo(&mut ws, "before").await.as_deref(), Ok("before"));
    let url = proxy.url("/");
    let request = tokio::spawn(async move { try_get(&url).await });
    poll_until(WAIT, "the slow request reaches its server", async || {
        slow.in_flight() == 1
    })
    .await;

    let signalled = Instant::now();
    proxy.signal(Signal::Term);
    poll_until(WAIT, "new connections are refused", async || {
        refused(&proxy).await
    })
    .await;
    let resp = request
        .await
        .expect("request task")
        .expect("the slow request completes");
    assert_eq!((resp.status.as_u16(), resp.body.as_str()), (200, "slow"));
    assert_eq!(
        ws_echo(&mut ws, "draining").await.as_deref(),
        Ok("draining")
    );
    assert!(proxy.try_exit().is_none(), "exited while a tunnel was open");

    ws.close(None).await.expect("close the websocket");
    drop(ws);
    let status = proxy
        .wait_exit(WAIT)
        .await
        .expect("exits once the tunnel closed");
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "waited for shutdown_timeout"
    );
}

async fn graceful(signal: Signal) {
    let slow = MockUpstream::named("slow").hang().start().await;
    let echo = WebSocketEcho::start().await;
    let mut proxy = Proxy::start(&config("60s", &slow.address(), &echo.address())).await;

    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { try_get(&url).await });
    poll_until(GENEROUS, "the request reaches the upstream", async || {
        slow.in_flight() == 1
    })
    .await;
    proxy.signal(signal);
    poll_until(GENEROUS, "new connections are refused", async || {
        refused(&proxy).await
    })
    .await;
    assert!(
        proxy.try_exit().is_none(),
        "exited with a request in flight"
    );

    slow.set_hang(false);
    let resp = in_flight
        .await
        .expect("client task")
        .expect("the in-flight request completes");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "slow");
    let status = proxy
        .wait_exit(GENEROUS)
        .await
        .expect("sluice exits once idle");
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_is_graceful_too() {
    graceful(Signal::Int).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_closes_what_is_left_and_exits_zero() {
    let stuck = MockUpstream::named("stuck").hang().start().await;
    let echo = WebSocketEcho::start().await;
    let mut proxy = Proxy::start(&config("1s", &stuck.address(), &echo.address())).await;
    let mut ws = ws_connect(&format!("ws://{}/ws", proxy.addr()))
        .await
        .expect("websocket through the proxy");
    assert_eq!(ws_echo(&mut ws, "hi").await.as_deref(), Ok("hi"));
    let url = proxy.url("/");
    let request = tokio::spawn(async move { try_get(&url).await });
    poll_until(WAIT, "the request hangs at its server", async || {
        stuck.in_flight() == 1
    })
    .await;

    proxy.signal(Signal::Term);
    let status = proxy
        .wait_exit(WAIT)
        .await
        .expect("exits after shutdown_timeout");
    assert!(status.success(), "exit status {status}");
    assert!(
        request.await.expect("request task").is_err(),
        "the hung request got an answer"
    );
    assert!(
        ws_echo(&mut ws, "gone?").await.is_err(),
        "the tunnel outlived the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let slow = MockUpstream::named("slow").hang().start().await;
    let echo = WebSocketEcho::start().await;
    let mut proxy = Proxy::start(&config("1h", &slow.address(), &echo.address())).await;

    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { try_get(&url).await });
    poll_until(GENEROUS, "the request reaches the upstream", async || {
        slow.in_flight() == 1
    })
    .await;
    proxy.signal(Signal::Term);
    poll_until(GENEROUS, "new connections are refused", async || {
        refused(&proxy).await
    })
    .await;
    proxy.signal(Signal::Term);
    // With an hour of shutdown_timeout left, only the second signal can end it.
    proxy
        .wait_exit(GENEROUS)
        .await
        .expect("the second signal ends the process");
    assert!(
        in_flight.await.expect("client task").is_err(),
        "the cut request cannot complete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_on_shutdown() {
    let web = MockUpstream::named("web").start().await;
    let echo = WebSocketEcho::start().await;
    let mut proxy = Proxy::start(&config("1h", &web.address(), &echo.address())).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write request");
    let mut head = vec![0u8; 4096];
    let n = conn.read(&mut head).await.expect("read response");
    assert_eq!(raw_status(&head[..n]), Some(200));

    proxy.signal(Signal::Term);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, conn.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle keep-alive connection stayed open");
    let status = proxy
        .wait_exit(WAIT)
        .await
        .expect("exits without waiting an hour");
    assert!(status.success(), "exit status {status}");
}
