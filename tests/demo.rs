//! `sluice demo`, the README's first command: three backends behind the
//! proxy on fixed ports, traffic spread over all three.

mod support;

use std::collections::HashSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::client::*;

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
