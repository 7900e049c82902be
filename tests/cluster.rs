//! Several instances acting as one through Redis, end to end: two real
//! sluice processes, one real redis-server, mock upstreams.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis::Redis;
use support::{admin::*, client::*, config::*, proxy::*, upstream::*};

/// Generous: a loaded two-core machine runs these next to other builds.
const WAIT: Duration = Duration::from_secs(15);
/// Short, to keep the tests short, but not so short that a heartbeat
/// delayed on a loaded machine drops an instance (three are missed first).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Two instances' configs: the same servers and Redis, their own ports.
struct Tier {
    a: String,
    b: String,
}

fn tier(redis: &Redis, servers: &[&MockUpstream]) -> Tier {
    tier_beating(redis, servers, HEARTBEAT)
}

/// A tier whose instances publish their counts every `heartbeat`.
fn tier_beating(redis: &Redis, servers: &[&MockUpstream], heartbeat: Duration) -> Tier {
    let instance = |name: &str| {
        Config::new()
            .global("trusted_proxies", ["127.0.0.1"])
            .set("cluster", "redis", redis.url())
            .set("cluster", "instance", name)
            .set(
                "cluster",
                "heartbeat",
                format!("{}ms", heartbeat.as_millis()),
            )
            .admin()
            .listener_with(|l| {
                l.set("upstream", "web")
                    .route(|r| r.set("path_prefix", "/hash/").set("upstream", "hashed"))
                    .route(|r| r.set("path_prefix", "/ip/").set("upstream", "by_ip"))
            })
            .upstream("web", |u| {
                u.set("max_fails", 0)
                    .table_with("sticky", |s| {
                        s.set("cookie", "sid")
                            .set("secret", "one secret for the tier")
                    })
                    .servers(servers)
            })
            .upstream("hashed", |u| {
                u.set("balance", "hash")
                    .set("hash_key", "uri")
                    .servers(servers)
            })
            .upstream("by_ip", |u| u.set("balance", "ip_hash").servers(servers))
            .toml()
    };
    Tier {
        a: instance("a"),
        b: instance("b"),
    }
}

async fn json(url: &str) -> Value {
    let resp = get(url).await;
    assert!(
        resp.status == 200 || resp.status == 409,
        "{url}: {}",
        resp.body
    );
    serde_json::from_str(&resp.body).unwrap_or_else(|e| panic!("{url}: {e}: {}", resp.body))
}

/// POSTs an admin action that must succeed.
async fn admin_ok(proxy: &Proxy, path: &str) -> Resp {
    let resp = admin_post(proxy, path).await;
    assert_eq!(resp.status, 200, "POST {path}: {}", resp.body);
    resp
}

async fn server(proxy: &Proxy, upstream: &str, address: &str) -> Value {
    let status = json(&proxy.admin_url("/api/status")).await;
    server_entry(&status, upstream, address).clone()
}

