//! Graceful shutdown through the real binary: SIGTERM/SIGINT stop accepting,
//! let in-flight requests finish (up to `shutdown_timeout`) and exit 0; a
//! second signal exits at once.

mod support;

use std::time::Duration;

use support::{client::*, proxy::*, upstream::*};

const GENEROUS: Duration = Duration::from_secs(30);

fn config(global: &str, upstream: &MockUpstream) -> String {
    format!(
        "[global]\n{global}\n\n[[listener]]\nlisten = \"127.0.0.1:{}\"\nupstream = \"web\"\n\n{}",
        free_port(),
        server_entries("web", &[upstream])
    )
}

async fn refuses_connections(proxy: &Proxy) -> bool {
    tokio::net::TcpStream::connect(proxy.addr()).await.is_err()
}

async fn graceful(signal: Signal) {
    let slow = MockUpstream::named("slow").hang().start().await;
    let mut proxy = Proxy::start(&config("shutdown_timeout = \"60s\"", &slow)).await;

    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { try_get(&url).await });
    poll_until(GENEROUS, "the request reaches the upstream", async || {
        slow.in_flight() == 1
    })
    .await;
    proxy.signal(signal);
    poll_until(GENEROUS, "new connections are refused", async || {
        refuses_connections(&proxy).await
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
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    graceful(Signal::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_is_graceful_too() {
    graceful(Signal::Int).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let slow = MockUpstream::named("slow").hang().start().await;
    let mut proxy = Proxy::start(&config("shutdown_timeout = \"1h\"", &slow)).await;

    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { try_get(&url).await });
    poll_until(GENEROUS, "the request reaches the upstream", async || {
        slow.in_flight() == 1
    })
    .await;
    proxy.signal(Signal::Term);
    poll_until(GENEROUS, "new connections are refused", async || {
        refuses_connections(&proxy).await
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
async fn shutdown_timeout_cuts_what_is_left() {
    let slow = MockUpstream::named("slow").hang().start().await;
    let mut proxy = Proxy::start(&config("shutdown_timeout = \"300ms\"", &slow)).await;

    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { try_get(&url).await });
    poll_until(GENEROUS, "the request reaches the upstream", async || {
        slow.in_flight() == 1
    })
    .await;
    proxy.signal(Signal::Term);
    let status = proxy
        .wait_exit(GENEROUS)
        .await
        .expect("exits after shutdown_timeout");
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    assert!(in_flight.await.expect("client task").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_delay_shutdown() {
    let a = MockUpstream::named("a").start().await;
    let mut proxy = Proxy::start(&config("shutdown_timeout = \"1h\"", &a)).await;

    // The client keeps its connection open in its pool.
    let client = Client::new();
    assert_eq!(client.get(&proxy.url("/")).await.status, 200);
    proxy.signal(Signal::Term);
    let status = proxy
        .wait_exit(GENEROUS)
        .await
        .expect("an idle connection is closed, not waited for");
    assert_eq!(status.code(), Some(0));
}
