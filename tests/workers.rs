//! `worker_threads = 2` through the real binary: two workers, each with its
//! own socket on every listening address, both accepting; reloads add and
//! remove a listener in both; `max_conns` stays exact across them; and
//! graceful shutdown waits for the connections of both.
//!
//! The kernel spreads connections over `SO_REUSEPORT` sockets by a hash of
//! the connection's addresses, so a test that needs both workers opens
//! enough fresh connections (32: all on one worker has odds of 2^-31).

mod support;

use std::time::Duration;

use tokio::net::TcpStream;

use support::{admin::*, client::*, config::*, proxy::*, upstream::*};

const WAIT: Duration = Duration::from_secs(10);
const WORKERS: usize = 2;
/// Fresh connections opened where both workers must take some.
const SPREAD: usize = 32;

/// `sluice_worker_connections_total`, by worker.
async fn accepted(proxy: &Proxy) -> Vec<u64> {
    let resp = get(&proxy.admin_url("/metrics")).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let mut by_worker: Vec<(usize, u64)> = scrape(&resp.body)
        .samples
        .iter()
        .filter(|s| s.metric == "sluice_worker_connections_total")
        .map(|s| {
            let worker = s.labels.get("worker").expect("a worker label");
            // prometheus-parse reads an OpenMetrics counter as untyped.
            let (prometheus_parse::Value::Counter(n) | prometheus_parse::Value::Untyped(n)) =
                s.value
            else {
                panic!("{s:?} is not a counter");
            };
            (worker.parse().expect("a worker number"), n as u64)
        })
        .collect();
    by_worker.sort_unstable();
    let workers: Vec<usize> = by_worker.iter().map(|(w, _)| *w).collect();
    assert_eq!(workers, (0..WORKERS).collect::<Vec<_>>(), "{}", resp.body);
    by_worker.into_iter().map(|(_, n)| n).collect()
}

/// Every worker accepted more connections in `after` than in `before`.
fn all_accepted(before: &[u64], after: &[u64]) -> bool {
    before.iter().zip(after).all(|(b, a)| a > b)
}

fn two_workers() -> Config {
    Config::new().global("worker_threads", WORKERS).admin()
}

/// `SPREAD` GETs at once, each on a fresh connection.
async fn spread_gets(url: &str) -> Vec<Resp> {
    futures_util::future::join_all((0..SPREAD).map(|_| get(url))).await
}

#[tokio::test]
async fn both_workers_accept_and_serve() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(
        &two_workers()
            .listener("web")
            .upstream("web", |u| u.server(&a))
            .toml(),
    )
    .await;
    let before = accepted(&proxy).await;
    for resp in spread_gets(&proxy.url("/")).await {
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.served_by(), "a");
    }
    let after = accepted(&proxy).await;
    assert!(all_accepted(&before, &after), "{before:?} -> {after:?}");
    let total: u64 = after.iter().sum::<u64>() - before.iter().sum::<u64>();
    // At least: a connection made just before `before` may be counted only
    // once its worker gets round to accepting it.
    assert!(total >= SPREAD as u64, "{before:?} -> {after:?}");
}

#[tokio::test]
async fn a_reload_adds_and_removes_a_listener_in_every_worker() {
    let a = MockUpstream::named("a").start().await;
    let (old, new) = (free_port(), free_port());
    let with_listener = |port: u16| {
        two_workers()
            .listener_with(|l| {
                l.set("listen", format!("127.0.0.1:{port}"))
                    .set("upstream", "web")
            })
            .upstream("web", |u| u.server(&a))
            .toml()
    };
    let proxy = Proxy::start(&with_listener(old)).await;
    let toml = with_listener(new);
    assert!(proxy.hup_reload(&toml).await, "{}", proxy.stderr());

    let (old_addr, new_addr) = (format!("127.0.0.1:{old}"), format!("127.0.0.1:{new}"));
    poll_until(WAIT, "the new listener accepts connections", async || {
        TcpStream::connect(&new_addr).await.is_ok()
    })
    .await;
    poll_until(WAIT, "the old listener refuses connections", async || {
        TcpStream::connect(&old_addr).await.is_err()
    })
    .await;
    // A socket left open in either worker would take about half of these.
    for _ in 0..SPREAD {
        assert!(
            TcpStream::connect(&old_addr).await.is_err(),
            "a worker still accepts on the removed listener"
        );
    }

    let before = accepted(&proxy).await;
    for resp in spread_gets(&format!("http://{new_addr}/")).await {
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let after = accepted(&proxy).await;
    assert!(
        all_accepted(&before, &after),
        "the new listener is not served by every worker: {before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn max_conns_is_exact_across_workers() {
    let a = MockUpstream::named("a")
        .delay(Duration::from_millis(20))
        .start()
        .await;
    let proxy = Proxy::start(
        &two_workers()
            .listener("web")
            .upstream("web", |u| {
                u.set("queue", SPREAD)
                    .set("queue_timeout", "60s")
                    .server_with(&a, |s| s.set("max_conns", 1))
            })
            .toml(),
    )
    .await;
    let before = accepted(&proxy).await;
    for resp in spread_gets(&proxy.url("/")).await {
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let after = accepted(&proxy).await;
    assert!(all_accepted(&before, &after), "{before:?} -> {after:?}");
    assert_eq!(a.count(), SPREAD);
    assert_eq!(a.max_in_flight(), 1, "max_conns = 1 let requests overlap");
}

#[tokio::test]
async fn sigterm_drains_every_worker_then_exits_zero() {
    let slow = MockUpstream::named("slow")
        .delay(Duration::from_secs(2))
        .start()
        .await;
    let mut proxy = Proxy::start(
        &two_workers()
            .global("shutdown_timeout", "30s")
            .listener("web")
            .upstream("web", |u| u.server(&slow))
            .toml(),
    )
    .await;
    let before = accepted(&proxy).await;
    let url = proxy.url("/");
    let requests = tokio::spawn(async move { spread_gets(&url).await });
    poll_until(WAIT, "every slow request reaches its server", async || {
        slow.in_flight() == SPREAD
    })
    .await;
    let after = accepted(&proxy).await;
    assert!(all_accepted(&before, &after), "{before:?} -> {after:?}");

    proxy.signal(Signal::Term);
    poll_until(WAIT, "new connections are refused", async || {
        TcpStream::connect(proxy.addr()).await.is_err()
    })
    .await;
    for resp in requests.await.expect("the requests' task") {
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let status = proxy
        .wait_exit(WAIT)
        .await
        .expect("sluice exits once both workers are drained");
    assert!(status.success(), "{status}\n{}", proxy.stderr());
}
