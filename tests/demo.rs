//! `sluice demo`, the README's first command: stateful backends behind the
//! proxy, and the story it prints played step by step; `sluice probe`, the
//! image's health check.

mod support;

use std::collections::HashSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::admin::server_entry;
use support::client::*;
use support::demo::{Demo as RunningDemo, Jar};
use support::upstream::MockUpstream;
use support::websocket::{ws_connect, ws_echo};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
/// The ports of `config/demo.toml`: proxy, three backends, admin.
const DEMO_PORTS: [u16; 5] = [8080, 9101, 9102, 9103, 9900];

/// Kills the demo if the test fails half-way.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_spreads_traffic_over_three_backends() {
    let taken: Vec<u16> = DEMO_PORTS
        .into_iter()
        .filter(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_err())
        .collect();
    if !taken.is_empty() {
        eprintln!("skipping the demo test: ports {taken:?} are in use on this machine");
        return;
    }

    let child = Command::new(BIN)
        .arg("demo")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice demo");
    let mut demo = Demo(child);

    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.try_get("http://127.0.0.1:8080/").await
            && resp.status == 200
        {
            break;
        }
        if let Ok(Some(status)) = demo.0.try_wait() {
            panic!("sluice demo exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not answer on :8080 within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut backends = HashSet::new();
    for _ in 0..6 {
        let resp = client.get("http://127.0.0.1:8080/").await;
        assert_eq!(resp.status, 200);
        assert!(
            resp.body.starts_with("Hello from backend-"),
            "{}",
            resp.body
        );
        backends.insert(resp.header("x-backend").expect("x-backend").to_owned());
    }
    assert_eq!(
        backends.len(),
        3,
        "six requests reach three backends: {backends:?}"
    );

    let pid = demo.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.0.try_wait().expect("poll the demo") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));

    // It told the user where to look.
    let mut stdout = String::new();
    demo.0
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut stdout)
        .expect("read the demo's output");
    assert!(stdout.contains("http://127.0.0.1:8080/"), "{stdout}");
    assert!(stdout.contains("curl"), "{stdout}");
}

/// One request as a browser would send it: the jar's cookies out, its
/// `Set-Cookie`s in.
async fn browse(client: &Client, jar: &mut Jar, method: http::Method, url: &str) -> Resp {
    let cookies = jar.header();
    let resp = client
        .request(method, url, &[("cookie", &cookies)], bytes::Bytes::new())
        .await;
    jar.update(&resp);
    resp
}

fn visit(resp: &Resp) -> u64 {
    resp.header("x-visit")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no x-visit: {resp:?}"))
}

fn backend(resp: &Resp) -> String {
    resp.header("x-backend").expect("x-backend").to_owned()
}

async fn status(demo: &RunningDemo, headers: &[(&str, &str)]) -> Value {
    let resp = get_with(&demo.admin_url("/api/status"), headers).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    serde_json::from_str(&resp.body).expect("status is JSON")
}

