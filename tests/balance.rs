//! Balancing methods through the real proxy: which mock answers, in what
//! order, under load, and when servers go away.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use support::{client::*, config::*, proxy::*, upstream::*};

const WAIT: Duration = Duration::from_secs(10);

/// A listener in front of upstream `u`, built by `upstream`.
async fn balancer(upstream: impl FnOnce(Upstream) -> Upstream) -> Proxy {
    Proxy::start(&Config::new().listener("u").upstream("u", upstream).toml()).await
}

async fn mocks(names: &[&str]) -> Vec<MockUpstream> {
    let mut all = Vec::new();
    for name in names {
        all.push(MockUpstream::named(name).start().await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_weights_5_1_1_give_nginx_order() {
    let m = mocks(&["a", "b", "c"]).await;
    let proxy = balancer(|u| {
        u.server_with(&m[0], |s| s.set("weight", 5))
            .server(&m[1])
            .server(&m[2])
    })
    .await;
    let order = served_by(&Client::new(), &proxy.url("/"), 14)
        .await
        .concat();
    assert_eq!(order, "aabacaaaabacaa");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_sends_new_requests_away_from_a_busy_server() {
    let m = mocks(&["a", "b"]).await;
    let proxy = balancer(|u| u.set("balance", "least_conn").server(&m[0]).server(&m[1])).await;
    m[0].set_hang(true);
    // Idle servers tie and go round-robin: the first request goes to a.
    let held = tokio::spawn(get(proxy.url("/slow").leak()));
    poll_until(WAIT, "a holds the slow request", async || {
        m[0].in_flight() == 1
    })
    .await;

    let client = Client::new();
    assert_eq!(served_by(&client, &proxy.url("/"), 8).await, ["b"; 8]);
    m[0].set_hang(false);
    assert_eq!(held.await.expect("slow request").status, 200);
    // Both idle again: they alternate.
    let both: BTreeSet<String> = served_by(&client, &proxy.url("/"), 2)
        .await
        .into_iter()
        .collect();
    assert_eq!(both.len(), 2, "{both:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_keeps_a_slash_24_together_and_spreads_networks() {
    let m = mocks(&["a", "b", "c"]).await;
    let proxy = balancer(|u| u.set("balance", "ip_hash").servers(&[&m[0], &m[1], &m[2]])).await;
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
    let keys = |u: Upstream| {
        u.set("balance", "hash")
            .set("hash_key", "header:x-user")
            .set("consistent", true)
    };
    let before = balancer(|u| keys(u).servers(&[&m[0], &m[1], &m[2], &m[3]])).await;
    // Same servers minus c, listed in another order: nothing else may move.
    let after = balancer(|u| keys(u).servers(&[&m[3], &m[1], &m[0]])).await;
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
    let proxy = balancer(|u| {
        u.set("balance", "hash")
            .set("hash_key", "query:k")
            .set("consistent", true)
            .set("balance_factor", 1.5)
            .servers(&[&m[0], &m[1], &m[2]])
    })
    .await;
    let hot = proxy.url("/?k=hot");
    let home = served_by(&Client::new(), &hot, 1).await.concat();
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
    let proxy = balancer(|u| {
        u.set("queue", 10)
            .set("queue_timeout", "30s")
            .server_with(&a, |s| s.set("max_conns", 1))
    })
    .await;
    let url = proxy.url("/");
    let client = Client::new();
    // Without the queue, all but one of these would get 503 at once.
    let all = futures_util::future::join_all((0..4).map(|_| client.get(&url))).await;
    for resp in &all {
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    assert_eq!(a.count(), 4);
}

/// One server held busy at `max_conns = 1` behind a proxy with a `queue`
/// of this length and timeout.
async fn busy_server(
    queue: u32,
    queue_timeout: &str,
) -> (MockUpstream, Proxy, tokio::task::JoinHandle<Resp>) {
    let a = MockUpstream::named("a").start().await;
    let proxy = balancer(|u| {
        u.set("queue", queue)
            .set("queue_timeout", queue_timeout)
            .server_with(&a, |s| s.set("max_conns", 1))
    })
    .await;
    a.set_hang(true);
    let held = tokio::spawn(get(proxy.url("/held").leak()));
    poll_until(WAIT, "a holds a request", async || a.in_flight() == 1).await;
    (a, proxy, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_request_gets_503_after_queue_timeout() {
    let (a, proxy, held) = busy_server(1, "500ms").await;
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

/// A client that leaves while its request waits in the queue gives up its
/// place (a newcomer takes it) and its request never reaches a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_whose_client_leaves_gives_up_its_place() {
    use tokio::io::AsyncWriteExt;
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(
        &Config::new()
            .admin()
            .listener("u")
            .upstream("u", |u| {
                u.set("queue", 1)
                    .set("queue_timeout", "60s")
                    .server_with(&a, |s| s.set("max_conns", 1))
            })
            .toml(),
    )
    .await;
    a.set_hang(true);
    let held = tokio::spawn(get(proxy.url("/held").leak()));
    poll_until(WAIT, "a holds a request", async || a.in_flight() == 1).await;
    let queued = async || {
        let status = get(&proxy.admin_url("/api/status")).await;
        let status: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
        status["upstreams"]["u"]["queued"].as_u64()
    };
    let mut leaver = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    leaver
        .write_all(b"GET /leaves HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    poll_until(WAIT, "the request waits in line", async || {
        queued().await == Some(1)
    })
    .await;
    drop(leaver);
    poll_until(WAIT, "the place is given up", async || {
        queued().await == Some(0)
    })
    .await;
    // The line has room again: a newcomer waits instead of a 503.
    let newcomer = tokio::spawn(get(proxy.url("/newcomer").leak()));
    poll_until(WAIT, "the newcomer waits in line", async || {
        queued().await == Some(1)
    })
    .await;
    a.set_hang(false);
    assert_eq!(held.await.expect("held").status, 200);
    assert_eq!(newcomer.await.expect("newcomer").status, 200);
    let paths: Vec<String> = a
        .requests()
        .iter()
        .map(|r| r.uri.path().to_owned())
        .collect();
    assert_eq!(paths, ["/held", "/newcomer"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_servers_without_a_queue_answer_503_at_once() {
    let (a, proxy, held) = busy_server(0, "60s").await;
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
    let (a, proxy, held) = busy_server(1, "60s").await;
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
async fn backup_serves_only_when_every_primary_is_down() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let spare = MockUpstream::named("spare").start().await;
    let config = |a_down: bool| {
        Config::new()
            .listener("u")
            .upstream("u", |u| {
                u.server_with(&a, |s| s.set("down", a_down))
                    .server_with(&b, |s| s.set("down", true))
                    .server_with(&spare, |s| s.set("backup", true))
            })
            .toml()
    };
    let proxy = Proxy::start(&config(false)).await;
    assert_eq!(
        served_by(&Client::new(), &proxy.url("/"), 4).await,
        ["a", "a", "a", "a"]
    );
    assert_eq!((b.count(), spare.count()), (0, 0));
    drop(proxy);

    let proxy = Proxy::start(&config(true)).await;
    assert_eq!(
        served_by(&Client::new(), &proxy.url("/"), 3).await,
        ["spare", "spare", "spare"]
    );
    assert_eq!((a.count(), b.count()), (4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_while_every_primary_is_unavailable() {
    let m = mocks(&["a", "b", "c"]).await;
    let proxy = balancer(|u| {
        u.set("fail_timeout", "1s")
            .server(&m[0])
            .server(&m[1])
            .server_with(&m[2], |s| s.set("backup", true))
    })
    .await;
    let client = Client::new();
    for name in served_by(&client, &proxy.url("/"), 6).await {
        assert!(name == "a" || name == "b", "{name}");
    }
    m[0].stop().await;
    m[1].stop().await;
    assert_eq!(served_by(&client, &proxy.url("/"), 4).await, ["c"; 4]);
    m[0].restart().await;
    m[1].restart().await;
    poll_until(WAIT, "primaries take traffic back", async || {
        let name = served_by(&client, &proxy.url("/"), 1).await.concat();
        name == "a" || name == "b"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_takes_turns_among_the_backups_too() {
    // One primary down, two backups: the backups alternate, as nginx's
    // backup tier does, whatever the primaries' positions did.
    let primary = MockUpstream::named("primary").start().await;
    let x = MockUpstream::named("x").start().await;
    let y = MockUpstream::named("y").start().await;
    let proxy = balancer(|u| {
        u.server_with(&primary, |s| s.set("down", true))
            .server_with(&x, |s| s.set("backup", true))
            .server_with(&y, |s| s.set("backup", true))
    })
    .await;
    assert_eq!(
        served_by(&Client::new(), &proxy.url("/"), 4).await,
        ["x", "y", "x", "y"]
    );
}
