//! Cookie stickiness and draining, end to end: the real binary in front of
//! mock upstreams, driven through the admin API.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use support::{admin::*, client::*, config::*, proxy::*, upstream::*};

const WAIT: Duration = Duration::from_secs(20);

/// The admin API and a listener in front of upstream `web`: `servers`,
/// with the `[upstream.web.sticky]` keys `sticky` sets.
fn config(servers: &[&MockUpstream], sticky: impl FnOnce(Keys) -> Keys) -> String {
    with_servers(|u| u.servers(servers), sticky)
}

/// The same, with servers that carry keys of their own.
fn with_servers(
    servers: impl FnOnce(Upstream) -> Upstream,
    sticky: impl FnOnce(Keys) -> Keys,
) -> String {
    Config::new()
        .admin()
        .listener("web")
        .upstream("web", |u| {
            servers(
                u.set("max_fails", 1)
                    .set("fail_timeout", "30s")
                    .table_with("sticky", sticky),
            )
        })
        .toml()
}

fn sid(keys: Keys) -> Keys {
    keys.set("cookie", "sid")
}

/// The value of cookie `name` in a `Set-Cookie` header.
fn cookie_value<'a>(set_cookie: &'a str, name: &str) -> &'a str {
    let pair = set_cookie.split(';').next().unwrap_or_default();
    let (n, v) = pair.split_once('=').expect("name=value");
    assert_eq!(n.trim(), name, "{set_cookie}");
    v.trim()
}

/// Sends requests without a cookie until every mock has answered once;
/// returns each mock's cookie value.
async fn cookies_by_server(proxy: &Proxy, name: &str, servers: usize) -> HashMap<String, String> {
    let client = Client::new();
    let mut found = HashMap::new();
    for _ in 0..servers * 4 {
        let resp = client.get(&proxy.url("/")).await;
        assert_eq!(resp.status, 200);
        let set = resp.header_all("set-cookie");
        assert_eq!(
            set.len(),
            1,
            "a fresh client gets exactly one cookie: {set:?}"
        );
        found.insert(
            resp.upstream().unwrap().to_owned(),
            cookie_value(&set[0], name).to_owned(),
        );
        if found.len() == servers {
            break;
        }
    }
    assert_eq!(
        found.len(),
        servers,
        "round-robin reached every server: {found:?}"
    );
    found
}

#[tokio::test]
async fn cookie_has_the_configured_attributes_and_hides_the_address() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&a, &b], |s| {
        s.set("cookie", "route")
            .set("max_age", "2h")
            .set("path", "/app")
            .set("http_only", true)
            .set("secure", true)
            .set("same_site", "Strict")
            .set("secret", "hunter2")
    }))
    .await;

    let resp = get(&proxy.url("/app/x")).await;
    assert_eq!(resp.status, 200);
    let set = resp
        .header("set-cookie")
        .expect("a Set-Cookie on the first response");
    let value = cookie_value(set, "route");
    let attributes: Vec<&str> = set.split(';').skip(1).map(str::trim).collect();
    assert_eq!(
        attributes,
        [
            "Path=/app",
            "Max-Age=7200",
            "HttpOnly",
            "Secure",
            "SameSite=Strict"
        ]
    );
    assert!(value.len() >= 16, "{value}");
    for server in [&a, &b] {
        assert!(
            !value.contains(&server.port().to_string()),
            "{value} names a port"
        );
    }
    // The address neither as text nor as the hex of its bytes; a bare "127"
    // turns up in random hex about once in 140 cookies.
    assert!(
        !value.contains("127.0.0.1") && !value.to_lowercase().contains("7f000001"),
        "{value} names the address"
    );
    assert!(!value.contains(':'), "{value}");

    // Without max_age the cookie lasts the browser session.
    let session = Proxy::start(&config(&[&a], |s| s.set("cookie", "route"))).await;
    let set = get(&session.url("/")).await.header_all("set-cookie");
    assert!(!set[0].contains("Max-Age"), "{set:?}");
    assert!(
        set[0].contains("SameSite=Lax") && set[0].contains("HttpOnly"),
        "{set:?}"
    );
}

#[tokio::test]
async fn requests_with_the_cookie_stick_and_get_no_new_cookie() {
    let servers = [
        MockUpstream::named("a").start().await,
        MockUpstream::named("b").start().await,
        MockUpstream::named("c").start().await,
    ];
    let refs: Vec<&MockUpstream> = servers.iter().collect();
    let proxy = Proxy::start(&config(&refs, |s| sid(s).set("secret", "s"))).await;
    let cookies = cookies_by_server(&proxy, "sid", 3).await;

    let client = Client::new();
    for (server, value) in &cookies {
        let cookie = format!("sid={value}");
        for _ in 0..30 {
            let resp = client
                .get_with(&proxy.url("/"), &[("cookie", &cookie)])
                .await;
            assert_eq!(resp.upstream(), Some(server.as_str()));
            assert!(
                resp.header("set-cookie").is_none(),
                "cookie re-sent to a bound client"
            );
        }
    }
    // Several Cookie fields (as HTTP/2 clients send them) are all read.
    let b = &cookies["b"];
    let resp = client
        .get_with(
            &proxy.url("/"),
            &[("cookie", "theme=dark"), ("cookie", &format!("sid={b}"))],
        )
        .await;
    assert_eq!(resp.upstream(), Some("b"));
    assert!(resp.header("set-cookie").is_none());
}

