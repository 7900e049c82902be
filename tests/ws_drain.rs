//! Draining stateful servers: at a drain deadline WebSocket clients get a
//! Close frame (and their servers a 1001) at a frame boundary, spread over
//! `close_spread`; other tunnels are closed; shutdown sends 1001; and
//! `drained?wait=` tells a preStop hook when the server can go.

mod support;

use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use support::{admin::*, client::*, config::*, proxy::*, upstream::*, websocket::*};

const WAIT: Duration = Duration::from_secs(20);
/// On a loaded machine a close may come this long after it is due.
const MARGIN: Duration = Duration::from_secs(5);

/// An upstream `web` of `servers` behind a listener and the admin API, with
/// the `[upstream.web.websocket]` keys `websocket` sets.
fn config(servers: &[String], websocket: impl FnOnce(Keys) -> Keys) -> Config {
    Config::new().admin().listener("web").upstream("web", |u| {
        let u = u.table_with("websocket", websocket);
        servers.iter().fold(u, |u, address| u.server(address))
    })
}

/// Drain closes due at the deadline, none spread after it.
fn no_spread(keys: Keys) -> Keys {
    keys.set("close_spread", "0s")
}

async fn drain(proxy: &Proxy, address: &str, query: &str) {
    let resp = request(
        Method::POST,
        &proxy.admin_url(&format!(
            "/api/upstreams/web/servers/{address}/drain{query}"
        )),
        &[],
        "",
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
}

async fn drained(proxy: &Proxy, address: &str, wait: &str) -> (u16, Value) {
    let resp = get(&proxy.admin_url(&format!(
        "/api/upstreams/web/servers/{address}/drained?wait={wait}"
    )))
    .await;
    let body = serde_json::from_str(&resp.body).expect("JSON");
    (resp.status.as_u16(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_websocket_gets_1012_and_reconnects_to_another_server() {
    let (a, b) = (WebSocketEcho::start().await, WebSocketEcho::start().await);
    let proxy = Proxy::start(&config(&[a.address(), b.address()], no_spread).toml()).await;
    let url = format!("ws://{}/chat", proxy.addr());
    let mut ws = ws_connect(&url).await.expect("websocket through the proxy");
    assert_eq!(ws_echo(&mut ws, "hello").await.as_deref(), Ok("hello"));
    let (mine, other) = if a.open() == 1 { (&a, &b) } else { (&b, &a) };
    assert_eq!(mine.open(), 1);

    let drained_at = Instant::now();
    drain(&proxy, &mine.address(), "?deadline=1s").await;
    let closed = ws_closed_with(&mut ws).await.expect("a Close frame");
    assert_eq!(closed.code, 1012, "Service Restart");
    let after = closed.at - drained_at;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(1) + MARGIN,
        "closed {after:?} after a drain with a 1 s deadline"
    );
    poll_until(WAIT, "the server hears 1001", async || {
        mine.close_codes() == [1001]
    })
    .await;

    let mut again = ws_connect(&url).await.expect("reconnect");
    assert_eq!(ws_echo(&mut again, "back").await.as_deref(), Ok("back"));
    assert_eq!(other.open(), 1, "the reconnect went to the other server");
    poll_until(WAIT, "the drained server has no session", async || {
        mine.open() == 0
    })
    .await;

    let status = server_status(&proxy, &mine.address()).await;
    assert_eq!(status["tunnels_closed"]["drain"]["1012"], 1, "{status}");
    assert_eq!(status["state"], "drained", "{status}");
    let metrics = get(&proxy.admin_url("/metrics")).await.body;
    let series = format!(
        "sluice_server_tunnels_closed_total{{upstream=\"web\",server=\"{}\",cause=\"drain\",code=\"1012\"}} 1",
        mine.address()
    );
    assert!(metrics.contains(&series), "{metrics}");
}

/// The head of a binary frame from a server (unmasked) of `len` bytes.
fn binary_head(len: u64) -> Vec<u8> {
    let mut head = vec![0x82, 127];
    head.extend_from_slice(&len.to_be_bytes());
    head
}

/// Reads one masked frame (as a client, here sluice, sends it) and returns
/// its opcode and unmasked payload.
async fn read_masked_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.expect("frame head");
    assert_eq!(head[1] & 0x80, 0x80, "frames to a server are masked");
    let len = usize::from(head[1] & 0x7f);
    assert!(len < 126, "a short control frame");
    let mut key = [0u8; 4];
    stream.read_exact(&mut key).await.expect("masking key");
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.expect("payload");
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
    (head[0] & 0x0f, payload)
}

/// Accepts one WebSocket, sends half of a 100 000-byte binary frame, and
/// sends the other half only once sluice's Close has arrived, so the drain
/// deadline surely passes in the middle of the frame. Answers the Close and
/// reports its code.
async fn half_a_frame_server(listener: TcpListener, payload: Vec<u8>, code: oneshot::Sender<u16>) {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("text");
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .expect("Sec-WebSocket-Key");
    let accept = derive_accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(answer.as_bytes()).await.expect("101");
    let (first, second) = payload.split_at(payload.len() / 2);
    stream
        .write_all(&binary_head(payload.len() as u64))
        .await
        .expect("frame head");
    stream.write_all(first).await.expect("first half");
    let (opcode, body) = read_masked_frame(&mut stream).await;
    assert_eq!(opcode, 0x8, "a Close frame");
    stream.write_all(second).await.expect("second half");
    stream
        .write_all(&[0x88, 2, 0x03, 0xe9])
        .await
        .expect("answering Close");
    let _ = code.send(u16::from_be_bytes([body[0], body[1]]));
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_in_flight_at_the_deadline_arrives_whole() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (code_tx, code_rx) = oneshot::channel();
    let server = tokio::spawn(half_a_frame_server(listener, payload.clone(), code_tx));
    let proxy = Proxy::start(&config(std::slice::from_ref(&address), no_spread).toml()).await;
    let mut ws = ws_connect(&format!("ws://{}/", proxy.addr()))
        .await
        .expect("websocket through the proxy");
    drain(&proxy, &address, "?deadline=1s").await;

    let closed = ws_closed_with(&mut ws).await.expect("a Close frame");
    assert_eq!(closed.code, 1012);
    assert_eq!(
        closed.messages.len(),
        1,
        "one whole message before the Close"
    );
    assert_eq!(
        closed.messages[0],
        Message::binary(payload),
        "the frame arrived whole"
    );
    let code = tokio::time::timeout(WAIT, code_rx)
        .await
        .expect("the server heard a Close")
        .expect("code");
    assert_eq!(code, 1001, "Going Away to the server");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tunnels_close_over_close_spread_not_at_once() {
    let echo = WebSocketEcho::start().await;
    let proxy =
        Proxy::start(&config(&[echo.address()], |w| w.set("close_spread", "2s")).toml()).await;
    let url = format!("ws://{}/chat", proxy.addr());
    let mut sessions = Vec::new();
    for _ in 0..50 {
        sessions.push(ws_connect(&url).await.expect("websocket"));
    }
    poll_until(WAIT, "fifty sessions are open", async || echo.open() == 50).await;

    let drained_at = Instant::now();
    drain(&proxy, &echo.address(), "?deadline=1s").await;
    let waiting: Vec<_> = sessions
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { ws_closed_with(&mut ws).await }))
        .collect();
    let mut arrivals = Vec::new();
    for session in waiting {
        let closed = session.await.expect("task").expect("a Close frame");
        assert_eq!(closed.code, 1012);
        arrivals.push(closed.at);
    }
    let first = *arrivals.iter().min().expect("closes");
    let last = *arrivals.iter().max().expect("closes");
    assert!(
        last - first > Duration::from_secs(1),
        "the closes came within {:?} of each other: not spread over 2 s",
        last - first
    );
    assert!(
        last - drained_at < Duration::from_secs(3) + MARGIN,
        "the last close came {:?} after the drain",
        last - drained_at
    );
    poll_until(WAIT, "the server heard fifty 1001s", async || {
        let codes = echo.close_codes();
        codes.len() == 50 && codes.iter().all(|&c| c == 1001)
    })
    .await;
}

/// Answers one upgrade to `Upgrade: foo` with a 101, then echoes bytes.
async fn foo_upgrade_server(listener: TcpListener) {
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("request head");
        head.push(byte[0]);
    }
    stream
        .write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .expect("101");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_websocket_upgrade_is_closed_at_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let server = tokio::spawn(foo_upgrade_server(listener));
    let proxy = Proxy::start(&config(std::slice::from_ref(&address), no_spread).toml()).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
        .await
        .expect("upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).await.expect("101 head");
        head.push(byte[0]);
    }
    assert_eq!(raw_status(&head), Some(101));
    conn.write_all(b"ping").await.expect("write");
    let mut echoed = [0u8; 4];
    conn.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"ping");

    let drained_at = Instant::now();
    drain(&proxy, &address, "?deadline=1s").await;
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(WAIT, conn.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the tunnel stayed open past the deadline");
    assert!(rest.is_empty(), "no bytes, just the close: {rest:?}");
    let after = drained_at.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(1) + MARGIN,
        "closed {after:?} after a drain with a 1 s deadline"
    );
    let status = server_status(&proxy, &address).await;
    assert_eq!(status["tunnels_closed"]["drain"]["none"], 1, "{status}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_1001_both_ways_before_shutdown_timeout() {
    let echo = WebSocketEcho::start().await;
    // The close is due 2 s before shutdown_timeout: 3 s after the signal.
    let toml = config(&[echo.address()], no_spread)
        .global("shutdown_timeout", "5s")
        .toml();
    let mut proxy = Proxy::start(&toml).await;
    let mut ws = ws_connect(&format!("ws://{}/chat", proxy.addr()))
        .await
        .expect("websocket through the proxy");
    assert_eq!(ws_echo(&mut ws, "hi").await.as_deref(), Ok("hi"));

    let signalled = Instant::now();
    proxy.signal(Signal::Term);
    let closed = ws_closed_with(&mut ws).await.expect("a Close frame");
    assert_eq!(closed.code, 1001, "Going Away");
    assert!(
        closed.at - signalled >= Duration::from_millis(2900),
        "closed {:?} after the signal: the tunnel was not given its time",
        closed.at - signalled
    );
    poll_until(WAIT, "the server hears 1001", async || {
        echo.close_codes() == [1001]
    })
    .await;
    let status = proxy.wait_exit(WAIT).await.expect("sluice exits");
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(
        !proxy.stderr().contains("shutdown_timeout passed"),
        "the tunnel was cut, not closed: {}",
        proxy.stderr()
    );
}

