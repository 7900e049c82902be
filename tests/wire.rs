//! What sluice's HTTP/1.1 engine puts on the wire, seen byte for byte from
//! both ends: interim responses forwarded, chunked bodies passed through as
//! the server framed them, field names spelled as they were sent. The
//! servers here are scripted raw sockets, so nothing re-frames or
//! re-spells what the proxy wrote.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use support::{config::*, proxy::*};

/// Reads from `stream` until `buf` contains `marker`, within 10 s; false if
/// the stream ended first.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, marker: &[u8]) -> bool {
    let read = async {
        while !buf.windows(marker.len()).any(|w| w == marker) {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("nothing arrived within 10 s")
}

/// Reads until the peer closes, within 10 s.
async fn read_to_close(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(buf))
        .await
        .expect("the connection was not closed within 10 s")
        .ok();
}

/// A server that takes one connection and runs `script` on it with the
/// request head it read (the bytes up to the blank line, and any read past).
async fn server<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(TcpStream, Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        read_until(&mut stream, &mut request, b"\r\n\r\n").await;
        script(stream, request).await;
    });
    addr
}

/// A server that takes one connection, answers `response` and waits for
/// the proxy to close.
async fn answering(response: &'static [u8]) -> SocketAddr {
    server(move |mut stream, _| async move {
        stream.write_all(response).await.unwrap();
        let _ = stream.read(&mut [0u8; 64]).await;
    })
    .await
}

async fn proxy_to(server: SocketAddr) -> Proxy {
    proxy_to_all(&[server]).await
}

/// A proxy in front of `servers`, balanced round-robin.
async fn proxy_to_all(servers: &[SocketAddr]) -> Proxy {
    Proxy::start(
        &Config::new()
            .listener_with(|l| l.set("upstream", "web"))
            .upstream("web", |u| {
                servers.iter().fold(u, |u, &server| u.server(server))
            })
            .toml(),
    )
    .await
}

/// A GET that closes its connection after the response.
const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends `request` on a new connection to `proxy`; returns what the client
/// read until the close.
async fn ask(proxy: &Proxy, request: &[u8]) -> String {
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(request).await.unwrap();
    let mut received = Vec::new();
    read_to_close(&mut client, &mut received).await;
    text(&received)
}

/// Sends `request` through a proxy to a server that writes `answer`, part
/// by part, then waits; returns what the client read until the close.
async fn one_exchange(answer: &'static [&'static [u8]], request: &'static [u8]) -> String {
    let addr = server(move |mut stream, _| async move {
        for part in answer {
            stream.write_all(part).await.unwrap();
        }
        let _ = stream.read(&mut [0u8; 64]).await;
    })
    .await;
    ask(&proxy_to(addr).await, request).await
}

