//! The core request path through the real binary: round-robin, down
//! servers, routing by host and path, and the
//! `worker_threads` setting.

mod support;

use std::time::Duration;

use support::{client::*, config::*, proxy::*, upstream::*};

/// Who served each of `n` requests to `/`, sent one after another.
async fn served(proxy: &Proxy, n: usize) -> Vec<String> {
    served_by(&Client::new(), &proxy.url("/"), n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_turns_in_config_order() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let c = MockUpstream::named("c").start().await;
    let proxy = Proxy::start(&Config::web(&[&a, &b, &c]).toml()).await;

    assert_eq!(served(&proxy, 6).await, ["a", "b", "c", "a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_server_never_gets_a_request() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let toml = Config::new()
        .listener("web")
        .upstream("web", |u| {
            u.server_with(&a, |s| s.set("down", true)).server(&b)
        })
        .toml();
    let proxy = Proxy::start(&toml).await;
    assert_eq!(served(&proxy, 5).await, ["b"; 5]);
    assert_eq!(a.count(), 0);
}

/// Routes: exact host, `*.suffix`, a path prefix, a host+path pair, and the
/// default upstream.
async fn routing_setup() -> (Proxy, [MockUpstream; 5]) {
    let names = ["api", "wild", "stat", "both", "dflt"];
    let mut mocks = Vec::new();
    for name in names {
        mocks.push(MockUpstream::named(name).start().await);
    }
    let mut config = Config::new().listener_with(|l| {
        l.set("upstream", "dflt")
            .route(|r| {
                r.set("host", "api.example.com")
                    .set("path_prefix", "/v2/")
                    .set("upstream", "both")
            })
            .route(|r| r.set("host", "api.example.com").set("upstream", "api"))
            .route(|r| r.set("host", "*.example.org").set("upstream", "wild"))
            .route(|r| r.set("path_prefix", "/static/").set("upstream", "stat"))
            .route(|r| {
                r.set("path_prefix", "/")
                    .set("host", "api.example.com")
                    .set("upstream", "dflt")
            })
    });
    for (name, mock) in names.iter().zip(&mocks) {
        config = config.upstream(name, |u| u.server(mock));
    }
    let proxy = Proxy::start(&config.toml()).await;
    let mocks: [MockUpstream; 5] = mocks.try_into().unwrap_or_else(|_| unreachable!());
    (proxy, mocks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_path_first_match_wins() {
    let (proxy, _mocks) = routing_setup().await;
    let via =
        async |host: &str, path: &str| get_with(&proxy.url(path), &[("host", host)]).await.body;

    assert_eq!(via("api.example.com", "/x").await, "api");
    assert_eq!(
        via("API.Example.COM:8080", "/x").await,
        "api",
        "host is case-insensitive, port ignored"
    );
    // The more specific route comes first in the file, so it wins...
    assert_eq!(via("api.example.com", "/v2/users").await, "both");
    // ...but only for its prefix.
    assert_eq!(via("api.example.com", "/v2").await, "api");
    assert_eq!(via("a.example.org", "/").await, "wild");
    assert_eq!(via("deep.a.example.org", "/").await, "wild");
    assert_eq!(
        via("example.org", "/").await,
        "dflt",
        "*.example.org needs a subdomain"
    );
    assert_eq!(via("other.test", "/static/app.js").await, "stat");
    // The exact host route comes before the path route.
    assert_eq!(via("api.example.com", "/static/app.js").await, "api");
    assert_eq!(via("other.test", "/staticfile").await, "dflt");
    assert_eq!(via("other.test", "/").await, "dflt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_and_no_default_is_404() {
    let a = MockUpstream::named("a").start().await;
    let toml = Config::new()
        .listener_with(|l| l.route(|r| r.set("host", "a.test").set("upstream", "web")))
        .upstream("web", |u| u.server(&a))
        .toml();
    let proxy = Proxy::start(&toml).await;
    assert_eq!(
        get_with(&proxy.url("/"), &[("host", "a.test")]).await.body,
        "a"
    );
    let resp = get_with(&proxy.url("/"), &[("host", "b.test")]).await;
    assert_eq!(resp.status, 404);
    assert_eq!(a.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_sizes_the_runtime() {
    let a = MockUpstream::named("a").start().await;
    let count_threads = |proxy: &Proxy| {
        std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let few = Proxy::start(&Config::web(&[&a]).global("worker_threads", 1).toml()).await;
    let many = Proxy::start(&Config::web(&[&a]).global("worker_threads", 7).toml()).await;
    // Serve something so the runtime is fully up, then count OS threads.
    assert_eq!(get(&few.url("/")).await.status, 200);
    assert_eq!(get(&many.url("/")).await.status, 200);
    let (few_threads, many_threads) = (count_threads(&few), count_threads(&many));
    assert!(
        many_threads >= 8,
        "7 workers + main thread, saw {many_threads}"
    );
    // One worker runs on the main thread (a current-thread runtime); seven
    // are seven threads of their own.
    assert_eq!(
        many_threads - few_threads,
        7,
        "seven more threads: {few_threads} vs {many_threads} threads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_through_intact() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    // Larger than any single read: many frames with a Content-Length.
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let resp = request(http::Method::POST, &proxy.url("/up"), &[], big.clone()).await;
    assert_eq!(resp.status, 200);
    let seen = a.last_request().expect("forwarded");
    assert_eq!(seen.body.len(), big.len());
    assert_eq!(seen.body, big.as_bytes());

    // Chunked, in several chunks.
    let response = raw_request(
        proxy.addr(),
        b"POST /chunks HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(
        raw_status(&response),
        Some(200),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(a.last_request().expect("forwarded").body, "hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_malformed_midway_is_400_not_502() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let response = raw_request(
        proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(
        raw_status(&response),
        Some(400),
        "{}",
        String::from_utf8_lossy(&response)
    );
    // The client's fault does not count against the server.
    assert_eq!(served(&proxy, 2).await, ["a", "a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_access_log_line_per_request() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).set("log", "format", "json").toml()).await;
    let client = Client::new();
    assert_eq!(client.get(&proxy.url("/logged?x=1")).await.status, 200);
    assert_eq!(
        client
            .get_with(&proxy.url("/"), &[("host", "")])
            .await
            .status,
        400
    );

    let access_lines = || -> Vec<serde_json::Value> {
        proxy
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "sluice::access")
            .collect()
    };
    poll_until(
        Duration::from_secs(30),
        "two access log lines",
        async || access_lines().len() >= 2,
    )
    .await;
    let lines = access_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let served = &lines[0];
    assert_eq!(served["method"], "GET");
    assert_eq!(served["path"], "/logged");
    assert_eq!(served["status"], 200);
    assert_eq!(served["upstream"], "web");
    assert_eq!(served["server"], a.address());
    assert_eq!(served["bytes"], 1, "the body `a`");
    assert!(served["duration_ms"].is_number(), "{served}");
    let refused = &lines[1];
    assert_eq!(refused["status"], 400);
    assert_eq!(refused["upstream"], "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quieter_log_level_keeps_the_access_log() {
    // As nginx's access log beside its error log: `level = "warn"` quiets
    // sluice's own messages, `access_log` alone switches the access lines.
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(
        &Config::web(&[&a])
            .set("log", "format", "json")
            .set("log", "level", "warn")
            .toml(),
    )
    .await;
    assert_eq!(get(&proxy.url("/quiet")).await.status, 200);
    poll_until(Duration::from_secs(30), "an access log line", async || {
        proxy.stderr().lines().any(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|v| v["target"] == "sluice::access" && v["path"] == "/quiet")
        })
    })
    .await;
    let other_info = proxy
        .stderr()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["level"] == "INFO" && v["target"] != "sluice::access")
        .count();
    assert_eq!(other_info, 0, "{}", proxy.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_a_waiting_request_frees_its_server_and_is_logged_499() {
    // An abandoned long poll: the server has not answered, the client
    // closes. As nginx, sluice gives the request up (its server connection
    // closed, its in-flight count released) and logs 499.
    use tokio::io::AsyncWriteExt;
    let a = MockUpstream::named("a").hang().start().await;
    let proxy = Proxy::start(
        &Config::web(&[&a])
            .admin()
            .set("log", "format", "json")
            .toml(),
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    client
        .write_all(b"GET /poll HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    poll_until(
        Duration::from_secs(10),
        "the server has the request",
        async || a.in_flight() == 1,
    )
    .await;
    drop(client);

    let in_flight = async || {
        let status = get(&proxy.admin_url("/api/status")).await.body;
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["upstreams"]["web"]["servers"][0]["in_flight"].as_u64()
    };
    poll_until(
        Duration::from_secs(10),
        "the request is given up",
        async || in_flight().await == Some(0),
    )
    .await;
    poll_until(Duration::from_secs(10), "a 499 access line", async || {
        proxy.stderr().lines().any(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|v| v["target"] == "sluice::access" && v["status"] == 499)
        })
    })
    .await;
    a.set_hang(false);
}