#[tokio::test]
async fn garbage_cookie_is_ignored_and_replaced() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&a, &b], sid)).await;
    let cookies = cookies_by_server(&proxy, "sid", 2).await;

    for garbage in [
        "sid=garbage",
        "sid=",
        &format!("sid={}", a.address()),
        "sid=00000000000000000000000000000000",
    ] {
        let resp = get_with(&proxy.url("/"), &[("cookie", garbage)]).await;
        assert_eq!(resp.status, 200, "{garbage}");
        let set = resp
            .header("set-cookie")
            .unwrap_or_else(|| panic!("no new cookie for {garbage}"));
        let server = resp.upstream().unwrap();
        assert_eq!(cookie_value(set, "sid"), cookies[server], "{garbage}");
    }
}

#[tokio::test]
async fn same_secret_gives_the_same_cookie_on_every_instance() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let sticky = |s: Keys| sid(s).set("secret", "shared between instances");
    let first = Proxy::start(&config(&[&a, &b], sticky)).await;
    let second = Proxy::start(&config(&[&a, &b], sticky)).await;
    let from_first = cookies_by_server(&first, "sid", 2).await;
    assert_eq!(from_first, cookies_by_server(&second, "sid", 2).await);

    // A cookie from one instance is honoured by the other.
    let resp = get_with(
        &second.url("/"),
        &[("cookie", &format!("sid={}", from_first["b"]))],
    )
    .await;
    assert_eq!(resp.upstream(), Some("b"));
    assert!(resp.header("set-cookie").is_none());

    let other = Proxy::start(&config(&[&a, &b], |s| sid(s).set("secret", "another"))).await;
    assert_ne!(from_first, cookies_by_server(&other, "sid", 2).await);
}

#[tokio::test]
async fn crashed_sticky_server_moves_the_client_and_rewrites_the_cookie() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&a, &b], sid)).await;
    let cookies = cookies_by_server(&proxy, "sid", 2).await;

    a.stop().await;
    let client = Client::new();
    let resp = client
        .get_with(
            &proxy.url("/"),
            &[("cookie", &format!("sid={}", cookies["a"]))],
        )
        .await;
    assert_eq!(resp.status, 200, "the client never sees the crash");
    assert_eq!(resp.upstream(), Some("b"));
    let set = resp.header("set-cookie").expect("the cookie is rewritten");
    assert_eq!(cookie_value(set, "sid"), cookies["b"]);
    let metrics = get(&proxy.admin_url("/metrics")).await.body;
    assert!(
        metrics.contains("sluice_retries_total{upstream=\"web\"} 1"),
        "{metrics}"
    );

    // The rewritten cookie sticks to its new server.
    for _ in 0..5 {
        let resp = client
            .get_with(
                &proxy.url("/"),
                &[("cookie", &format!("sid={}", cookies["b"]))],
            )
            .await;
        assert_eq!(resp.upstream(), Some("b"));
        assert!(resp.header("set-cookie").is_none());
    }
}

#[tokio::test]
async fn backend_cookies_pass_through_next_to_ours() {
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-upstream: raw\r\n\
                     Set-Cookie: app=1; Path=/\r\nSet-Cookie: other=2\r\n\r\nok";
    let raw = MockUpstream::raw("raw", response).start().await;
    let proxy = Proxy::start(&config(&[&raw], sid)).await;
    let resp = get(&proxy.url("/")).await;
    assert_eq!(resp.status, 200);
    let set = resp.header_all("set-cookie");
    assert_eq!(set.len(), 3, "{set:?}");
    assert!(set.contains(&"app=1; Path=/".to_owned()), "{set:?}");
    assert!(set.contains(&"other=2".to_owned()), "{set:?}");
    assert!(set.iter().any(|c| c.starts_with("sid=")), "{set:?}");
}

