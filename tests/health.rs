//! Failure handling end to end: passive health (max_fails/fail_timeout with a
//! half-open trial), active health checks, retries and their budget, and the
//! status codes a client sees when servers misbehave.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use support::{admin::*, client::*, config::*, proxy::*, upstream::*};

const WAIT: Duration = Duration::from_secs(15);

/// One listener in front of upstream `web`: `servers`, with the keys
/// `settings` adds.
fn config(servers: &[&MockUpstream], settings: impl FnOnce(Upstream) -> Upstream) -> String {
    Config::new()
        .set("log", "level", "info")
        .listener("web")
        .upstream("web", |u| settings(u).servers(servers))
        .toml()
}

/// Client requests a mock saw, health checks left out.
fn client_requests(mock: &MockUpstream) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.uri.path() != "/healthz")
        .count()
}

/// GETs from a few concurrent clients until stopped, counting failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(url: String, clients: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.clone());
                tokio::spawn(async move {
                    let client = Client::new();
                    while !stop.load(Ordering::Relaxed) {
                        match client.try_get(&url).await {
                            Ok(resp) if resp.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                            Ok(resp) => {
                                eprintln!("client saw {}", resp.status);
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(e) => {
                                eprintln!("client saw an error: {e}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the clients: (successes, failures).
    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("traffic task");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_is_invisible_to_clients_and_comes_back_after_fail_timeout() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let c = MockUpstream::named("c").start().await;
    let proxy = Proxy::start(&config(&[&a, &b, &c], |u| {
        u.set("max_fails", 1).set("fail_timeout", "3s")
    }))
    .await;

    let traffic = Traffic::start(proxy.url("/"), 4);
    poll_until(WAIT, "b serves traffic", async || b.count() > 5).await;
    b.stop().await;
    poll_until(WAIT, "the proxy marks b failed", async || {
        proxy.stderr().contains("server marked failed")
    })
    .await;
    // Back at once, but the proxy must leave it alone for fail_timeout.
    b.restart().await;
    let marked = Instant::now();
    let before = b.count();
    let served = a.count() + c.count();
    poll_until(WAIT, "a and c serve 50 more requests", async || {
        a.count() + c.count() > served + 50
    })
    .await;
    if marked.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            b.count(),
            before,
            "b got traffic within fail_timeout of failing"
        );
    }
    // One trial after fail_timeout, then its full share again.
    poll_until(WAIT, "b gets traffic again", async || {
        b.count() >= before + 20
    })
    .await;
    let (ok, failed) = traffic.stop().await;
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(
        proxy.stderr().contains("server recovered"),
        "{}",
        proxy.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_an_unhealthy_server_out_and_bring_it_back() {
    let a = MockUpstream::named("a")
        .route("/healthz", 200)
        .start()
        .await;
    let b = MockUpstream::named("b")
        .route("/healthz", 200)
        .start()
        .await;
    let proxy = Proxy::start(&config(&[&a, &b], |u| {
        u.table("health_check", "path", "/healthz")
            .table("health_check", "interval", "200ms")
            .table("health_check", "timeout", "1s")
            .table("health_check", "fails", 2)
            .table("health_check", "passes", 2)
            .table("health_check", "status", "200-299")
    }))
    .await;

    poll_until(WAIT, "both servers are checked", async || {
        a.count() >= 2 && b.count() >= 2
    })
    .await;
    let check = b.last_request().expect("a health check");
    assert_eq!(check.uri.path(), "/healthz");
    assert_eq!(check.header("user-agent"), Some("sluice-health"));
    assert_eq!(check.header("host"), Some(b.address().as_str()));

    b.set_route_status("/healthz", 503);
    // interval × fails is 400 ms; the rest is slack for a loaded machine.
    poll_until(
        Duration::from_secs(10),
        "b is marked unhealthy",
        async || proxy.stderr().contains("healthy -> unhealthy: status 503"),
    )
    .await;
    let out = client_requests(&b);
    let client = Client::new();
    for _ in 0..20 {
        let resp = client.get(&proxy.url("/")).await;
        assert_eq!(resp.upstream(), Some("a"));
    }
    assert_eq!(
        client_requests(&b),
        out,
        "an unhealthy server got client traffic"
    );

    b.set_route_status("/healthz", 200);
    poll_until(WAIT, "b is healthy again", async || {
        proxy.stderr().contains("unhealthy -> healthy")
    })
    .await;
    poll_until(WAIT, "b serves clients again", async || {
        client.get(&proxy.url("/")).await.upstream() == Some("b")
    })
    .await;
    let log = proxy.stderr();
    assert_eq!(log.matches("healthy -> unhealthy").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_post_is_not_retried_but_a_reset_get_is() {
    let a = MockUpstream::named("a").reset_after_request().start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&a, &b], |u| {
        u.set("max_fails", 0).set("tries", 3)
    }))
    .await;

    let mut reset = 0;
    let mut served = 0;
    for _ in 0..6 {
        let resp = request(Method::POST, &proxy.url("/order"), &[], "item=1").await;
        match resp.status.as_u16() {
            502 => reset += 1,
            200 => served += 1,
            other => panic!("POST answered {other}"),
        }
    }
    assert!(reset > 0, "no POST reached the resetting server");
    assert_eq!(
        a.count(),
        reset,
        "a POST was sent to the resetting server twice"
    );
    assert_eq!(b.count(), served, "a failed POST was retried on b");

    a.clear();
    b.clear();
    for _ in 0..6 {
        let resp = get(&proxy.url("/page")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.upstream(), Some("b"));
    }
    assert!(a.count() > 0, "no GET reached the resetting server first");
    assert_eq!(b.count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_post_body_is_replayed_after_a_connect_failure() {
    let b = MockUpstream::named("b").start().await;
    let gone = MockUpstream::named("gone").start().await;
    gone.stop().await;
    let proxy = Proxy::start(&config(&[&gone, &b], |u| u.set("max_fails", 0))).await;
    for i in 0..4 {
        let body = format!("payload-{i}");
        let resp = request(Method::POST, &proxy.url("/p"), &[], body.clone()).await;
        assert_eq!(resp.status, 200);
        assert_eq!(b.last_request().expect("b got the POST").body, body);
    }
    assert_eq!(b.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_gives_504_and_a_post_reaches_it_once() {
    let h = MockUpstream::named("h").hang().start().await;
    let proxy = Proxy::start(&config(&[&h], |u| u.set("response_timeout", "500ms"))).await;

    let resp = request(Method::POST, &proxy.url("/slow"), &[], "x").await;
    assert_eq!(resp.status, 504);
    assert_eq!(h.count(), 1);
    assert_eq!(get(&proxy.url("/slow")).await.status, 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_server_down_clients_get_a_fast_503_then_recovery() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&a, &b], |u| {
        u.set("max_fails", 1).set("fail_timeout", "2s")
    }))
    .await;
    assert_eq!(get(&proxy.url("/")).await.status, 200);

    a.stop().await;
    b.stop().await;
    let client = Client::new();
    poll_until(WAIT, "the proxy answers 503", async || {
        client.get(&proxy.url("/")).await.status == 503
    })
    .await;
    let started = Instant::now();
    let resp = client.get(&proxy.url("/")).await;
    let took = started.elapsed();
    assert!(
        resp.status == 503 || resp.status == 502,
        "dead servers answered {}",
        resp.status
    );
    assert!(took < Duration::from_secs(1), "the 503 took {took:?}");

    a.restart().await;
    poll_until(WAIT, "a serves again", async || {
        client.get(&proxy.url("/")).await.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_body_aborts_the_client_transfer_and_is_not_retried() {
    let cut = MockUpstream::named("cut").truncate_body().start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&cut, &b], |u| u.set("max_fails", 0))).await;
    let results = [
        try_get(&proxy.url("/")).await,
        try_get(&proxy.url("/")).await,
    ];
    assert_eq!(
        results.iter().filter(|r| r.is_err()).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        (cut.count(), b.count()),
        (1, 1),
        "the truncated response was retried"
    );

    let chunked = MockUpstream::raw(
        "chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .start()
    .await;
    let proxy = Proxy::start(&config(&[&chunked], |u| u)).await;
    let result = try_get(&proxy.url("/")).await;
    assert!(
        result.is_err(),
        "a cut chunked body ended cleanly: {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_retry_budget() {
    let bad = MockUpstream::named("bad")
        .reset_after_request()
        .start()
        .await;
    // Slow, so every request is still in flight when the failures come.
    let slow = MockUpstream::named("slow")
        .delay(Duration::from_secs(2))
        .start()
        .await;
    // No reserve: the deposits alone are the budget.
    let proxy = Proxy::start(&config(&[&bad, &slow], |u| {
        u.set("max_fails", 0)
            .set("retry_budget", 0.2)
            .set("retry_min_per_sec", 0)
    }))
    .await;

    const REQUESTS: usize = 20;
    let client = Client::new();
    let url = proxy.url("/");
    let results = futures_util::future::join_all((0..REQUESTS).map(|_| client.try_get(&url))).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status == 200))
        .count();
    let bad_gateway = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status == 502))
        .count();
    assert_eq!(ok + bad_gateway, REQUESTS, "{results:?}");
    assert_eq!(slow.count(), ok);
    // Every request tries `bad` at most once, and every retry goes to `slow`.
    let retries = bad.count() + slow.count() - REQUESTS;
    // 20 requests deposit 0.2 of a token each: at most 4 retries.
    assert!(retries >= 1, "no request was retried");
    assert!(retries <= 4, "{retries} retries went past the budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_on_status_retries_idempotent_requests_only() {
    let sick = MockUpstream::named("sick").status(503).start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&sick, &b], |u| {
        u.set("max_fails", 0).set("fail_on_status", [503])
    }))
    .await;
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/")).await.status, 200);
    }
    assert!(sick.count() > 0);
    sick.clear();
    let url = proxy.url("/");
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..4).map(|_| request(Method::POST, &url, &[], "x")))
            .await
            .iter()
            .map(|r| r.status.as_u16())
            .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        sick.count(),
        "a POST answered 503 was retried: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_up_to_64_kib_are_retried_and_larger_ones_are_not() {
    let a = MockUpstream::named("a").reset_after_request().start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&a, &b], |u| u.set("max_fails", 0))).await;

    let small = "s".repeat(64 * 1024);
    for _ in 0..4 {
        let resp = request(Method::PUT, &proxy.url("/doc"), &[], small.clone()).await;
        assert_eq!(resp.status, 200);
        assert_eq!(
            b.last_request().expect("b got the PUT").body.len(),
            small.len()
        );
    }
    assert!(a.count() > 0, "no PUT reached the resetting server first");

    a.clear();
    b.clear();
    let large = "l".repeat(64 * 1024 + 1);
    let mut failed = 0;
    for _ in 0..4 {
        let resp = request(Method::PUT, &proxy.url("/doc"), &[], large.clone()).await;
        if resp.status == 502 {
            failed += 1;
        } else {
            assert_eq!(resp.status, 200);
        }
    }
    assert!(failed > 0, "no large PUT reached the resetting server");
    assert_eq!(a.count(), failed, "a streamed body was sent twice");
    assert_eq!(b.count(), 4 - failed, "a streamed body was retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_arrive_whole_whether_buffered_or_streamed() {
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&b], |u| u)).await;
    for chunks in [1, 3] {
        let chunk = "c".repeat(40 * 1024);
        let mut raw = String::from(
            "POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for _ in 0..chunks {
            raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
        }
        raw.push_str("0\r\n\r\n");
        let response = raw_request(proxy.addr(), raw.as_bytes()).await;
        assert_eq!(raw_status(&response), Some(200));
        let seen = b.last_request().expect("b got the POST");
        assert_eq!(seen.body.len(), chunks * chunk.len(), "{chunks} chunks");
    }
}