const EARLY_HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\
    Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_an_http11_client_before_the_server_answers() {
    let (seen_tx, seen_rx) = oneshot::channel::<()>();
    let addr = server(|mut stream, _| async move {
        stream.write_all(EARLY_HINTS).await.unwrap();
        // The final response waits until the client has the 103: it is
        // forwarded as it comes, not held back with the response.
        let _ = seen_rx.await;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        let _ = stream.read(&mut [0u8; 64]).await;
    })
    .await;
    let proxy = proxy_to(addr).await;

    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    assert!(read_until(&mut client, &mut received, b"\r\n\r\n").await);
    let hints = text(&received);
    assert_eq!(
        hints, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        "the 103 as sent, its hop-by-hop fields removed"
    );
    seen_tx.send(()).unwrap();
    read_to_close(&mut client, &mut received).await;
    let all = text(&received);
    let final_head = &all[hints.len()..];
    assert!(final_head.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(final_head.ends_with("\r\n\r\nok"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_103_was_passed_on_is_not_retried() {
    // The client has part of a response once a 103 reached it: if the
    // server then fails, another server's answer must not follow.
    let hints_then_close = |mut stream: TcpStream, _| async move {
        stream.write_all(EARLY_HINTS).await.unwrap();
    };
    let (a, b) = (
        server(hints_then_close).await,
        server(hints_then_close).await,
    );
    let proxy = proxy_to_all(&[a, b]).await;
    let all = ask(&proxy, GET_CLOSE).await;
    assert_eq!(all.matches("103 Early Hints").count(), 1, "{all}");
    assert!(all.contains("HTTP/1.1 502 "), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_get_no_interim_response() {
    let all = one_exchange(
        &[
            EARLY_HINTS,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ],
        b"GET / HTTP/1.0\r\nHost: a.test\r\n\r\n",
    )
    .await;
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(!all.contains("103"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_expects_100_continue_gets_exactly_one() {
    let addr = server(|mut stream, mut request| async move {
        read_until(&mut stream, &mut request, b"hello").await;
        stream
            .write_all(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            )
            .await
            .unwrap();
        let _ = stream.read(&mut [0u8; 64]).await;
    })
    .await;
    let proxy = proxy_to(addr).await;

    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(
            b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\
              Expect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    assert!(read_until(&mut client, &mut received, b"\r\n\r\n").await);
    assert_eq!(text(&received), "HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(b"hello").await.unwrap();
    read_to_close(&mut client, &mut received).await;
    let all = text(&received);
    assert_eq!(all.matches("100 Continue").count(), 1, "{all}");
    assert!(all.ends_with("\r\n\r\nok"), "{all}");
}

const CHUNKED: &[u8] = b"4;name=value\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n";

async fn chunked_server() -> SocketAddr {
    server(|mut stream, _| async move {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        stream.write_all(CHUNKED).await.unwrap();
        let _ = stream.read(&mut [0u8; 64]).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_pass_between_http11_peers_as_framed() {
    let proxy = proxy_to(chunked_server().await).await;
    let all = ask(&proxy, GET_CLOSE).await;
    let (head, body) = all.split_once("\r\n\r\n").expect("a head");
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{all}");
    assert_eq!(body.as_bytes(), CHUNKED, "extensions and trailers as sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_reach_http10_clients_decoded() {
    let proxy = proxy_to(chunked_server().await).await;
    let all = ask(&proxy, b"GET / HTTP/1.0\r\nHost: a.test\r\n\r\n").await;
    assert!(!all.contains("transfer-encoding"), "{all}");
    assert!(all.ends_with("\r\n\r\nwikipedia"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_passed_through_still_ends_the_exchange() {
    // The bad line comes once the client has the body's start: the
    // response has begun, and can only be cut short.
    let (began_tx, began_rx) = oneshot::channel::<()>();
    let addr = server(|mut stream, _| async move {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n")
            .await
            .unwrap();
        let _ = began_rx.await;
        stream.write_all(b"zz\r\n").await.unwrap();
        let _ = stream.read(&mut [0u8; 64]).await;
    })
    .await;
    let proxy = proxy_to(addr).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    assert!(read_until(&mut client, &mut received, b"wiki\r\n").await);
    began_tx.send(()).unwrap();
    read_to_close(&mut client, &mut received).await;
    let all = text(&received);
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(
        !all.contains("zz"),
        "the bad chunk line is not passed on: {all}"
    );
    assert!(
        !all.ends_with("0\r\n\r\n"),
        "the body must not look complete: {all}"
    );
}

/// A server whose chunked body is broken from its first line, sent with
/// the head.
async fn broken_chunks_server() -> SocketAddr {
    answering(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_broken_from_its_first_chunk_is_a_bad_gateway() {
    let proxy = proxy_to(broken_chunks_server().await).await;
    let all = ask(&proxy, GET_CLOSE).await;
    assert!(all.starts_with("HTTP/1.1 502 "), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_whose_body_is_broken_from_the_start_goes_to_another_server() {
    let broken = broken_chunks_server().await;
    let healthy = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let proxy = proxy_to_all(&[broken, healthy]).await;
    let all = ask(&proxy, GET_CLOSE).await;
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\nok"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_listed_in_connection_still_frames_the_body() {
    // `Connection` names hop-by-hop fields to remove, but the body's own
    // length is not one: without it the client could not find the end.
    let all = one_exchange(
        &[b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok"],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = all.split_once("\r\n\r\n").expect("a head");
    assert!(head.contains("\r\nContent-Length: 2"), "{all}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("connection: content-length"),
        "{all}"
    );
    assert_eq!(body, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_resets_an_http10_client() {
    // An HTTP/1.0 client reads the body until the close: a FIN would tell
    // it the body was whole. A reset says it was not.
    let addr = server(|mut stream, _| async move {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await
            .unwrap();
        // Closed with the body unfinished.
    })
    .await;
    let proxy = proxy_to(addr).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.0\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received))
        .await
        .expect("the connection was not closed within 10 s");
    let error = ended.expect_err("the transfer ended cleanly");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_names_keep_their_case_both_ways() {
    let (request_tx, request_rx) = oneshot::channel::<String>();
    let addr = server(|mut stream, request| async move {
        request_tx.send(text(&request)).unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nX-Server-CaSe: v\r\nContent-Length: 2\r\nETag: \"e\"\r\n\r\nok")
            .await
            .unwrap();
        let _ = stream.read(&mut [0u8; 64]).await;
    })
    .await;
    let proxy = proxy_to(addr).await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(
            b"GET / HTTP/1.1\r\nHOST: a.test\r\nX-MiXeD: 1\r\nuser-AGENT: t\r\n\
              X-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let upstream = request_rx.await.unwrap();
    for line in [
        "\r\nHOST: a.test\r\n",
        "\r\nX-MiXeD: 1\r\n",
        "\r\nuser-AGENT: t\r\n",
    ] {
        assert!(upstream.contains(line), "{line:?} not in {upstream}");
    }
    // Replaced by sluice, so spelled as sluice spells it.
    assert!(
        upstream.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{upstream}"
    );
    let mut received = Vec::new();
    read_to_close(&mut client, &mut received).await;
    let all = text(&received);
    for line in [
        "\r\nX-Server-CaSe: v\r\n",
        "\r\nContent-Length: 2\r\n",
        "\r\nETag: \"e\"\r\n",
    ] {
        assert!(all.contains(line), "{line:?} not in {all}");
    }
    assert!(all.contains("\r\nconnection: close\r\n"), "{all}");
}

/// A server's fields reach an HTTP/1.1 client in the order sent, repeated
/// names where they were (not gathered as a header map would), hop-by-hop
/// ones and those its Connection lists left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_fields_keep_their_order() {
    let all = one_exchange(
        &[
            b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nConnection: keep-alive, X-Hop\r\n\
            X-Middle: m\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nset-cookie: b=2\r\n\
            Content-Length: 2\r\n\r\nok",
        ],
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let head = all.split("\r\n\r\n").next().unwrap();
    let names: Vec<&str> = head
        .lines()
        .skip(1)
        .map(|line| line.split(':').next().unwrap())
        .filter(|name| !name.eq_ignore_ascii_case("date"))
        .collect();
    assert_eq!(
        names,
        [
            "Set-Cookie",
            "X-Middle",
            "set-cookie",
            "Content-Length",
            "connection"
        ],
        "{all}"
    );
    assert!(all.ends_with("\r\n\r\nok"), "{all}");
}

/// A pooled connection idle for the upstream's `keepalive_timeout` is
/// closed even when no further request comes to take it or return another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pooled_connection_is_closed_after_keepalive_timeout() {
    let (closed_tx, closed_rx) = oneshot::channel();
    let server = server(move |mut stream, _| async move {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
        let answered = tokio::time::Instant::now();
        // The proxy's close (or 20 s of nothing) ends this read.
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut [0u8; 64])).await;
        let _ = closed_tx.send((read, answered.elapsed()));
    })
    .await;
    let proxy = Proxy::start(
        &Config::new()
            .listener_with(|l| l.set("upstream", "web"))
            .upstream("web", |u| u.set("keepalive_timeout", "1s").server(server))
            .toml(),
    )
    .await;
    let answer = ask(&proxy, GET_CLOSE).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (read, after) = closed_rx.await.expect("the server's task ends");
    assert!(
        matches!(read, Ok(Ok(0))),
        "the pooled connection was not closed: {read:?} after {after:?}"
    );
    assert!(after >= Duration::from_secs(1), "closed after {after:?}");
}
