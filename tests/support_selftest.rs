//! The harness tested on its own, without the proxy: every mock is hit
//! directly, so a failure here is the harness's fault, not sluice's.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use http::Method;
use support::{client::*, config::*, proxy::*, upstream::*};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_answers_with_its_name() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;

    let resp = get(&format!("http://{}/x", a.address())).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "a");
    assert_eq!(resp.upstream(), Some("a"));
    assert_eq!(get(&format!("http://{}/", b.address())).await.body, "b");
    assert_eq!((a.count(), b.count()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_records_every_request() {
    let a = MockUpstream::named("a").start().await;
    let url = format!("http://{}/submit?q=1", a.address());

    request(Method::POST, &url, &[("x-test", "yes")], "payload").await;
    let seen = a.last_request().expect("a request was recorded");
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri, "/submit?q=1");
    assert_eq!(seen.header("x-test"), Some("yes"));
    assert_eq!(seen.body, "payload");
    assert_eq!(seen.peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));

    let client = Client::new();
    let posts = (0..20).map(|i| client.request(Method::PUT, &url, &[], format!("{i}")));
    futures_util::future::join_all(posts).await;
    assert_eq!(a.count(), 21);
    a.clear();
    assert_eq!(a.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_dumps_the_request_head() {
    let a = MockUpstream::named("a").echo().start().await;
    let resp = get_with(&format!("http://{}/e", a.address()), &[("x-who", "me")]).await;
    assert!(resp.body.starts_with("GET /e\n"), "{}", resp.body);
    assert!(resp.body.contains("x-who: me\n"), "{}", resp.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_routes_change_at_runtime() {
    let c = MockUpstream::named("c")
        .status(503)
        .route("/healthz", 200)
        .start()
        .await;
    let url = |path: &str| format!("http://{}{path}", c.address());

    assert_eq!(get(&url("/")).await.status, 503);
    assert_eq!(get(&url("/healthz")).await.status, 200);
    c.set_status(201);
    c.set_route_status("/healthz", 500);
    assert_eq!(get(&url("/")).await.status, 201);
    assert_eq!(get(&url("/healthz")).await.status, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_holds_the_answer_and_counts_in_flight() {
    let b = MockUpstream::named("b")
        .delay(Duration::from_millis(300))
        .start()
        .await;
    let url = format!("http://{}/", b.address());

    let started = Instant::now();
    let slow = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    poll_until(
        Duration::from_secs(2),
        "the request is in flight",
        async || b.in_flight() == 1,
    )
    .await;
    assert_eq!(slow.await.unwrap().body, "b");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(b.in_flight(), 0);

    b.set_delay(Duration::ZERO);
    let started = Instant::now();
    get(&url).await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_reads_the_request_and_never_answers() {
    let d = MockUpstream::named("d").hang().start().await;
    let url = format!("http://{}/", d.address());
    let hung = tokio::spawn(async move { try_get(&url).await });

    poll_until(
        Duration::from_secs(2),
        "the hung request is recorded",
        async || d.count() == 1 && d.in_flight() == 1,
    )
    .await;
    assert!(!hung.is_finished());
    d.stop().await;
    assert!(hung.await.unwrap().is_err(), "stop closes open connections");
    assert_eq!(d.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_refuses_and_restart_serves_on_the_same_port() {
    let a = MockUpstream::named("a").start().await;
    let url = format!("http://{}/", a.address());
    let client = Client::new();
    client.get(&url).await;

    a.stop().await;
    assert!(tokio::net::TcpStream::connect(a.addr()).await.is_err());
    assert!(client.try_get(&url).await.is_err());

    a.restart().await;
    assert_eq!(get(&url).await.body, "a");
    assert_eq!(a.count(), 2, "the record survives a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mode_fails_the_client_after_reading_the_request() {
    let e = MockUpstream::named("e").reset_after_request().start().await;
    let url = format!("http://{}/r", e.address());

    let result = try_request(Method::POST, &url, &[], "body").await;
    assert!(result.is_err(), "got {result:?}");
    assert_eq!(e.last_request().unwrap().body, "body");

    e.set_reset(false);
    assert_eq!(get(&url).await.body, "e");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_mode_sends_exactly_its_bytes() {
    let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello";
    let x = MockUpstream::raw("x", bytes).start().await;

    let received = raw_request(x.addr(), b"GET /raw HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(received, bytes);
    assert_eq!(raw_status(&received), Some(200));
    assert_eq!(x.last_request().unwrap().uri, "/raw");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_fails_the_client() {
    let t = MockUpstream::named("t").truncate_body().start().await;
    let result = try_get(&format!("http://{}/", t.address())).await;
    assert!(result.is_err(), "got {result:?}");
    assert_eq!(t.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_can_choose_its_source_address() {
    let a = MockUpstream::named("a").start().await;
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    let resp = get_from(source, &format!("http://{}/ip", a.address())).await;
    assert_eq!(resp.body, "a");
    let seen = a.last_request().unwrap();
    assert_eq!(seen.peer.ip(), source);
    assert_eq!(seen.header("host"), Some(a.address().as_str()));
}

#[test]
fn free_port_is_free() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_builder_names_each_mock() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let toml = Config::new()
        .upstream("web", |u| u.servers(&[&a, &b]))
        .toml();
    let parsed: toml::Table = toml.parse().unwrap();
    let servers = parsed["upstream"]["web"]["server"].as_array().unwrap();
    assert_eq!(servers[0]["address"].as_str(), Some(a.address().as_str()));
    assert_eq!(servers[1]["address"].as_str(), Some(b.address().as_str()));
}

#[test]
fn proxy_listeners_come_from_the_config() {
    let (public, internal, admin) = (free_port(), free_port(), free_port());
    let proxy = Proxy::spawn(
        &Config::new()
            .set("admin", "listen", format!("127.0.0.1:{admin}"))
            .listener_with(|l| l.set("listen", format!("0.0.0.0:{public}")))
            .listener_with(|l| l.set("listen", format!("127.0.0.1:{internal}")))
            .toml(),
    );
    assert_eq!(proxy.addr().to_string(), format!("127.0.0.1:{public}"));
    assert_eq!(proxy.listeners().len(), 2);
    assert_eq!(proxy.url("/p"), format!("http://127.0.0.1:{public}/p"));
    assert_eq!(
        proxy.admin_url("/api/status"),
        format!("http://127.0.0.1:{admin}/api/status")
    );
    assert!(proxy.config_path().starts_with(proxy.dir()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "sluice exited")]
async fn proxy_start_reports_an_early_exit() {
    let toml = Config::new()
        .listener_with(|l| l.set("no_such_key", true))
        .toml();
    Proxy::start(&toml).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_exit_is_observed() {
    let mut proxy = Proxy::spawn("not toml [");
    assert!(proxy.wait_exit(Duration::from_secs(5)).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_a_hang_answers_the_waiting_requests() {
    let d = MockUpstream::named("d").hang().start().await;
    let url = format!("http://{}/", d.address());
    let hung = tokio::spawn(async move { try_get(&url).await });

    poll_until(Duration::from_secs(2), "the request hangs", async || {
        d.in_flight() == 1
    })
    .await;
    d.set_status(202);
    d.set_hang(false);
    let resp = hung.await.unwrap().expect("released request is answered");
    assert_eq!((resp.status.as_u16(), resp.body.as_str()), (202, "d"));
}
