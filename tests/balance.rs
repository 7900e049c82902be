//! Balancing methods through the real proxy: which mock answers, in what
//! order, under load, and when servers go away.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use support::{client::*, proxy::*, upstream::*};

const WAIT: Duration = Duration::from_secs(10);

fn config(port: u16, upstream_keys: &str, servers: &str) -> String {
    format!(
        "[[listener]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"u\"\n\n[upstream.u]\n{upstream_keys}\n{servers}"
    )
}

fn server(mock: &MockUpstream, extra: &str) -> String {
    format!(
        "[[upstream.u.server]]\naddress = \"{}\"\n{extra}\n",
        mock.address()
    )
}

async fn mocks(names: &[&str]) -> Vec<MockUpstream> {
    let mut all = Vec::new();
    for name in names {
        all.push(MockUpstream::named(name).start().await);
    }
    all
}

async fn served_by(client: &Client, url: &str) -> String {
    let resp = client.get(url).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.upstream().expect("x-upstream").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_weights_5_1_1_give_nginx_order() {
    let m = mocks(&["a", "b", "c"]).await;
    let servers = server(&m[0], "weight = 5") + &server(&m[1], "") + &server(&m[2], "");
    let proxy = Proxy::start(&config(free_port(), "", &servers)).await;
    let client = Client::new();
    let mut order = String::new();
    for _ in 0..14 {
        order += &served_by(&client, &proxy.url("/")).await;
    }
    assert_eq!(order, "aabacaaaabacaa");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_sends_new_requests_away_from_a_busy_server() {
    let m = mocks(&["a", "b"]).await;
    let servers = server(&m[0], "") + &server(&m[1], "");
    let proxy = Proxy::start(&config(free_port(), "balance = \"least_conn\"", &servers)).await;
    m[0].set_hang(true);
    // Idle servers tie and go round-robin: the first request goes to a.
    let held = tokio::spawn(get(proxy.url("/slow").leak()));
    poll_until(WAIT, "a holds the slow request", async || {
        m[0].in_flight() == 1
    })
    .await;

    let client = Client::new();
    for _ in 0..8 {
        assert_eq!(served_by(&client, &proxy.url("/")).await, "b");
    }
    m[0].set_hang(false);
    assert_eq!(held.await.expect("slow request").status, 200);
    // Both idle again: they alternate.
    let both: BTreeSet<String> = [
        served_by(&client, &proxy.url("/")).await,
        served_by(&client, &proxy.url("/")).await,
    ]
    .into();
    assert_eq!(both.len(), 2, "{both:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_keeps_a_slash_24_together_and_spreads_networks() {
    let m = mocks(&["a", "b", "c"]).await;
    let servers = server(&m[0], "") + &server(&m[1], "") + &server(&m[2], "");
    let proxy = Proxy::start(&config(free_port(), "balance = \"ip_hash\"", &servers)).await;
    let url = proxy.url("/");

    for net in 0..4u8 {
        let mut seen = BTreeSet::new();
        for host in [1, 2, 77, 200] {
            let client = IpAddr::V4(Ipv4Addr::new(127, 0, net, host));
            seen.insert(get_from(client, &url).await.upstream().map(str::to_owned));
        }
        assert_eq!(seen.len(), 1, "127.0.{net}.0/24 went to {seen:?}");
    }
    let mut spread = BTreeSet::new();
    for net in 0..24u8 {
        let client = IpAddr::V4(Ipv4Addr::new(127, 1, net * 7, 1));
        spread.insert(get_from(client, &url).await.upstream().map(str::to_owned));
    }
    assert_eq!(
        spread.len(),
        3,
        "24 networks should reach every server: {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_moves_only_the_removed_servers_keys() {
    let m = mocks(&["a", "b", "c", "d"]).await;
    let keys = "balance = \"hash\"\nhash_key = \"header:x-user\"\nconsistent = true";
    let four: String = m.iter().map(|s| server(s, "")).collect();
    // Same servers minus c, listed in another order: nothing else may move.
    let three = server(&m[3], "") + &server(&m[1], "") + &server(&m[0], "");
    let before = Proxy::start(&config(free_port(), keys, &four)).await;
    let after = Proxy::start(&config(free_port(), keys, &three)).await;
    let client = Client::new();
    let mut on_c = 0;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for n in 0..200 {
        let user = format!("user-{n}");
        let header = [("x-user", user.as_str())];
        let was = client.get_with(&before.url("/"), &header).await;
        let now = client.get_with(&after.url("/"), &header).await;
        let (was, now) = (
            was.upstream().expect("served"),
            now.upstream().expect("served"),
        );
        *counts.entry(was.to_owned()).or_default() += 1;
        if was == "c" {
            on_c += 1;
            assert_ne!(now, "c");
        } else {
            assert_eq!(was, now, "{user} moved from {was} to {now}");
        }
    }
    assert!(on_c > 0, "some keys should have lived on c: {counts:?}");
    assert_eq!(counts.len(), 4, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_loads_spill_a_hot_key_once_its_server_is_at_the_cap() {
    let m = mocks(&["a", "b", "c"]).await;
    let keys =
        "balance = \"hash\"\nhash_key = \"query:k\"\nconsistent = true\nbalance_factor = 1.5";
    let servers: String = m.iter().map(|s| server(s, "")).collect();
    let proxy = Proxy::start(&config(free_port(), keys, &servers)).await;
    let hot = proxy.url("/?k=hot");
    let home = served_by(&Client::new(), &hot).await;
    m.iter().for_each(|s| s.set_hang(true));

    // Nothing in flight: cap = ceil(1.5 * 1 / 3) = 1, so home takes it.
    let first = tokio::spawn(get(hot.clone().leak()));
    let home_mock = m.iter().find(|s| s.name() == home).expect("home mock");
    poll_until(WAIT, "the hot key's server holds a request", async || {
        home_mock.in_flight() == 1
    })
    .await;
    // One in flight: cap = ceil(1.5 * 2 / 3) = 1, home is full: next on the ring.
    let second = tokio::spawn(get(hot.clone().leak()));
    poll_until(WAIT, "another server takes the spill", async || {
        m.iter()
            .filter(|s| s.name() != home)
            .any(|s| s.in_flight() == 1)
    })
    .await;
    assert_eq!(home_mock.in_flight(), 1);

    m.iter().for_each(|s| s.set_hang(false));
    assert_eq!(first.await.expect("first").upstream(), Some(home.as_str()));
    assert_ne!(
        second.await.expect("second").upstream(),
        Some(home.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_wait_for_a_slot_and_then_succeed() {
    let a = MockUpstream::named("a")
        .delay(Duration::from_millis(200))
        .start()
        .await;
    let keys = "queue = 10\nqueue_timeout = \"30s\"";
    let proxy = Proxy::start(&config(free_port(), keys, &server(&a, "max_conns = 1"))).await;
    let url = proxy.url("/");
    let client = Client::new();
    // Without the queue, all but one of these would get 503 at once.
    let all = futures_util::future::join_all((0..4).map(|_| client.get(&url))).await;
    for resp in &all {
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    assert_eq!(a.count(), 4);
}

/// One server held busy at `max_conns = 1` behind a proxy with `keys`.
async fn busy_server(keys: &str) -> (MockUpstream, Proxy, tokio::task::JoinHandle<Resp>) {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(free_port(), keys, &server(&a, "max_conns = 1"))).await;
    a.set_hang(true);
    let held = tokio::spawn(get(proxy.url("/held").leak()));
    poll_until(WAIT, "a holds a request", async || a.in_flight() == 1).await;
    (a, proxy, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_request_gets_503_after_queue_timeout() {
    let (a, proxy, held) = busy_server("queue = 1\nqueue_timeout = \"500ms\"").await;
    let started = Instant::now();
    assert_eq!(get(&proxy.url("/waits")).await.status, 503);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.count(), 1, "the queued request never reached the server");
    a.set_hang(false);
    assert_eq!(held.await.expect("held").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_servers_without_a_queue_answer_503_at_once() {
    let (a, proxy, held) = busy_server("queue = 0\nqueue_timeout = \"60s\"").await;
    let started = Instant::now();
    assert_eq!(get(&proxy.url("/refused")).await.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    a.set_hang(false);
    assert_eq!(held.await.expect("held").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_newcomers_while_the_queued_one_waits() {
    let (a, proxy, held) = busy_server("queue = 1\nqueue_timeout = \"60s\"").await;
    // The line holds one: of two newcomers, one waits and one is refused.
    let two = [
        tokio::spawn(get(proxy.url("/one").leak())),
        tokio::spawn(get(proxy.url("/two").leak())),
    ];
    poll_until(WAIT, "one newcomer is answered", async || {
        two.iter().any(|t| t.is_finished())
    })
    .await;
    let (done, waiting): (Vec<_>, Vec<_>) = two.into_iter().partition(|t| t.is_finished());
    let refused = done.into_iter().next().expect("one finished");
    assert_eq!(refused.await.expect("refused").status, 503);
    assert_eq!(waiting.len(), 1, "the other still waits in line");
    a.set_hang(false);
    assert_eq!(held.await.expect("held").status, 200);
    for w in waiting {
        assert_eq!(w.await.expect("waiting").status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_while_every_primary_is_unavailable() {
    let m = mocks(&["a", "b", "c"]).await;
    let servers = server(&m[0], "") + &server(&m[1], "") + &server(&m[2], "backup = true");
    let proxy = Proxy::start(&config(free_port(), "fail_timeout = \"1s\"", &servers)).await;
    let client = Client::new();
    for _ in 0..6 {
        assert_ne!(served_by(&client, &proxy.url("/")).await, "c");
    }
    m[0].stop().await;
    m[1].stop().await;
    for _ in 0..4 {
        assert_eq!(served_by(&client, &proxy.url("/")).await, "c");
    }
    m[0].restart().await;
    m[1].restart().await;
    poll_until(WAIT, "primaries take traffic back", async || {
        served_by(&client, &proxy.url("/")).await != "c"
    })
    .await;
}
