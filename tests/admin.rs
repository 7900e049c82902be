//! The admin API, `/metrics` and the dashboard, end to end against the real
//! binary.

mod support;

use std::time::Duration;

use http::Method;
use serde_json::Value;
use support::{admin::*, client::*, config::*, proxy::*, upstream::*};

const TOKEN: &str = "let-me-in";

/// The admin API and a listener `public` in front of upstream `web`, built
/// by `upstream`.
fn config(upstream: impl FnOnce(Upstream) -> Upstream) -> Config {
    Config::new()
        .admin()
        .listener_with(|l| l.set("name", "public").set("upstream", "web"))
        .upstream("web", upstream)
}

fn json(resp: &Resp) -> Value {
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "{}",
        resp.body
    );
    serde_json::from_str(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.body))
}

async fn post(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(Method::POST, &proxy.admin_url(path), headers, "").await
}

/// The value of the sample `metric` whose labels include `labels`.
fn sample(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {metric} {labels:?} in the scrape"));
    match &found.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{metric} is {other:?}"),
    }
}

#[tokio::test]
async fn api_and_metrics_need_the_token_but_the_dashboard_does_not() {
    let a = MockUpstream::named("a").start().await;
    let toml = config(|u| u.server(&a)).set("admin", "token", TOKEN).toml();
    let proxy = Proxy::start(&toml).await;
    let bearer = format!("Bearer {TOKEN}");

    for path in ["/api/status", "/metrics", "/api/nope"] {
        let resp = get(&proxy.admin_url(path)).await;
        assert_eq!(resp.status, 401, "{path}");
        assert!(json(&resp)["error"].is_string());
        let wrong = get_with(
            &proxy.admin_url(path),
            &[("authorization", "Bearer let-me-inn")],
        )
        .await;
        assert_eq!(wrong.status, 401, "{path}");
    }
    let resp = post(
        &proxy,
        &format!("/api/upstreams/web/servers/{}/disable", a.address()),
        &[],
    )
    .await;
    assert_eq!(resp.status, 401);
    assert_eq!(
        get(&proxy.url("/")).await.upstream(),
        Some("a"),
        "nothing was disabled"
    );

    let resp = get_with(
        &proxy.admin_url("/api/status"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(json(&resp)["upstreams"]["web"].is_object());
    let resp = get_with(&proxy.admin_url("/metrics"), &[("authorization", &bearer)]).await;
    assert_eq!(resp.status, 200);

    let page = get(&proxy.admin_url("/")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("/api/status") && page.body.contains("Authorization"));
}

#[tokio::test]
async fn unknown_upstream_server_or_endpoint_is_404() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(|u| u.server(&a).server("[::1]:9")).toml()).await;

    let resp = post(
        &proxy,
        &format!("/api/upstreams/api/servers/{}/drain", a.address()),
        &[],
    )
    .await;
    assert_eq!(resp.status, 404);
    assert!(json(&resp)["error"].as_str().unwrap().contains("api"));
    let resp = post(&proxy, "/api/upstreams/web/servers/127.0.0.1:1/drain", &[]).await;
    assert_eq!(resp.status, 404);
    assert!(json(&resp)["error"].is_string());
    assert_eq!(get(&proxy.admin_url("/api/nothing")).await.status, 404);

    // Addresses may be percent-encoded, IPv6 brackets included.
    let encoded = a.address().replace(':', "%3A");
    let resp = post(
        &proxy,
        &format!("/api/upstreams/web/servers/{encoded}/drain"),
        &[],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(json(&resp)["address"], a.address());
    let resp = post(
        &proxy,
        "/api/upstreams/web/servers/%5B%3A%3A1%5D%3A9/disable",
        &[],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(json(&resp)["state"], "down");
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&config(|u| u.server(&a)).toml()).await;

    let resp = post(&proxy, "/api/status", &[]).await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET"));
    assert!(json(&resp)["error"].is_string());
    let resp =
        get(&proxy.admin_url(&format!("/api/upstreams/web/servers/{}/drain", a.address()))).await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("POST"));
    let resp = request(Method::DELETE, &proxy.admin_url("/metrics"), &[], "").await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("allow"), Some("GET"));
    let status = get(&proxy.admin_url("/api/status")).await;
    assert_eq!(
        json(&status)["upstreams"]["web"]["servers"][0]["state"],
        "up",
        "GET did not drain"
    );
}