#[tokio::test]
async fn draining_server_keeps_sticky_clients_and_reports_drained() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&a, &b], sid)).await;
    let cookies = cookies_by_server(&proxy, "sid", 2).await;
    let bound_to_a = format!("sid={}", cookies["a"]);

    let resp = admin_post(
        &proxy,
        &format!("/api/upstreams/web/servers/{}/drain", a.address()),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let status = server_status(&proxy, &a.address()).await;
    assert_eq!(status["drain"]["draining"], true, "{status}");
    assert!(status["drain"]["deadline"].is_null(), "{status}");

    // New clients never reach the draining server.
    let client = Client::new();
    for _ in 0..20 {
        let resp = client.get(&proxy.url("/")).await;
        assert_eq!(resp.upstream(), Some("b"));
    }
    // Bound clients still do, without being re-cookied.
    for _ in 0..10 {
        let resp = client
            .get_with(&proxy.url("/"), &[("cookie", &bound_to_a)])
            .await;
        assert_eq!(resp.upstream(), Some("a"));
        assert!(resp.header("set-cookie").is_none());
    }

    // A slow bound request holds the drain open until it ends.
    a.set_hang(true);
    let url = proxy.url("/slow");
    let cookie = bound_to_a.clone();
    let slow = tokio::spawn(async move { get_with(&url, &[("cookie", &cookie)]).await });
    poll_until(WAIT, "the slow request reaches a", async || {
        a.in_flight() == 1
    })
    .await;
    let status = server_status(&proxy, &a.address()).await;
    assert_eq!(status["state"], "draining", "{status}");
    assert_eq!(status["in_flight"], 1, "{status}");
    assert!(
        status["drain"]["bound_requests"].as_u64().unwrap() >= 11,
        "{status}"
    );
    assert!(
        status["drain"]["since_last_bound_request_s"].is_number(),
        "{status}"
    );

    a.set_hang(false);
    assert_eq!(slow.await.unwrap().upstream(), Some("a"));
    poll_until(WAIT, "a reports drained", async || {
        server_status(&proxy, &a.address()).await["state"] == "drained"
    })
    .await;

    // Enable ends the drain: new clients reach `a` again.
    let resp = admin_post(
        &proxy,
        &format!("/api/upstreams/web/servers/{}/enable", a.address()),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(server_status(&proxy, &a.address()).await["state"], "up");
    let mut reached_a = false;
    for _ in 0..10 {
        reached_a |= client.get(&proxy.url("/")).await.upstream() == Some("a");
    }
    assert!(reached_a, "an enabled server gets new clients");
}

#[tokio::test]
async fn drain_deadline_moves_bound_clients() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&a, &b], sid)).await;
    let cookies = cookies_by_server(&proxy, "sid", 2).await;
    let bound_to_a = format!("sid={}", cookies["a"]);

    let path = format!(
        "/api/upstreams/web/servers/{}/drain?deadline=2s",
        a.address()
    );
    let resp = admin_post(&proxy, &path).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let status: Value = serde_json::from_str(&resp.body).unwrap();
    assert!(status["drain"]["deadline"].is_string(), "{status}");

    // Until the deadline, the bound client stays.
    let client = Client::new();
    let resp = client
        .get_with(&proxy.url("/"), &[("cookie", &bound_to_a)])
        .await;
    assert_eq!(resp.upstream(), Some("a"), "moved before the deadline");

    poll_until(WAIT, "a bound client is moved off a", async || {
        let resp = client
            .get_with(&proxy.url("/"), &[("cookie", &bound_to_a)])
            .await;
        if resp.upstream() != Some("b") {
            return false;
        }
        let set = resp
            .header("set-cookie")
            .expect("the moved client gets a new cookie");
        assert_eq!(cookie_value(set, "sid"), cookies["b"]);
        true
    })
    .await;
    for _ in 0..5 {
        let resp = client
            .get_with(&proxy.url("/"), &[("cookie", &bound_to_a)])
            .await;
        assert_eq!(resp.upstream(), Some("b"));
    }
}

#[tokio::test]
async fn drain_in_the_config_keeps_new_clients_away() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let toml = with_servers(
        |u| u.server_with(&a, |s| s.set("drain", true)).server(&b),
        sid,
    );
    let proxy = Proxy::start(&toml).await;
    let client = Client::new();
    for _ in 0..10 {
        assert_eq!(client.get(&proxy.url("/")).await.upstream(), Some("b"));
    }
    assert_eq!(a.count(), 0);
    assert_eq!(
        server_status(&proxy, &a.address()).await["state"],
        "drained"
    );
}

/// One HTTP/2 (prior knowledge) GET carrying each cookie in its own field, as
/// browsers send them over HTTP/2. Returns the answering mock and the
/// `Set-Cookie` fields.
async fn h2_get_with_split_cookies(proxy: &Proxy, cookies: &[&str]) -> (String, Vec<String>) {
    use http_body_util::{BodyExt, Empty};

    let mut sender = h2_prior_knowledge(proxy.addr()).await;
    let mut request = http::Request::get(proxy.url("/"));
    for cookie in cookies {
        request = request.header("cookie", *cookie);
    }
    let response = sender
        .send_request(request.body(Empty::<bytes::Bytes>::new()).unwrap())
        .await
        .unwrap();
    let set_cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let upstream = response.headers()["x-upstream"]
        .to_str()
        .unwrap()
        .to_owned();
    response.into_body().collect().await.unwrap();
    (upstream, set_cookies)
}

#[tokio::test]
async fn http2_split_cookie_fields_bind_too() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(&[&a, &b], sid)).await;
    let cookies = cookies_by_server(&proxy, "sid", 2).await;

    for server in ["a", "b"] {
        let sid = format!("sid={}", cookies[server]);
        for _ in 0..4 {
            let (upstream, set) =
                h2_get_with_split_cookies(&proxy, &["lang=en", &sid, "x=1"]).await;
            assert_eq!(upstream, server);
            assert!(set.is_empty(), "{set:?}");
        }
    }
}
