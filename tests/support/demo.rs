//! `sluice demo` on free ports, and a cookie jar, so a test can play the
//! demo's story the way its printed commands do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::{Resp, try_get};
use super::proxy::{capture, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A running `sluice demo`. Dropping it kills the process.
pub struct Demo {
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Demo {
    /// Starts the demo with its proxy and admin on free loopback ports, its
    /// backends on ports the system picks, plus `extra` flags; waits until
    /// it has printed its story and the proxy answers.
    pub async fn start(extra: &[&str]) -> Demo {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::start_on(listen, admin, extra).await
    }

    pub async fn start_on(listen: SocketAddr, admin: SocketAddr, extra: &[&str]) -> Demo {
        let mut child = Command::new(BIN)
            .arg("demo")
            .args(["--listen", &listen.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--backend-port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice demo");
        let stdout = capture(child.stdout.take().expect("piped stdout"));
        let stderr = capture(child.stderr.take().expect("piped stderr"));
        let mut demo = Demo {
            child,
            listen,
            admin: loopback_if_unspecified(admin),
            stdout,
            stderr,
        };
        demo.wait_ready().await;
        demo
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let printed = self.stdout().contains("Stop with Ctrl-C.");
            if printed
                && let Ok(resp) = try_get(&self.url("/healthz")).await
                && resp.status == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sluice demo exited with {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sluice demo was not ready within {READY_DEADLINE:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.stdout(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The backends the demo printed, by name: `backend-1` -> its address.
    pub fn backends(&self) -> BTreeMap<String, String> {
        self.stdout()
            .lines()
            .filter_map(|line| line.trim().split_once(" on "))
            .filter(|(name, _)| name.starts_with("backend-"))
            .map(|(name, addr)| (name.to_owned(), addr.to_owned()))
            .collect()
    }
}

/// 0.0.0.0:PORT is reached as 127.0.0.1:PORT.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cookies as a browser (or `curl -b jar -c jar`) keeps them: the last
/// value set for each name.
#[derive(Debug, Default, Clone)]
pub struct Jar(BTreeMap<String, String>);

impl Jar {
    /// Takes every `Set-Cookie` of `resp`.
    pub fn update(&mut self, resp: &Resp) {
        for cookie in resp.header_all("set-cookie") {
            let pair = cookie.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.0
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The `Cookie` header value.
    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}