fn server<'a>(status: &'a Value, address: &str) -> &'a Value {
    server_entry(status, "demo", address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_visitor_keeps_its_session_until_its_backend_crashes() {
    let demo = RunningDemo::start(&[]).await;
    let backends = demo.backends();
    assert_eq!(backends.len(), 3, "{}", demo.stdout());
    let client = Client::new();
    let mut jar = Jar::default();

    let first = browse(&client, &mut jar, http::Method::GET, &demo.url("/")).await;
    assert_eq!(first.status, 200);
    assert_eq!(visit(&first), 1);
    assert!(jar.get("sluice_demo").is_some(), "sticky cookie: {first:?}");
    assert!(
        jar.get("demo_session").is_some(),
        "session cookie: {first:?}"
    );
    let home = backend(&first);
    for expected in 2..=4 {
        let resp = browse(&client, &mut jar, http::Method::GET, &demo.url("/")).await;
        assert_eq!(
            backend(&resp),
            home,
            "the sticky cookie keeps the visitor home"
        );
        assert_eq!(visit(&resp), expected, "{}", resp.body);
    }
    let old_session = jar.header();

    let crash = browse(&client, &mut jar, http::Method::POST, &demo.url("/crash")).await;
    assert_eq!(crash.status, 200);
    assert!(crash.body.contains("crashes now"), "{}", crash.body);
    assert_eq!(backend(&crash), home);

    // The visitor moves at once, with a new sticky cookie, and starts over.
    let sticky_before = jar.get("sluice_demo").map(str::to_owned);
    let moved = browse(&client, &mut jar, http::Method::GET, &demo.url("/")).await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_ne!(backend(&moved), home);
    assert_eq!(visit(&moved), 1, "the new backend never saw this session");
    assert!(
        moved
            .header_all("set-cookie")
            .iter()
            .any(|c| c.starts_with("sluice_demo=")),
        "the sticky cookie is rewritten: {moved:?}"
    );
    assert_ne!(jar.get("sluice_demo").map(str::to_owned), sticky_before);
    let again = browse(&client, &mut jar, http::Method::GET, &demo.url("/")).await;
    assert_eq!(backend(&again), backend(&moved));
    assert_eq!(visit(&again), 2);

    // The health checks take the crashed backend out, then back in.
    let address = &backends[&home];
    poll_until(
        Duration::from_secs(15),
        "the crashed backend fails its checks",
        async || server(&status(&demo, &[]).await, address)["health"]["healthy"] == false,
    )
    .await;
    poll_until(
        Duration::from_secs(40),
        "the backend is back and up",
        async || {
            let status = status(&demo, &[]).await;
            let s = server(&status, address);
            s["health"]["healthy"] == true && s["state"] == "up"
        },
    )
    .await;

    // It came back empty: the old session means nothing to it.
    let direct = get_with(&format!("http://{address}/"), &[("cookie", &old_session)]).await;
    assert_eq!(backend(&direct), home);
    assert_eq!(visit(&direct), 1, "{}", direct.body);
    assert!(direct.body.contains("never saw session"), "{}", direct.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_visitors_backend_moves_it_and_its_count_starts_over() {
    let demo = RunningDemo::start(&["--backends", "2"]).await;
    let backends = demo.backends();
    assert_eq!(backends.len(), 2, "{}", demo.stdout());
    let client = Client::new();
    let mut jar = Jar::default();
    browse(&client, &mut jar, http::Method::GET, &demo.url("/")).await;
    let resp = browse(&client, &mut jar, http::Method::GET, &demo.url("/")).await;
    assert_eq!(visit(&resp), 2);
    let home = backend(&resp);

    let disable = client
        .request(
            http::Method::POST,
            &demo.admin_url(&format!(
                "/api/upstreams/demo/servers/{}/disable",
                backends[&home]
            )),
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(disable.status, 200, "{}", disable.body);

    let moved = browse(&client, &mut jar, http::Method::GET, &demo.url("/")).await;
    assert_ne!(backend(&moved), home);
    assert_eq!(visit(&moved), 1);
    assert!(
        moved
            .header_all("set-cookie")
            .iter()
            .any(|c| c.starts_with("sluice_demo=")),
        "{moved:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_backends_echo_websockets_and_answer_health_checks() {
    let demo = RunningDemo::start(&[]).await;
    let health = get(&demo.url("/healthz")).await;
    assert_eq!(
        (health.status.as_u16(), health.body.as_str()),
        (200, "ok\n")
    );

    let mut ws = ws_connect(&format!("ws://{}/ws", demo.listen))
        .await
        .expect("WebSocket through the demo");
    assert_eq!(ws_echo(&mut ws, "hello").await.as_deref(), Ok("hello"));
    let status = status(&demo, &[]).await;
    let tunnels: u64 = status["upstreams"]["demo"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tunnels"].as_u64().unwrap())
        .sum();
    assert_eq!(tunnels, 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_admin_listener_gets_a_token_printed_in_every_command() {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], support::proxy::free_port()));
    let admin = std::net::SocketAddr::from(([0, 0, 0, 0], support::proxy::free_port()));
    let demo = RunningDemo::start_on(listen, admin, &[]).await;
    let stdout = demo.stdout();
    let token = stdout
        .split("admin token: ")
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .unwrap_or_else(|| panic!("no token printed:\n{stdout}"))
        .to_owned();
    assert!(token.len() >= 16, "{token}");
    assert!(
        stdout.contains(&format!("-H 'Authorization: Bearer {token}'")),
        "{stdout}"
    );
    let denied = get(&demo.admin_url("/api/status")).await;
    assert_eq!(denied.status, 401);
    let bearer = format!("Bearer {token}");
    status(&demo, &[("authorization", &bearer)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_only_runs_the_backends_without_a_proxy() {
    let proxy_port = support::proxy::free_port();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--backends-only",
            "--backends",
            "2",
            "--backend-port",
            "0",
        ])
        .args(["--listen", &format!("127.0.0.1:{proxy_port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice demo --backends-only");
    let stdout = support::proxy::capture(child.stdout.take().unwrap());
    let mut demo = Demo(child);
    let printed = || stdout.lock().unwrap().clone();
    poll_until(
        Duration::from_secs(30),
        "the backends are printed",
        async || printed().contains("Stop with Ctrl-C."),
    )
    .await;
    let text = printed();
    let addresses: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("backend-"))
        .filter_map(|l| l.split_once(" on ").map(|(_, addr)| addr))
        .collect();
    assert_eq!(addresses.len(), 2, "{text}");
    for address in addresses {
        let resp = get(&format!("http://{address}/")).await;
        assert!(
            resp.body.starts_with("Hello from backend-"),
            "{}",
            resp.body
        );
    }
    assert!(
        try_get(&format!("http://127.0.0.1:{proxy_port}/"))
            .await
            .is_err(),
        "no proxy runs"
    );
    assert!(demo.0.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn demo_help_lists_its_flags() {
    let help = Command::new(BIN)
        .args(["demo", "--help"])
        .output()
        .expect("run sluice demo --help");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--admin",
        "--backends",
        "--token",
        "--backend-port",
        "--backends-only",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_passes_on_2xx_and_3xx_only() {
    let ok = MockUpstream::named("ok").start().await;
    let moved = MockUpstream::named("moved").status(302).start().await;
    let missing = MockUpstream::named("missing").status(404).start().await;
    let refused = support::proxy::free_port();
    let probe = |url: String| async move {
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["probe", &url])
                .output()
                .expect("run sluice probe")
                .status
                .code()
        })
        .await
        .unwrap()
    };
    assert_eq!(
        probe(format!("http://{}/healthz", ok.address())).await,
        Some(0)
    );
    assert_eq!(probe(format!("http://{}/", moved.address())).await, Some(0));
    assert_eq!(
        probe(format!("http://{}/", missing.address())).await,
        Some(1)
    );
    assert_eq!(probe(format!("http://127.0.0.1:{refused}/")).await, Some(1));
    assert_eq!(probe("https://127.0.0.1/".to_owned()).await, Some(1));
    assert_eq!(ok.count(), 1, "one GET per probe");
}
