//! Hot reload: file changes and SIGHUP apply a new config in place, invalid
//! ones are rejected with their line, and nothing in flight is dropped.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::{client::*, config::*, proxy::*, upstream::*, websocket::*};

/// How long a reload may take to show, on a loaded machine.
const RELOAD: Duration = Duration::from_secs(5);

fn listen_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A one-listener config on `listen` for upstream `web`, built by `upstream`.
fn web_config(listen: &str, watch: bool, upstream: impl FnOnce(Upstream) -> Upstream) -> Config {
    Config::new()
        .global("watch", watch)
        .listener_with(|l| l.set("listen", listen).set("upstream", "web"))
        .upstream("web", upstream)
}

/// Server keys for a `weight`.
fn weight(weight: u32) -> impl FnOnce(Keys) -> Keys {
    move |s| s.set("weight", weight)
}

fn tally(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_reweights_adds_and_removes_servers_in_the_same_process() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let listen = listen_addr();
    let mut proxy = Proxy::start(&web_config(&listen, true, |u| u.server(&a)).toml()).await;
    let client = Client::new();
    let url = proxy.url("/");
    assert_eq!(client.get(&url).await.upstream(), Some("a"));

    proxy.write_config(&web_config(&listen, true, |u| u.server(&a).server(&b)).toml());
    poll_until(RELOAD, "b is added", async || {
        client.get(&url).await.upstream() == Some("b")
    })
    .await;

    let reweighted = web_config(&listen, true, |u| u.server(&a).server_with(&b, weight(3)));
    proxy.write_config(&reweighted.toml());
    poll_until(RELOAD, "weights 1:3 apply", async || {
        let names = served_by(&client, &url, 8).await;
        tally(&names, "a") == 2 && tally(&names, "b") == 6
    })
    .await;

    proxy.write_config(&web_config(&listen, true, |u| u.server(&b)).toml());
    poll_until(RELOAD, "a is removed", async || {
        tally(&served_by(&client, &url, 6).await, "b") == 6
    })
    .await;
    a.clear();
    assert_eq!(tally(&served_by(&client, &url, 10).await, "b"), 10);
    assert_eq!(a.count(), 0, "a removed server still gets requests");
    assert!(
        proxy.try_exit().is_none(),
        "the proxy restarted instead of reloading"
    );
    assert!(proxy.stderr().contains("config file changed on disk"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_when_watch_is_off() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let listen = listen_addr();
    let mut proxy = Proxy::start(&web_config(&listen, false, |u| u.server(&a)).toml()).await;
    let client = Client::new();
    let url = proxy.url("/");

    proxy
        .hup_reload(&web_config(&listen, false, |u| u.server(&b)).toml())
        .await;
    assert_eq!(tally(&served_by(&client, &url, 4).await, "b"), 4);
    assert!(proxy.stderr().contains("SIGHUP"));
    assert!(!proxy.stderr().contains("config file changed on disk"));
    assert!(proxy.try_exit().is_none());
}

/// The 1-based line of the first line of `toml` containing `needle`.
fn line_of(toml: &str, needle: &str) -> usize {
    toml.lines()
        .position(|l| l.contains(needle))
        .expect("needle in config")
        + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_rejected_with_its_line_and_the_old_one_keeps_serving() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let listen = listen_addr();
    let proxy = Proxy::start(&web_config(&listen, false, |u| u.server(&a)).toml()).await;
    let client = Client::new();
    let url = proxy.url("/");

    let only_b = web_config(&listen, false, |u| u.server(&b));
    let syntax = only_b.clone().raw("weight = = 2\n").toml();
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let taken: SocketAddr = occupied.local_addr().expect("occupied addr");
    let unknown = only_b
        .clone()
        .listener_with(|l| l.set("listen", "127.0.0.1:1").set("upstream", "nope"))
        .toml();
    let in_use = only_b
        .listener_with(|l| l.set("listen", taken.to_string()).set("upstream", "web"))
        .toml();
    for (bad, needle) in [
        (&syntax, "weight = = 2"),
        (&unknown, "upstream = \"nope\""),
        (&in_use, &*format!("listen = \"{taken}\"")),
    ] {
        let before = proxy.logged("reload rejected");
        proxy.hup_reload(bad).await;
        assert_eq!(
            proxy.logged("reload rejected"),
            before + 1,
            "not rejected:\n{bad}"
        );
        let line = line_of(bad, needle);
        assert!(
            proxy.stderr().contains(&format!("sluice.toml:{line}:")),
            "no line {line} in the log for:\n{bad}\n--- stderr ---\n{}",
            proxy.stderr()
        );
        assert_eq!(
            tally(&served_by(&client, &url, 3).await, "a"),
            3,
            "old config not serving"
        );
    }
    assert!(tokio::net::TcpStream::connect("127.0.0.1:1").await.is_err());
    assert_eq!(b.count(), 0);
    drop(occupied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let c = MockUpstream::named("c").start().await;
    let slow = MockUpstream::named("slow")
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let listen = listen_addr();
    let first = Config::new()
        .global("watch", false)
        .listener_with(|l| {
            l.set("listen", &listen)
                .set("upstream", "web")
                .route(|r| r.set("path_prefix", "/slow").set("upstream", "slow"))
        })
        .upstream("web", |u| u.server(&a).server_with(&b, weight(2)))
        .upstream("slow", |u| u.server(&slow))
        .toml();
    let second = web_config(&listen, false, |u| u.server(&b).server_with(&c, weight(3))).toml();
    let proxy = Proxy::start(&first).await;

    let slow_url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { try_get(&slow_url).await });
    poll_until(RELOAD, "the slow request reaches its server", async || {
        slow.in_flight() == 1
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, url) = (stop.clone(), ok.clone(), proxy.url("/"));
        clients.push(tokio::spawn(async move {
            let client = Client::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.try_get(&url).await {
                    Ok(resp) if resp.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) => failures.push(format!("status {}", resp.status)),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    for i in 0..20 {
        let before = ok.load(Ordering::Relaxed);
        proxy
            .hup_reload(if i % 2 == 0 { &second } else { &first })
            .await;
        poll_until(RELOAD, "requests flow after the reload", async || {
            ok.load(Ordering::Relaxed) > before + 4
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let failures = client.await.expect("client task");
        assert!(
            failures.is_empty(),
            "requests failed during reloads: {failures:?}"
        );
    }
    assert_eq!(proxy.logged("config reloaded"), 20);
    assert_eq!(proxy.logged("reload rejected"), 0);
    let slow_resp = in_flight
        .await
        .expect("slow task")
        .expect("the slow request completes");
    assert_eq!(slow_resp.status, 200);
    assert_eq!(slow_resp.body, "slow");
    assert!(a.count() > 0 && b.count() > 0 && c.count() > 0);
}

/// `a`, stopped, refuses the connections of two requests, which are
/// retried on `b`: `a` is failed. Then it is started again, and is still
/// failed (for its `fail_timeout`).
async fn fail_then_restart(client: &Client, url: &str, a: &MockUpstream) {
    assert_eq!(tally(&served_by(client, url, 2).await, "b"), 2);
    a.restart().await;
    assert_eq!(tally(&served_by(client, url, 4).await, "b"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_server_stays_failed_across_a_reload_that_keeps_it() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    a.stop().await;
    let listen = listen_addr();
    let config = |b_weight| {
        web_config(&listen, false, |u| {
            u.set("max_fails", 1)
                .set("fail_timeout", "60s")
                .server(&a)
                .server_with(&b, weight(b_weight))
        })
        .toml()
    };
    let proxy = Proxy::start(&config(1)).await;
    let client = Client::new();
    let url = proxy.url("/");
    fail_then_restart(&client, &url, &a).await;

    proxy.hup_reload(&config(2)).await;
    assert_eq!(proxy.logged("config reloaded"), 1);
    assert_eq!(tally(&served_by(&client, &url, 6).await, "b"), 6);
    assert_eq!(a.count(), 0, "the reload forgot that a failed");
}

/// Turning passive health off (`max_fails = 0`) by a reload brings a
/// server it had failed back at once, and its failures no longer count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_max_fails_zero_brings_a_failed_server_back() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    a.stop().await;
    let listen = listen_addr();
    let config = |max_fails| {
        web_config(&listen, false, |u| {
            u.set("max_fails", max_fails)
                .set("fail_timeout", "60s")
                .server(&a)
                .server(&b)
        })
        .toml()
    };
    let proxy = Proxy::start(&config(1)).await;
    let client = Client::new();
    let url = proxy.url("/");
    fail_then_restart(&client, &url, &a).await;

    proxy.hup_reload(&config(0)).await;
    let served = served_by(&client, &url, 4).await;
    assert_eq!(tally(&served, "a"), 2, "{served:?}");
}

/// A request through `proxy` that hangs on `busy` (its first pick),
/// running until [`release`].
async fn hold(proxy: &Proxy, busy: &MockUpstream) -> tokio::task::JoinHandle<Result<Resp, Error>> {
    let url = proxy.url("/");
    let held = tokio::spawn(async move { try_get(&url).await });
    poll_until(RELOAD, "a request hangs on busy", async || {
        busy.in_flight() == 1
    })
    .await;
    held
}

/// Lets the request [`hold`] made finish, served by `busy`.
async fn release(busy: &MockUpstream, held: tokio::task::JoinHandle<Result<Resp, Error>>) {
    busy.set_hang(false);
    let resp = held
        .await
        .expect("held task")
        .expect("held request completes");
    assert_eq!(resp.upstream(), Some("busy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_counts_survive_a_reload() {
    let busy = MockUpstream::named("busy").hang().start().await;
    let b = MockUpstream::named("b").start().await;
    let listen = listen_addr();
    let config = |b_weight| {
        web_config(&listen, false, |u| {
            u.server_with(&busy, |s| s.set("max_conns", 1))
                .server_with(&b, weight(b_weight))
        })
        .toml()
    };
    let proxy = Proxy::start(&config(1)).await;
    // Round-robin sends the first request to `busy`, where it hangs.
    let held = hold(&proxy, &busy).await;

    proxy.hup_reload(&config(2)).await;
    let client = Client::new();
    assert_eq!(
        tally(&served_by(&client, &proxy.url("/"), 6).await, "b"),
        6,
        "the reload forgot busy's in-flight request (max_conns = 1)"
    );
    assert_eq!(busy.count(), 1);
    release(&busy, held).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_removed_and_brought_back_while_busy_still_counts_its_requests() {
    let busy = MockUpstream::named("busy").hang().start().await;
    let b = MockUpstream::named("b").start().await;
    let listen = listen_addr();
    let config = |with_busy: bool| {
        web_config(&listen, false, |u| {
            let u = if with_busy {
                u.server_with(&busy, |s| s.set("max_conns", 1))
            } else {
                u
            };
            u.server(&b)
        })
        .toml()
    };
    let proxy = Proxy::start(&config(true)).await;
    let held = hold(&proxy, &busy).await;

    // Removed while its request runs, then back before it ends: the
    // request still counts against its max_conns.
    proxy.hup_reload(&config(false)).await;
    proxy.hup_reload(&config(true)).await;
    let client = Client::new();
    assert_eq!(
        tally(&served_by(&client, &proxy.url("/"), 6).await, "b"),
        6,
        "busy came back without its in-flight request (max_conns = 1)"
    );
    assert_eq!(busy.count(), 1);
    release(&busy, held).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_stays_open_across_reloads_and_after_its_server_is_removed() {
    let echo = WebSocketEcho::start().await;
    let other = WebSocketEcho::start().await;
    let listen = listen_addr();
    let config =
        |address: &str, w| web_config(&listen, false, |u| u.server_with(address, weight(w))).toml();
    let proxy = Proxy::start(&config(&echo.address(), 1)).await;
    let url = format!("ws://{listen}/chat");
    let mut ws = ws_connect(&url).await.expect("websocket through the proxy");
    assert_eq!(ws_echo(&mut ws, "hello").await.as_deref(), Ok("hello"));

    for weight in 2..7 {
        proxy.hup_reload(&config(&echo.address(), weight)).await;
        let text = format!("after reload {weight}");
        assert_eq!(ws_echo(&mut ws, &text).await, Ok(text));
    }
    proxy.hup_reload(&config(&other.address(), 1)).await;
    assert_eq!(proxy.logged("config reloaded"), 6);
    assert_eq!(
        ws_echo(&mut ws, "still here").await.as_deref(),
        Ok("still here")
    );
    assert_eq!(echo.open(), 1);

    let mut fresh = ws_connect(&url).await.expect("a new websocket");
    assert_eq!(ws_echo(&mut fresh, "new").await.as_deref(), Ok("new"));
    assert_eq!(other.open(), 1, "new sessions go to the new server");

    ws.close(None).await.expect("close the old session");
    poll_until(RELOAD, "the old session ends at its server", async || {
        echo.open() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_cuts_the_tunnels_of_a_removed_server() {
    let echo = WebSocketEcho::start().await;
    let other = WebSocketEcho::start().await;
    let (listen, admin) = (listen_addr(), listen_addr());
    let config = |address: &str| {
        web_config(&listen, false, |u| u.server(address))
            .set("admin", "listen", &admin)
            .toml()
    };
    let proxy = Proxy::start(&config(&echo.address())).await;
    let mut ws = ws_connect(&format!("ws://{listen}/chat"))
        .await
        .expect("websocket through the proxy");
    assert_eq!(ws_echo(&mut ws, "hello").await.as_deref(), Ok("hello"));

    let drain = request(
        http::Method::POST,
        &proxy.admin_url(&format!(
            "/api/upstreams/web/servers/{}/drain?deadline=1s",
            echo.address()
        )),
        &[],
        "",
    )
    .await;
    assert_eq!(drain.status, 200, "{}", drain.body);
    // Until the deadline the tunnel runs; removing the drained server from
    // the config does not end it sooner, and the deadline still does.
    assert_eq!(
        ws_echo(&mut ws, "draining").await.as_deref(),
        Ok("draining")
    );
    proxy.hup_reload(&config(&other.address())).await;
    assert_eq!(proxy.logged("config reloaded"), 1);

    poll_until(RELOAD, "the removed server's tunnel is cut", async || {
        echo.open() == 0
    })
    .await;
    assert!(
        ws_echo(&mut ws, "gone?").await.is_err(),
        "the cut tunnel still echoes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_while_the_others_keep_accepting() {
    let a = MockUpstream::named("a").start().await;
    let (kept, removed, added) = (listen_addr(), listen_addr(), listen_addr());
    let config = |listeners: &[&str]| {
        let mut config = Config::new().global("watch", false);
        for &listen in listeners {
            config = config.listener_with(|l| l.set("listen", listen).set("upstream", "web"));
        }
        config.upstream("web", |u| u.server(&a)).toml()
    };
    let proxy = Proxy::start(&config(&[&kept, &removed])).await;

    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let (stop, url) = (stop.clone(), format!("http://{kept}/"));
        tokio::spawn(async move {
            let (mut ok, mut failures) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                // A fresh connection each time: a refused connect would show.
                match try_get(&url).await {
                    Ok(resp) if resp.status == 200 => ok += 1,
                    Ok(resp) => failures.push(format!("status {}", resp.status)),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (ok, failures)
        })
    };

    proxy.hup_reload(&config(&[&kept, &removed, &added])).await;
    let added_url = format!("http://{added}/");
    poll_until(RELOAD, "the added listener serves", async || {
        try_get(&added_url).await.is_ok_and(|r| r.status == 200)
    })
    .await;

    proxy.hup_reload(&config(&[&kept, &added])).await;
    poll_until(
        RELOAD,
        "the removed listener refuses connections",
        async || tokio::net::TcpStream::connect(&removed).await.is_err(),
    )
    .await;
    assert_eq!(get(&added_url).await.status, 200);

    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = hammer.await.expect("hammer task");
    assert!(
        failures.is_empty(),
        "the kept listener failed during reloads: {failures:?}"
    );
    assert!(ok > 0);
    assert_eq!(proxy.logged("config reloaded"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_by_rename_and_kubernetes_symlink_swaps_are_seen() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let c = MockUpstream::named("c").start().await;
    let listen = listen_addr();
    let config = |m: &MockUpstream| web_config(&listen, true, |u| u.server(m)).toml();
    let proxy = Proxy::start(&config(&a)).await;
    let client = Client::new();
    let url = proxy.url("/");
    let dir = proxy.dir().to_owned();
    let path = proxy.config_path().to_owned();

    // An editor: write a new file, rename it over the old one.
    let tmp = dir.join(".sluice.toml.swp");
    std::fs::write(&tmp, config(&b)).expect("write the new file");
    std::fs::rename(&tmp, &path).expect("rename over the config");
    poll_until(RELOAD, "b serves after a rename", async || {
        client.get(&url).await.upstream() == Some("b")
    })
    .await;

    // A Kubernetes volume: sluice.toml -> ..data/sluice.toml, ..data -> v1.
    for (version, mock) in [("v1", &b), ("v2", &c)] {
        std::fs::create_dir(dir.join(version)).expect("version dir");
        std::fs::write(dir.join(version).join("sluice.toml"), config(mock))
            .expect("versioned config");
    }
    std::os::unix::fs::symlink("v1", dir.join("..data")).expect("..data link");
    std::os::unix::fs::symlink("..data/sluice.toml", dir.join("link")).expect("config link");
    let reloads = proxy.logged("config reloaded");
    std::fs::rename(dir.join("link"), &path).expect("config becomes a link");
    poll_until(RELOAD, "the link is reloaded", async || {
        proxy.logged("config reloaded") > reloads
    })
    .await;
    // The swap kubelet does: a new link, renamed over `..data`.
    std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).expect("new ..data link");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    poll_until(RELOAD, "c serves after the ..data swap", async || {
        client.get(&url).await.upstream() == Some("c")
    })
    .await;
    assert_eq!(proxy.logged("reload rejected"), 0);
}

async fn api_reload(proxy: &Proxy) -> (http::StatusCode, serde_json::Value) {
    let resp = request(http::Method::POST, &proxy.admin_url("/api/reload"), &[], "").await;
    let body = serde_json::from_str(&resp.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", resp.body));
    (resp.status, body)
}

/// The value of `sluice_config_reloads_total{result="RESULT"}` in `/metrics`.
async fn reloads_metric(proxy: &Proxy, result: &str) -> f64 {
    let text = get(&proxy.admin_url("/metrics")).await.body;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let sample = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sluice_config_reloads_total" && s.labels.get("result") == Some(result)
        })
        .unwrap_or_else(|| panic!("no sluice_config_reloads_total{{result={result}}}:\n{text}"));
    match sample.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("sluice_config_reloads_total is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reload_reports_changes_and_rejects_an_invalid_file_with_its_line() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let (listen, admin) = (listen_addr(), listen_addr());
    let only_a = web_config(&listen, false, |u| u.server(&a)).set("admin", "listen", &admin);
    let proxy = Proxy::start(&only_a.toml()).await;
    let client = Client::new();
    let url = proxy.url("/");
    assert_eq!(tally(&served_by(&client, &url, 3).await, "a"), 3);

    let both =
        web_config(&listen, false, |u| u.server(&a).server(&b)).set("admin", "listen", &admin);
    proxy.write_config(&both.toml());
    let (status, report) = api_reload(&proxy).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["servers"]["web"]["added"],
        serde_json::json!([b.address()]),
        "{report}"
    );
    assert_eq!(report["upstreams"]["changed"], serde_json::json!(["web"]));
    assert_eq!(report["listeners"]["added"], serde_json::json!([]));
    poll_until(RELOAD, "the added server b serves", async || {
        client.get(&url).await.upstream() == Some("b")
    })
    .await;

    let bad = both
        .listener_with(|l| l.set("listen", "127.0.0.1:1").set("upstream", "nope"))
        .toml();
    proxy.write_config(&bad);
    let (status, rejection) = api_reload(&proxy).await;
    assert_eq!(status, 422, "{rejection}");
    let line = line_of(&bad, "upstream = \"nope\"");
    let diagnostics = rejection["diagnostics"]
        .as_array()
        .unwrap_or_else(|| panic!("no diagnostics: {rejection}"));
    assert!(
        diagnostics.iter().any(|d| d["line"] == line
            && d["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("sluice.toml"))
            && d["message"].as_str().is_some_and(|m| m.contains("nope"))),
        "no diagnostic on line {line}: {rejection}"
    );
    assert!(
        rejection["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("sluice.toml:{line}:"))),
        "{rejection}"
    );
    // The previous config (a and b) keeps serving; nothing was half-applied.
    let names = served_by(&client, &url, 4).await;
    assert_eq!(
        (tally(&names, "a"), tally(&names, "b")),
        (2, 2),
        "{names:?}"
    );
    assert!(tokio::net::TcpStream::connect("127.0.0.1:1").await.is_err());

    assert_eq!(reloads_metric(&proxy, "ok").await, 1.0);
    assert_eq!(reloads_metric(&proxy, "failed").await, 1.0);
    let status = get(&proxy.admin_url("/api/status")).await.body;
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["reloads"], serde_json::json!({"ok": 1, "failed": 1}));
    // The log is read by another thread: it may lag the responses.
    poll_until(RELOAD, "both reloads are logged", async || {
        proxy.logged("config reloaded") == 1 && proxy.logged("reload rejected") == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_neighbour_file_does_not_hold_off_a_reload() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let listen = listen_addr();
    let admin = listen_addr();
    let proxy = Proxy::start(
        &web_config(&listen, true, |u| u.server(&a))
            .set("admin", "listen", &admin)
            .toml(),
    )
    .await;
    // A log written next to the config all the time, as with
    // `sluice -c ./sluice.toml 2> sluice.log` under traffic: far more often
    // than the watcher's 200 ms debounce.
    let log = proxy.dir().join("sluice.log");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            let mut line = 0;
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&log, format!("line {line}\n")).expect("write the neighbour");
                line += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    poll_until(RELOAD, "the neighbour is being written", async || {
        log.exists()
    })
    .await;

    let both = web_config(&listen, true, |u| u.server(&a).server(&b));
    proxy.write_config(&both.set("admin", "listen", &admin).toml());
    let status_url = proxy.admin_url("/api/status");
    let reloaded = tokio::time::timeout(
        RELOAD,
        // The outer timeout ends the wait first, so the writer is stopped.
        poll_until(2 * RELOAD, "the reload shows in /api/status", async || {
            get(&status_url).await.body.contains(&b.address())
        }),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("the writer thread");
    assert!(
        reloaded.is_ok(),
        "no reload while the neighbour file kept changing"
    );
}
