//! The dashboard in a real browser: headless Chromium loads it from
//! `sluice demo`, the page draws the three servers and their charts without
//! a console error, a typed drain deadline survives the refreshes, and a
//! click on *drain* turns that server's badge to draining. The screenshot lands in `target/dashboard.png`.
//!
//! Without Chromium the test says it is skipped, except in CI (`CI=true`),
//! where `.ci/run` installs it and its absence is a failure.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::cdp::{Browser, chromium};
use support::client::*;
use support::demo::Demo;
use support::websocket::ws_echo;

fn screenshot_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        )
        .join("dashboard.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_charts_the_demo_and_drains_a_server_on_click() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed, and CI must run the browser test (.ci/run installs it)"
        );
        eprintln!(
            "skipping the dashboard browser test: no chromium on PATH (apt-get install chromium); with CI=true this fails instead"
        );
        return;
    };
    let demo = Demo::start(&[]).await;
    let backends = demo.backends();
    assert_eq!(backends.len(), 3, "{}", demo.stdout());

    // A WebSocket held open keeps its server from being drained at once,
    // so the badge shows the in-between state, draining.
    let (mut ws, handshake) = tokio_tungstenite::connect_async(format!("ws://{}/ws", demo.listen))
        .await
        .expect("a WebSocket through the demo");
    assert_eq!(ws_echo(&mut ws, "hold").await.as_deref(), Ok("hold"));
    let held = handshake
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .and_then(|name| backends.get(name))
        .expect("the handshake names its backend")
        .clone();

    // Traffic for the charts, until the test ends.
    let url = demo.url("/");
    let traffic = tokio::spawn(async move {
        let client = Client::new();
        loop {
            let _ = client.try_get(&url).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let mut browser = Browser::launch(&chromium).await;
    browser.navigate(&demo.admin_url("/")).await;
    browser
        .wait_for(
            Duration::from_secs(30),
            "three servers are shown",
            "document.querySelectorAll('span.state[data-server]').length === 3",
        )
        .await;
    browser
        .wait_for(
            Duration::from_secs(60),
            "all four charts have data",
            "(() => { const charts = [...document.querySelectorAll('svg.chart')]; \
             return charts.length === 4 && charts.every((c) => +c.dataset.points >= 3) \
             && document.querySelectorAll('svg.chart[data-metric=rps] path.series').length === 3; })()",
        )
        .await;

    // A drain deadline typed in survives the page's refreshes.
    let deadline_field = "document.querySelector('input[aria-label=\"drain deadline\"]')";
    browser.eval(&format!("{deadline_field}.focus()")).await;
    browser
        .call("Input.insertText", serde_json::json!({"text": "10m"}))
        .await;
    let shown = browser
        .eval("document.getElementById('meta').textContent")
        .await;
    browser
        .wait_for(
            Duration::from_secs(10),
            "the page refreshes",
            &format!("document.getElementById('meta').textContent !== {shown}"),
        )
        .await;
    assert_eq!(
        browser
            .eval(&format!(
                "document.activeElement === {deadline_field} && {deadline_field}.value"
            ))
            .await,
        "10m",
        "the deadline field keeps its focus and text across a refresh"
    );

    browser
        .click(&format!(
            "button[data-action=drain][data-server=\"{held}\"]"
        ))
        .await;
    let badge = format!("document.querySelector('span.state[data-server=\"{held}\"]')");
    browser
        .wait_for(
            Duration::from_secs(30),
            "the drained server's badge says draining",
            &format!(
                "{badge}.textContent === 'draining' && {badge}.classList.contains('draining')"
            ),
        )
        .await;
    browser
        .wait_for(
            Duration::from_secs(10),
            "the drain panel shows the deadline and waits for the open tunnel",
            &format!(
                "(() => {{ const card = document.querySelector('.drain-card[data-server=\"{held}\"]'); \
                 return !!card && card.textContent.includes('1 tunnel') \
                 && card.textContent.includes('deadline') && card.textContent.includes('not yet'); }})()"
            ),
        )
        .await;
    let shot = screenshot_path();
    browser.screenshot(&shot).await;
    let size = std::fs::metadata(&shot)
        .expect("the screenshot was written")
        .len();
    assert!(
        size > 10_000,
        "a {size}-byte screenshot is not the dashboard"
    );

    // The tunnel closes: drained, and the panel says it is safe to remove.
    drop(ws);
    browser
        .wait_for(
            Duration::from_secs(30),
            "the server is drained and safe to remove",
            &format!(
                "{badge}.textContent === 'drained' && \
                 document.querySelector('.drain-card[data-server=\"{held}\"]').textContent.includes('safe to remove')"
            ),
        )
        .await;

    traffic.abort();
    let errors = browser.console_errors();
    browser.close().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}