#[tokio::test]
async fn status_lists_every_listener_and_server_with_its_state() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let c = MockUpstream::named("c").start().await;
    let toml = config(|u| {
        u.server(&a)
            .server_with(&b, |s| s.set("down", true))
            .server_with(&c, |s| s.set("backup", true).set("weight", 3))
    })
    .toml();
    let proxy = Proxy::start(&toml).await;
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/")).await.upstream(), Some("a"));
    }

    let status = json(&get(&proxy.admin_url("/api/status")).await);
    let listeners = status["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0]["name"], "public");
    assert_eq!(listeners[0]["listen"], proxy.addr().to_string());

    let web = &status["upstreams"]["web"];
    assert_eq!(web["balance"], "round_robin");
    let servers = web["servers"].as_array().unwrap();
    let states: Vec<(&str, &str)> = servers
        .iter()
        .map(|s| (s["address"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    let (a_addr, b_addr, c_addr) = (a.address(), b.address(), c.address());
    assert_eq!(
        states,
        [(&*a_addr, "up"), (&*b_addr, "down"), (&*c_addr, "backup")]
    );

    let first = &servers[0];
    assert_eq!(first["weight"], 1);
    assert_eq!(first["in_flight"], 0);
    assert_eq!(first["tunnels"], 0);
    assert_eq!(first["requests"], 4);
    assert_eq!(first["failures"], 0);
    assert_eq!(first["health"]["healthy"], true);
    assert!(first["health"]["last_check"].is_null());
    assert!(first["drain"]["since_last_bound_request_s"].is_null());
    assert!(first["drain"]["deadline"].is_null());
    assert_eq!(servers[2]["weight"], 3);
}

#[tokio::test]
async fn disable_and_enable_take_a_server_out_and_back() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b").start().await;
    let proxy = Proxy::start(&config(|u| u.servers(&[&a, &b])).toml()).await;
    let client = Client::new();

    let resp = post(
        &proxy,
        &format!("/api/upstreams/web/servers/{}/disable", a.address()),
        &[],
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(json(&resp)["state"], "down");
    a.clear();
    for _ in 0..10 {
        assert_eq!(client.get(&proxy.url("/")).await.upstream(), Some("b"));
    }
    assert_eq!(a.count(), 0);

    let resp = post(
        &proxy,
        &format!("/api/upstreams/web/servers/{}/enable", a.address()),
        &[],
    )
    .await;
    assert_eq!(json(&resp)["state"], "up");
    poll_until(
        Duration::from_secs(20),
        "a gets traffic again",
        async || client.get(&proxy.url("/")).await.upstream() == Some("a"),
    )
    .await;
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let a = MockUpstream::named("a").start().await;
    let b = MockUpstream::named("b")
        .route("/missing", 404)
        .start()
        .await;
    let toml = config(|u| u.servers(&[&a, &b]).table("sticky", "cookie", "sid")).toml();
    let proxy = Proxy::start(&toml).await;
    let metrics = async || {
        let resp = get(&proxy.admin_url("/metrics")).await;
        assert_eq!(resp.status, 200);
        assert!(
            resp.body
                .contains("# TYPE sluice_request_duration_seconds histogram"),
            "{}",
            resp.body
        );
        scrape(&resp.body)
    };

    let (a_addr, b_addr) = (a.address(), b.address());
    let (a_addr, b_addr) = (a_addr.as_str(), b_addr.as_str());
    let before = metrics().await;
    let ok = [("listener", "public"), ("code", "2xx")];
    assert_eq!(sample(&before, "sluice_requests_total", &ok), 0.0);
    let up = [("upstream", "web"), ("server", a_addr), ("state", "up")];
    assert_eq!(sample(&before, "sluice_server_state", &up), 1.0);

    let client = Client::new();
    let first = client.get(&proxy.url("/")).await;
    let cookie = first
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let bound = first.upstream().unwrap().to_owned();
    for _ in 0..4 {
        let resp = client
            .get_with(&proxy.url("/"), &[("cookie", &cookie)])
            .await;
        assert_eq!(resp.upstream(), Some(bound.as_str()));
    }
    client
        .get_with(&proxy.url("/"), &[("cookie", "sid=forged")])
        .await;

    let after = metrics().await;
    assert_eq!(sample(&after, "sluice_requests_total", &ok), 6.0);
    let web = [("upstream", "web")];
    assert_eq!(sample(&after, "sluice_sticky_honoured_total", &web), 4.0);
    assert_eq!(sample(&after, "sluice_sticky_reissued_total", &web), 1.0);
    assert_eq!(
        sample(&after, "sluice_request_duration_seconds_count", &web),
        6.0
    );
    let served: f64 = [a_addr, b_addr]
        .iter()
        .map(|s| {
            sample(
                &after,
                "sluice_upstream_responses_total",
                &[("server", s), ("code", "2xx")],
            )
        })
        .sum();
    assert_eq!(served, 6.0);
    let in_flight = [("upstream", "web"), ("server", a_addr)];
    assert_eq!(sample(&after, "sluice_server_in_flight", &in_flight), 0.0);
    assert_eq!(
        sample(&after, "sluice_config_reloads_total", &[("result", "ok")]),
        0.0
    );

    // Drained servers show in the state gauge.
    post(
        &proxy,
        &format!("/api/upstreams/web/servers/{}/drain", a.address()),
        &[],
    )
    .await;
    let drained = [("server", a_addr), ("state", "drained")];
    assert_eq!(
        sample(&metrics().await, "sluice_server_state", &drained),
        1.0
    );
}

#[tokio::test]
async fn metrics_speak_the_classic_text_or_openmetrics_as_asked_with_labels_escaped() {
    let a = MockUpstream::named("a").start().await;
    let toml = Config::new()
        .admin()
        .listener_with(|l| l.set("name", "pub \"x\" \\ y").set("upstream", "web"))
        .upstream("web", |u| u.server(&a))
        .toml();
    let proxy = Proxy::start(&toml).await;
    assert_eq!(get(&proxy.url("/")).await.status, 200);

    let text = get(&proxy.admin_url("/metrics")).await;
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        text.body.contains("# TYPE sluice_requests_total counter"),
        "{}",
        text.body
    );
    assert!(!text.body.contains("# EOF"), "{}", text.body);
    assert!(
        text.body
            .contains(r#"sluice_requests_total{listener="pub \"x\" \\ y",code="2xx"} 1"#),
        "{}",
        text.body
    );

    let open = get_with(
        &proxy.admin_url("/metrics"),
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    )
    .await;
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(
        open.body.contains("# TYPE sluice_requests counter"),
        "{}",
        open.body
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
}
