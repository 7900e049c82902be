//! The core request path through the real binary: smooth weighted
//! round-robin, backup and down servers, routing by host and path, and the
//! `worker_threads` setting.

mod support;

use std::time::Duration;

use support::{client::*, proxy::*, upstream::*};

/// A listener on a free port in front of upstream `web`, plus `rest`.
fn config(rest: &str) -> String {
    format!(
        "[[listener]]\nlisten = \"127.0.0.1:{}\"\nupstream = \"web\"\n\n{rest}",
        free_port()
    )
}

fn weighted(upstream: &str, servers: &[(&MockUpstream, u32)]) -> String {
    servers
        .iter()
        .map(|(s, w)| {
            format!(
                "[[upstream.{upstream}.server]]\naddress = \"{}\"\nweight = {w}\n",
                s.address()
            )
        })
        .collect()
}

/// Sends `n` requests one after another and returns who served each.
async fn served_by(proxy: &Proxy, n: usize) -> Vec<String> {
    let client = Client::new();
    let mut names = Vec::new();
    for _ in 0..n {
        let resp = client.get(&proxy.url("/")).await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        names.push(resp.body);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_turns_in_config_order() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let c = MockUpstream::named("c").start().await;
    let proxy = Proxy::start(&config(&server_entries("web", &[&a, &b, &c]))).await;

    assert_eq!(served_by(&proxy, 6).await, ["a", "b", "c", "a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_follow_nginx_smooth_sequence() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let c = MockUpstream::named("c").start().await;
    let proxy = Proxy::start(&config(&weighted("web", &[(&a, 5), (&b, 1), (&c, 1)]))).await;

    // nginx's smooth weighted round-robin, twice over: never a a a a a b c.
    let period = ["a", "a", "b", "a", "c", "a", "a"];
    let expected: Vec<&str> = period.iter().chain(&period).copied().collect();
    assert_eq!(served_by(&proxy, 14).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_when_every_primary_is_down() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let spare = MockUpstream::named("spare").start().await;
    let with_primaries = config(&format!(
        "[[upstream.web.server]]\naddress = \"{}\"\n\
         [[upstream.web.server]]\naddress = \"{}\"\ndown = true\n\
         [[upstream.web.server]]\naddress = \"{}\"\nbackup = true\n",
        a.address(),
        b.address(),
        spare.address()
    ));
    let proxy = Proxy::start(&with_primaries).await;
    assert_eq!(served_by(&proxy, 4).await, ["a", "a", "a", "a"]);
    assert_eq!((b.count(), spare.count()), (0, 0));
    drop(proxy);

    let all_down = config(&format!(
        "[[upstream.web.server]]\naddress = \"{}\"\ndown = true\n\
         [[upstream.web.server]]\naddress = \"{}\"\ndown = true\n\
         [[upstream.web.server]]\naddress = \"{}\"\nbackup = true\n",
        a.address(),
        b.address(),
        spare.address()
    ));
    let proxy = Proxy::start(&all_down).await;
    assert_eq!(served_by(&proxy, 3).await, ["spare", "spare", "spare"]);
    assert_eq!((a.count(), b.count()), (4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_takes_over_when_the_primary_fails() {
    let a = MockUpstream::named("a").start().await;
    let spare = MockUpstream::named("spare").start().await;
    let proxy = Proxy::start(&config(&format!(
        "[upstream.web]\nmax_fails = 1\nfail_timeout = \"60s\"\n\
         [[upstream.web.server]]\naddress = \"{}\"\n\
         [[upstream.web.server]]\naddress = \"{}\"\nbackup = true\n",
        a.address(),
        spare.address()
    )))
    .await;
    assert_eq!(get(&proxy.url("/")).await.body, "a");
    a.stop().await;
    // The failed connect is retried on the backup; later requests skip `a`.
    assert_eq!(served_by(&proxy, 3).await, ["spare", "spare", "spare"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_server_never_gets_a_request() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&format!(
        "[[upstream.web.server]]\naddress = \"{}\"\ndown = true\n\
         [[upstream.web.server]]\naddress = \"{}\"\n",
        a.address(),
        b.address()
    )))
    .await;
    assert_eq!(served_by(&proxy, 5).await, ["b"; 5]);
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
    let mut upstreams = String::new();
    for (name, mock) in names.iter().zip(&mocks) {
        upstreams.push_str(&server_entries(name, &[mock]));
    }
    let toml = format!(
        "[[listener]]\nlisten = \"127.0.0.1:{}\"\nupstream = \"dflt\"\n\
         [[listener.route]]\nhost = \"api.example.com\"\npath_prefix = \"/v2/\"\nupstream = \"both\"\n\
         [[listener.route]]\nhost = \"api.example.com\"\nupstream = \"api\"\n\
         [[listener.route]]\nhost = \"*.example.org\"\nupstream = \"wild\"\n\
         [[listener.route]]\npath_prefix = \"/static/\"\nupstream = \"stat\"\n\
         [[listener.route]]\npath_prefix = \"/\"\nhost = \"api.example.com\"\nupstream = \"dflt\"\n\
         {upstreams}",
        free_port()
    );
    let proxy = Proxy::start(&toml).await;
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
    let toml = format!(
        "[[listener]]\nlisten = \"127.0.0.1:{}\"\n\
         [[listener.route]]\nhost = \"a.test\"\nupstream = \"web\"\n{}",
        free_port(),
        server_entries("web", &[&a])
    );
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
    let few = Proxy::start(&config(&format!(
        "[global]\nworker_threads = 1\n{}",
        server_entries("web", &[&a])
    )))
    .await;
    let many = Proxy::start(&config(&format!(
        "[global]\nworker_threads = 7\n{}",
        server_entries("web", &[&a])
    )))
    .await;
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
    let proxy = Proxy::start(&config(&server_entries("web", &[&a]))).await;

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
    let proxy = Proxy::start(&config(&server_entries("web", &[&a]))).await;

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
    assert_eq!(served_by(&proxy, 2).await, ["a", "a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_access_log_line_per_request() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(&format!(
        "[log]\nformat = \"json\"\n{}",
        server_entries("web", &[&a])
    )))
    .await;
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