/// Sends a POST of `pieces` × `piece` bytes, `gap` apart, announcing
/// `announced` bytes; returns the status of the answer.
async fn slow_upload(
    proxy: &Proxy,
    announced: usize,
    pieces: usize,
    piece: usize,
    gap: Duration,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut client = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
    );
    client.write_all(head.as_bytes()).await.unwrap();
    for i in 0..pieces {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        if client.write_all(&vec![b'x'; piece]).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, client.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within {WAIT:?}");
    raw_status(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_that_moves_is_not_cut_short_by_response_timeout() {
    // Five pieces 400 ms apart: the whole upload takes longer than the
    // response timeout, but no wait in it does. The body is larger than
    // what sluice buffers for a retry, so it streams to the server.
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(&[&a], |u| u.set("response_timeout", "1s"))).await;
    let status = slow_upload(&proxy, 5 * 40_000, 5, 40_000, Duration::from_millis(400)).await;
    assert_eq!(status, Some(200));
    assert_eq!(a.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_slow_upload_that_moves_is_not_cut_short_by_response_timeout() {
    // The same with a body small enough to be read whole before a server is
    // tried: each wait for more is bounded, not the whole upload.
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(&[&a], |u| u.set("response_timeout", "1s"))).await;
    let status = slow_upload(&proxy, 5 * 20, 5, 20, Duration::from_millis(400)).await;
    assert_eq!(status, Some(200));
    assert_eq!(a.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_its_body_gets_408_and_no_server_is_blamed() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(
        &Config::new()
            .admin()
            .listener("web")
            .upstream("web", |u| {
                u.set("response_timeout", "500ms")
                    .set("max_fails", 1)
                    .servers(&[&a, &b])
            })
            .toml(),
    )
    .await;
    // Half of the announced body (more than sluice buffers), then nothing.
    let status = slow_upload(&proxy, 200_000, 1, 100_000, Duration::ZERO).await;
    assert_eq!(status, Some(408));
    for server in [&a, &b] {
        let entry = server_status(&proxy, &server.address()).await;
        assert_eq!(entry["failures"], 0, "{entry}");
        assert_eq!(entry["state"], "up", "{entry}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_that_never_comes_whole_gets_408_and_never_reaches_a_server() {
    // Small enough to be read whole before a server is tried (for a
    // retry): its wait is bounded too, or a stalled client would hold the
    // request for ever.
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(&[&a], |u| u.set("response_timeout", "500ms"))).await;
    let status = slow_upload(&proxy, 100, 1, 10, Duration::ZERO).await;
    assert_eq!(status, Some(408));
    assert_eq!(a.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_in_a_streamed_upload_within_response_timeout_is_no_timeout() {
    // A first piece larger than what is buffered for retries, so the body
    // streams to the server, then a pause longer than a second (when
    // sluice starts watching a waiting client) but within the timeout.
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(&[&a], |u| u.set("response_timeout", "4s"))).await;
    let status = slow_upload(&proxy, 2 * 70_000, 2, 70_000, Duration::from_millis(1600)).await;
    assert_eq!(status, Some(200));
    assert_eq!(a.count(), 1);
}