async fn state(proxy: &Proxy, address: &str) -> String {
    server(proxy, "web", address).await["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Both instances reach Redis and see each other's heartbeats.
async fn joined(a: &Proxy, b: &Proxy) {
    for proxy in [a, b] {
        poll_until(WAIT, "both instances in /api/cluster", async || {
            let cluster = json(&proxy.admin_url("/api/cluster")).await;
            cluster["connected"] == true && cluster["instances"].as_array().unwrap().len() == 2
        })
        .await;
    }
}

fn path(address: &str, action: &str) -> String {
    format!("/api/upstreams/web/servers/{address}/{action}")
}

/// The sticky cookie value of `server`, asked through `proxy`.
async fn cookie_for(proxy: &Proxy, server: &MockUpstream) -> String {
    let client = Client::new();
    for _ in 0..20 {
        let resp = client.get(&proxy.url("/")).await;
        if resp.upstream() == Some(server.name()) {
            let set = resp
                .header("set-cookie")
                .expect("a fresh client gets a cookie");
            return set.split(';').next().unwrap().to_owned();
        }
    }
    panic!("round-robin never reached {}", server.name());
}

#[tokio::test]
async fn a_drain_made_on_one_instance_stops_new_clients_on_the_other_within_a_second() {
    let redis = Redis::start().await;
    let s1 = MockUpstream::named("s1").start().await;
    let s2 = MockUpstream::named("s2").start().await;
    let tier = tier(&redis, &[&s1, &s2]);
    let a = Proxy::start(&tier.a).await;
    let b = Proxy::start(&tier.b).await;
    joined(&a, &b).await;
    let bound = cookie_for(&b, &s1).await;

    admin_ok(&a, &path(&s1.address(), "drain")).await;
    let took = poll_until(WAIT, "B applies A's drain", async || {
        state(&b, &s1.address()).await != "up"
    })
    .await;
    assert!(
        took < Duration::from_secs(1),
        "B applied the drain after {took:?}"
    );

    s1.clear();
    let client = Client::new();
    for _ in 0..20 {
        let resp = client.get(&b.url("/")).await;
        assert_eq!(
            resp.upstream(),
            Some("s2"),
            "a new client went to the draining server"
        );
    }
    assert_eq!(s1.count(), 0);
    for proxy in [&a, &b] {
        for _ in 0..5 {
            let resp = client
                .get_with(&proxy.url("/"), &[("cookie", bound.as_str())])
                .await;
            assert_eq!(resp.upstream(), Some("s1"), "a sticky client was moved");
            assert!(resp.header("set-cookie").is_none());
        }
    }
}

#[tokio::test]
async fn drained_is_cluster_wide_and_drained_wait_answers_when_it_happens() {
    let redis = Redis::start().await;
    let s1 = MockUpstream::named("s1").start().await;
    let s2 = MockUpstream::named("s2").start().await;
    let tier = tier(&redis, &[&s1, &s2]);
    let a = Proxy::start(&tier.a).await;
    let b = Proxy::start(&tier.b).await;
    joined(&a, &b).await;
    let bound = cookie_for(&b, &s1).await;

    s1.set_hang(true);
    let url = b.url("/slow");
    let cookie = bound.clone();
    let in_flight =
        tokio::spawn(async move { get_with(&url, &[("cookie", cookie.as_str())]).await });
    poll_until(WAIT, "the request reaches s1", async || s1.in_flight() == 1).await;
    admin_ok(&a, &path(&s1.address(), "drain")).await;

    // A sees B's request through B's heartbeat: not drained, cluster-wide.
    poll_until(WAIT, "A counts B's request", async || {
        server(&a, "web", &s1.address()).await["cluster"]["in_flight"] == 1
    })
    .await;
    assert_eq!(state(&a, &s1.address()).await, "draining");
    let now = get(&a.admin_url(&path(&s1.address(), "drained"))).await;
    assert_eq!(now.status, 409, "{}", now.body);
    let counts: Value = serde_json::from_str(&now.body).unwrap();
    assert_eq!(counts["in_flight"], 1, "{counts}");

    let wait_url = a.admin_url(&format!("{}?wait=30s", path(&s1.address(), "drained")));
    let waiting = tokio::spawn(async move { get(&wait_url).await });
    // Several heartbeats pass with the request still in flight.
    tokio::time::sleep(HEARTBEAT * 4).await;
    assert!(
        !waiting.is_finished(),
        "drained?wait answered while a request was in flight on B"
    );
    assert_eq!(state(&a, &s1.address()).await, "draining");

    s1.set_hang(false);
    let released = Instant::now();
    assert_eq!(in_flight.await.unwrap().status, 200);
    let answer = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("drained?wait answered")
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        released.elapsed() < HEARTBEAT * 12,
        "drained?wait answered {:?} after the request ended",
        released.elapsed()
    );
    assert_eq!(state(&a, &s1.address()).await, "drained");
    assert_eq!(state(&b, &s1.address()).await, "drained");
}

/// When `name` last wrote its heartbeat to Redis (its own clock, Unix ms).
fn last_heartbeat(redis: &Redis, name: &str) -> Option<u64> {
    let reply = redis.command(&["HGET", "sluice:heartbeats", name]);
    // A bulk string, `$LEN\r\nTEXT\r\n`, or `$-1\r\n` for none.
    let text = reply.split("\r\n").nth(1)?;
    serde_json::from_str::<Value>(text).ok()?["at_unix_ms"].as_u64()
}

#[tokio::test]
async fn a_request_newer_than_the_other_instances_last_heartbeat_holds_a_drain_made_at_once() {
    // Long, so that nothing but the drain makes B report before the request ends.
    const SLOW_BEAT: Duration = Duration::from_secs(5);
    let redis = Redis::start().await;
    let s1 = MockUpstream::named("s1").start().await;
    let s2 = MockUpstream::named("s2").start().await;
    let tier = tier_beating(&redis, &[&s1, &s2], SLOW_BEAT);
    let a = Proxy::start(&tier.a).await;
    let b = Proxy::start(&tier.b).await;
    joined(&a, &b).await;
    let bound = cookie_for(&b, &s1).await;

    // Right after one of B's heartbeats, several seconds before the next.
    let seen = last_heartbeat(&redis, "b");
    poll_until(SLOW_BEAT * 3, "B sends a heartbeat", async || {
        last_heartbeat(&redis, "b") != seen
    })
    .await;
    s1.set_hang(true);
    let url = b.url("/slow");
    let in_flight =
        tokio::spawn(async move { get_with(&url, &[("cookie", bound.as_str())]).await });
    poll_until(WAIT, "the request reaches s1", async || s1.in_flight() == 1).await;
    let before = server(&a, "web", &s1.address()).await;
    assert_eq!(
        before["cluster"]["in_flight"], 0,
        "B's last heartbeat predates its request: {before}"
    );

    admin_ok(&a, &path(&s1.address(), "drain")).await;
    let at_once = get(&a.admin_url(&path(&s1.address(), "drained"))).await;
    assert_eq!(at_once.status, 409, "{}", at_once.body);
    assert_eq!(state(&a, &s1.address()).await, "draining");
    // B applied the drain and reported at once, not at its next heartbeat.
    let took = poll_until(WAIT, "A counts B's request", async || {
        server(&a, "web", &s1.address()).await["cluster"]["in_flight"] == 1
    })
    .await;
    assert!(took < SLOW_BEAT / 2, "B's count reached A after {took:?}");
    let counted = get(&a.admin_url(&path(&s1.address(), "drained"))).await;
    assert_eq!(counted.status, 409, "{}", counted.body);

    let wait_url = a.admin_url(&format!("{}?wait=30s", path(&s1.address(), "drained")));
    let waiting = tokio::spawn(async move { get(&wait_url).await });
    s1.set_hang(false);
    assert_eq!(in_flight.await.unwrap().status, 200);
    let answer = tokio::time::timeout(SLOW_BEAT * 3, waiting)
        .await
        .expect("drained?wait answered")
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(state(&b, &s1.address()).await, "drained");
}

#[tokio::test]
async fn with_redis_down_both_serve_and_a_disable_reaches_the_other_once_it_is_back() {
    let mut redis = Redis::start().await;
    let s1 = MockUpstream::named("s1").start().await;
    let s2 = MockUpstream::named("s2").start().await;
    let tier = tier(&redis, &[&s1, &s2]);
    let a = Proxy::start(&tier.a).await;
    let b = Proxy::start(&tier.b).await;
    joined(&a, &b).await;

    redis.stop();
    for proxy in [&a, &b] {
        poll_until(WAIT, "connected: false", async || {
            json(&proxy.admin_url("/api/cluster")).await["connected"] == false
        })
        .await;
        let status = json(&proxy.admin_url("/api/status")).await;
        assert_eq!(status["cluster"]["connected"], false, "{status}");
        let metrics = get(&proxy.admin_url("/metrics")).await.body;
        assert!(metrics.contains("sluice_cluster_connected 0"), "{metrics}");
    }
    let client = Client::new();
    for proxy in [&a, &b] {
        for _ in 0..20 {
            assert_eq!(client.get(&proxy.url("/")).await.status, 200);
        }
    }

    admin_ok(&a, &path(&s1.address(), "disable")).await;
    assert_eq!(state(&a, &s1.address()).await, "down");
    for _ in 0..10 {
        assert_eq!(client.get(&a.url("/")).await.upstream(), Some("s2"));
    }
    assert_eq!(state(&b, &s1.address()).await, "up", "B cannot know yet");

    // Back, and empty: A writes its change back and B applies it.
    redis.restart().await;
    poll_until(
        WAIT,
        "B applies the disable made during the outage",
        async || state(&b, &s1.address()).await == "down",
    )
    .await;
    joined(&a, &b).await;
    let metrics = get(&a.admin_url("/metrics")).await.body;
    assert!(metrics.contains("sluice_cluster_connected 1"), "{metrics}");
    for _ in 0..10 {
        assert_eq!(client.get(&b.url("/")).await.upstream(), Some("s2"));
    }
}

#[tokio::test]
async fn with_redis_down_the_others_last_counts_still_hold_a_drain() {
    let mut redis = Redis::start().await;
    let s1 = MockUpstream::named("s1").start().await;
    let s2 = MockUpstream::named("s2").start().await;
    let tier = tier(&redis, &[&s1, &s2]);
    let a = Proxy::start(&tier.a).await;
    let b = Proxy::start(&tier.b).await;
    joined(&a, &b).await;
    let bound = cookie_for(&b, &s1).await;

    s1.set_hang(true);
    let url = b.url("/slow");
    let in_flight =
        tokio::spawn(async move { get_with(&url, &[("cookie", bound.as_str())]).await });
    admin_ok(&a, &path(&s1.address(), "drain")).await;
    poll_until(WAIT, "A counts B's request", async || {
        server(&a, "web", &s1.address()).await["cluster"]["in_flight"] == 1
    })
    .await;

    redis.stop();
    poll_until(WAIT, "A notices", async || {
        json(&a.admin_url("/api/cluster")).await["connected"] == false
    })
    .await;
    // Longer than three heartbeats: B is unheard, not silent.
    tokio::time::sleep(HEARTBEAT * 4).await;
    let drained = get(&a.admin_url(&path(&s1.address(), "drained"))).await;
    assert_eq!(drained.status, 409, "{}", drained.body);
    assert_eq!(state(&a, &s1.address()).await, "draining");

    s1.set_hang(false);
    assert_eq!(in_flight.await.unwrap().status, 200);
}

#[tokio::test]
async fn an_instance_restarted_learns_the_changes_made_while_it_was_down() {
    let redis = Redis::start().await;
    let s1 = MockUpstream::named("s1").start().await;
    let s2 = MockUpstream::named("s2").start().await;
    let tier = tier(&redis, &[&s1, &s2]);
    let a = Proxy::start(&tier.a).await;
    let b = Proxy::start(&tier.b).await;
    joined(&a, &b).await;

    drop(b);
    admin_ok(&a, &path(&s1.address(), "disable")).await;
    admin_ok(&a, &format!("{}?value=3", path(&s2.address(), "weight"))).await;
    poll_until(WAIT, "the changes are in Redis", async || {
        let hash = redis.command(&["HGETALL", "sluice:state"]);
        hash.contains("disable") && hash.contains("weight")
    })
    .await;

    let b = Proxy::start(&tier.b).await;
    poll_until(
        WAIT,
        "the restarted instance applies the disable",
        async || state(&b, &s1.address()).await == "down",
    )
    .await;
    assert_eq!(server(&b, "web", &s2.address()).await["weight"], 3);
}

#[tokio::test]
async fn sticky_cookies_and_hash_decisions_are_the_same_through_every_instance() {
    let redis = Redis::start().await;
    let servers = [
        MockUpstream::named("s1").start().await,
        MockUpstream::named("s2").start().await,
        MockUpstream::named("s3").start().await,
    ];
    let refs: Vec<&MockUpstream> = servers.iter().collect();
    let tier = tier(&redis, &refs);
    let a = Proxy::start(&tier.a).await;
    let b = Proxy::start(&tier.b).await;

    for server in &servers {
        let cookie = cookie_for(&a, server).await;
        assert_eq!(cookie, cookie_for(&b, server).await, "{}", server.name());
        let through_b = get_with(&b.url("/"), &[("cookie", cookie.as_str())]).await;
        assert_eq!(through_b.upstream(), Some(server.name()));
    }
    let client = Client::new();
    let mut seen = std::collections::HashSet::new();
    for key in 0..30 {
        let uri = format!("/hash/item-{key}");
        let picked = client.get(&a.url(&uri)).await.upstream().map(str::to_owned);
        assert_eq!(
            picked.as_deref(),
            client.get(&b.url(&uri)).await.upstream(),
            "{uri}"
        );
        seen.extend(picked);

        let ip = [("x-forwarded-for", format!("10.{key}.7.1"))];
        let headers = [(ip[0].0, ip[0].1.as_str())];
        let picked = client.get_with(&a.url("/ip/"), &headers).await;
        let again = client.get_with(&b.url("/ip/"), &headers).await;
        assert_eq!(picked.upstream(), again.upstream(), "client {}", ip[0].1);
    }
    assert!(seen.len() > 1, "the keys spread over the servers: {seen:?}");
}

/// The example tier in `config/cluster/` passes `sluice check` (the test of
/// `config/` does not descend into folders).
#[test]
fn the_example_tier_configs_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("config/cluster")).expect("config/cluster") {
        let path = entry.unwrap().path();
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("check")
            .arg("-c")
            .arg(&path)
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .expect("run sluice check");
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert_eq!(checked, 2, "two instances in the example tier");
}
