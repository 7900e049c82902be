//! The retry budget under load: a server that resets every connection costs
//! no idempotent request while others are healthy, and an upstream whose
//! every server fails is never sent much more than its request rate.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{client::*, config::*, proxy::*, upstream::*};

/// Requests at once: more than the old share-of-concurrent budget allowed
/// to retry together.
const IN_FLIGHT: usize = 64;

/// The admin API and a listener in front of upstream `web`: `servers`, with
/// the keys `settings` adds.
fn config(servers: &[&MockUpstream], settings: impl FnOnce(Upstream) -> Upstream) -> String {
    Config::new()
        .admin()
        .listener("web")
        .upstream("web", |u| settings(u).servers(servers))
        .toml()
}

/// Sends `total` GETs, `IN_FLIGHT` at a time, and returns their statuses.
async fn burst(url: &str, total: usize) -> Vec<u16> {
    let client = Arc::new(Client::new());
    let mut statuses = Vec::with_capacity(total);
    for round in 0..total.div_ceil(IN_FLIGHT) {
        let n = IN_FLIGHT.min(total - round * IN_FLIGHT);
        let requests = (0..n).map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move { client.get(&url).await.status.as_u16() })
        });
        for request in requests.collect::<Vec<_>>() {
            statuses.push(request.await.expect("request task"));
        }
    }
    statuses
}

/// The value of a counter series in Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_resetting_every_connection_costs_no_request() {
    // The healthy servers answer slowly, so many retries are in flight at
    // once; `max_fails = 0` keeps the broken one in rotation throughout.
    let a = MockUpstream::named("a")
        .delay(Duration::from_millis(100))
        .start()
        .await;
    let b = MockUpstream::named("b").reset_after_request().start().await;
    let c = MockUpstream::named("c")
        .delay(Duration::from_millis(100))
        .start()
        .await;
    let proxy = Proxy::start(&config(&[&a, &b, &c], |u| u.set("max_fails", 0))).await;

    let statuses = burst(&proxy.url("/"), 3 * IN_FLIGHT).await;
    assert!(
        statuses.iter().all(|&s| s == 200),
        "failed: {:?}",
        statuses.iter().filter(|&&s| s != 200).collect::<Vec<_>>()
    );
    assert!(
        b.count() >= IN_FLIGHT / 2,
        "b was hardly tried: {}",
        b.count()
    );
    let metrics = get(&proxy.admin_url("/metrics")).await.body;
    assert!(
        metric(&metrics, "sluice_retries_total{upstream=\"web\"}") >= b.count() as f64,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "sluice_retries_refused_total{upstream=\"web\"}"),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_server_fails_retries_stay_within_the_budget() {
    const REQUESTS: usize = 4 * IN_FLIGHT;
    const BUDGET: f64 = 0.2;
    const MIN_PER_SEC: f64 = 1.0;
    let servers = [
        MockUpstream::named("a").reset_after_request().start().await,
        MockUpstream::named("b").reset_after_request().start().await,
        MockUpstream::named("c").reset_after_request().start().await,
    ];
    let proxy = Proxy::start(&config(&servers.iter().collect::<Vec<_>>(), |u| {
        u.set("max_fails", 0)
            .set("tries", 3)
            .set("retry_budget", BUDGET)
            .set("retry_min_per_sec", MIN_PER_SEC)
    }))
    .await;

    let started = Instant::now();
    let statuses = burst(&proxy.url("/"), REQUESTS).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(statuses.iter().all(|&s| s == 502), "{statuses:?}");

    let attempts: usize = servers.iter().map(MockUpstream::count).sum();
    // Deposits, plus the reserve of each 10 s window begun, plus slack for
    // where the windows fall.
    let reserve = MIN_PER_SEC * 10.0 * (elapsed / 10.0 + 1.0).floor();
    let bound = REQUESTS as f64 * (1.0 + BUDGET) + reserve + IN_FLIGHT as f64;
    assert!(
        attempts as f64 <= bound,
        "{attempts} attempts for {REQUESTS} requests in {elapsed:.1} s, at most {bound} allowed"
    );
    assert!(attempts > REQUESTS, "nothing was retried: {attempts}");
    let metrics = get(&proxy.admin_url("/metrics")).await.body;
    let retries = metric(&metrics, "sluice_retries_total{upstream=\"web\"}");
    let refused = metric(&metrics, "sluice_retries_refused_total{upstream=\"web\"}");
    assert_eq!(retries as usize, attempts - REQUESTS, "{metrics}");
    assert!(refused > 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_retry_does_not_move_round_robin() {
    // No budget and no reserve: no request is retried. A retry refused
    // must not have picked the next server first, or round-robin would
    // start every request on the broken one and the healthy one would
    // serve nothing.
    let broken = MockUpstream::named("broken")
        .reset_after_request()
        .start()
        .await;
    let healthy = MockUpstream::named("healthy").start().await;
    let proxy = Proxy::start(&config(&[&broken, &healthy], |u| {
        u.set("max_fails", 0)
            .set("retry_budget", 0.0)
            .set("retry_min_per_sec", 0)
    }))
    .await;

    let client = Client::new();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(client.get(&proxy.url("/")).await.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(healthy.count(), 5);
}