/// A request to `slow` (which holds it) through `proxy`, running, and
/// `slow` drained while it does.
async fn drain_while_busy(
    proxy: &Proxy,
    slow: &MockUpstream,
) -> tokio::task::JoinHandle<Result<Resp, Error>> {
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { try_get(&url).await });
    poll_until(WAIT, "the request reaches the upstream", async || {
        slow.in_flight() == 1
    })
    .await;
    drain(proxy, &slow.address(), "").await;
    in_flight
}

/// `drained?wait=60s` on `address` of upstream `web`, running.
fn wait_drained(proxy: &Proxy, address: &str) -> tokio::task::JoinHandle<Resp> {
    let url = proxy.admin_url(&format!(
        "/api/upstreams/web/servers/{address}/drained?wait=60s"
    ));
    tokio::spawn(async move { get(&url).await })
}

/// Lets `slow` answer the request `in_flight` on it, then reads what
/// `waiter` ([`wait_drained`]) answered: 200, drained, nothing in flight.
async fn release_then_drained(
    slow: &MockUpstream,
    in_flight: tokio::task::JoinHandle<Result<Resp, Error>>,
    waiter: tokio::task::JoinHandle<Resp>,
) -> Value {
    slow.set_hang(false);
    let resp = in_flight
        .await
        .expect("task")
        .expect("the request completes");
    assert_eq!(resp.status, 200);
    let answer = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("drained?wait= answers once the request ends, not after 60 s")
        .expect("task");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(body["drained"], true, "{body}");
    assert_eq!(body["in_flight"], 0, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_wait_answers_when_the_last_request_ends() {
    let slow = MockUpstream::named("slow").hang().start().await;
    let proxy = Proxy::start(&config(&[slow.address()], |w| w).toml()).await;
    let in_flight = drain_while_busy(&proxy, &slow).await;
    let (status, body) = drained(&proxy, &slow.address(), "0s").await;
    assert_eq!(status, 409, "{body}");

    let waiter = wait_drained(&proxy, &slow.address());
    let body = release_then_drained(&slow, in_flight, waiter).await;
    assert_eq!(body["state"], "drained", "{body}");

    // Drained already: at once.
    let (status, _) = drained(&proxy, &slow.address(), "60s").await;
    assert_eq!(status, 200);
}

/// A drained server taken out of the file by a reload while a request of
/// its own still runs: `drained?wait=` goes on waiting and answers 200 when
/// that request ends, not 404 at the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_wait_follows_a_server_a_reload_removes_until_its_last_request_ends() {
    let slow = MockUpstream::named("slow").hang().start().await;
    let other = MockUpstream::named("other").start().await;
    let (listen, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = |server: String| {
        Config::new()
            .global("watch", false)
            .set("admin", "listen", &admin)
            .listener_with(|l| l.set("listen", &listen).set("upstream", "web"))
            .upstream("web", |u| u.server(server))
            .toml()
    };
    let proxy = Proxy::start(&config(slow.address())).await;
    let in_flight = drain_while_busy(&proxy, &slow).await;
    let waiter = wait_drained(&proxy, &slow.address());

    proxy.write_config(&config(other.address()));
    let reloaded = request(Method::POST, &proxy.admin_url("/api/reload"), &[], "").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert_eq!(get(&proxy.url("/next")).await.upstream(), Some("other"));

    let body = release_then_drained(&slow, in_flight, waiter).await;
    assert_eq!(body["state"], "removed", "{body}");

    // Asked after the reload: no such server.
    let (status, _) = drained(&proxy, &slow.address(), "0s").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_wait_gives_409_with_the_counts_when_the_wait_passes() {
    let slow = MockUpstream::named("slow").hang().start().await;
    let proxy = Proxy::start(&config(&[slow.address()], |w| w).toml()).await;
    let in_flight = drain_while_busy(&proxy, &slow).await;
    let asked = Instant::now();
    let (status, body) = drained(&proxy, &slow.address(), "500ms").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        asked.elapsed() >= Duration::from_millis(500),
        "it did not wait"
    );
    assert_eq!(body["drained"], false, "{body}");
    assert_eq!(body["state"], "draining", "{body}");
    assert_eq!(body["in_flight"], 1, "{body}");
    assert_eq!(body["tunnels"], 0, "{body}");

    let (status, _) = drained(&proxy, "127.0.0.1:1", "0s").await;
    assert_eq!(status, 404);
    let resp = get(&proxy.admin_url(&format!(
        "/api/upstreams/web/servers/{}/drained?wait=soon",
        slow.address()
    )))
    .await;
    assert_eq!(resp.status, 400);
    slow.set_hang(false);
    let _ = in_flight.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_wait_answers_when_the_last_tunnel_closes() {
    let echo = WebSocketEcho::start().await;
    let proxy = Proxy::start(&config(&[echo.address()], |w| w).toml()).await;
    let mut ws = ws_connect(&format!("ws://{}/chat", proxy.addr()))
        .await
        .expect("websocket through the proxy");
    assert_eq!(ws_echo(&mut ws, "hi").await.as_deref(), Ok("hi"));
    drain(&proxy, &echo.address(), "").await;
    let (status, body) = drained(&proxy, &echo.address(), "0s").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["tunnels"], 1, "{body}");

    let waiter = {
        let url = proxy.admin_url(&format!(
            "/api/upstreams/web/servers/{}/drained?wait=60s",
            echo.address()
        ));
        tokio::spawn(async move { get(&url).await })
    };
    // Without a deadline the tunnel is the client's to close.
    assert_eq!(ws_echo(&mut ws, "still").await.as_deref(), Ok("still"));
    ws.close(None).await.expect("close");
    drop(ws);
    let answer = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("drained?wait= answers once the tunnel closes")
        .expect("task");
    assert_eq!(answer.status, 200, "{}", answer.body);
}
