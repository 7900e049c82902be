//! Runs the real `sluice` binary against a config written to a temporary
//! directory, and waits for it by polling its listeners, never by sleeping.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::client::poll_until;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const READY_DEADLINE: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(20);
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// A port that was free a moment ago, for configs that need fixed ports.
pub fn free_port() -> u16 {
    // The kernel may hand out a port again as soon as its listener closes,
    // so two calls in one test (a listener and an admin port) could get the
    // same one: never give a port twice in one test process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup,
    Term,
    Int,
    Kill,
}

impl Signal {
    fn flag(self) -> &'static str {
        match self {
            Signal::Hup => "-HUP",
            Signal::Term => "-TERM",
            Signal::Int => "-INT",
            Signal::Kill => "-KILL",
        }
    }
}

/// A running `sluice run -c FILE`. Dropping it kills the process.
pub struct Proxy {
    child: Child,
    exit: Option<ExitStatus>,
    dir: TempDir,
    config_path: PathBuf,
    listeners: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Proxy {
    /// Starts the proxy and waits (10 s at most) until every listener and the
    /// admin listener accept TCP. Panics with the captured stderr otherwise.
    pub async fn start(toml: &str) -> Proxy {
        let mut proxy = Self::spawn(toml);
        assert!(
            !proxy.listeners.is_empty() || proxy.admin.is_some(),
            "no `listen` address to wait for in this config; use Proxy::spawn:\n{toml}"
        );
        proxy.wait_ready().await;
        proxy
    }

    /// Starts the proxy without waiting for it: for configs it should refuse.
    pub fn spawn(toml: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir for the proxy config");
        let config_path = dir.path().join("sluice.toml");
        std::fs::write(&config_path, toml).expect("write the proxy config");
        let (listeners, admin) = listen_addrs(toml);
        let mut child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let stdout = capture(child.stdout.take().expect("piped stdout"));
        let stderr = capture(child.stderr.take().expect("piped stderr"));
        Proxy {
            child,
            exit: None,
            dir,
            config_path,
            listeners,
            admin,
            stdout,
            stderr,
        }
    }

    /// Waits until every listener in the config accepts TCP.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        let mut pending: Vec<SocketAddr> =
            self.listeners.iter().chain(&self.admin).copied().collect();
        while !pending.is_empty() {
            if let Some(status) = self.try_exit() {
                panic!(
                    "sluice exited with {status} before listening on {pending:?}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "sluice did not listen on {pending:?} within {READY_DEADLINE:?}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            let mut still = Vec::new();
            for addr in pending {
                if tokio::net::TcpStream::connect(addr).await.is_err() {
                    still.push(addr);
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
    }

    /// Runs `sluice check -c FILE`: (exit status was success, stdout, stderr).
    pub fn check(toml: &str) -> (bool, String, String) {
        let dir = tempfile::tempdir().expect("temp dir for the proxy config");
        let config_path = dir.path().join("sluice.toml");
        std::fs::write(&config_path, toml).expect("write the proxy config");
        let output = Command::new(BIN)
            .args(["check", "-c"])
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {BIN} check: {e}"));
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The first listener.
    pub fn addr(&self) -> SocketAddr {
        *self
            .listeners
            .first()
            .expect("the config has no [[listener]]")
    }

    /// Every `[[listener]]`, in config order.
    pub fn listeners(&self) -> &[SocketAddr] {
        &self.listeners
    }

    /// `http://127.0.0.1:PORT{path}` on the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the config has no [admin] listen")
    }

    /// `http://127.0.0.1:PORT{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything the proxy wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temporary directory holding the config: a place for certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites the config file in place (the watcher or a SIGHUP picks it up).
    pub fn write_config(&self, toml: &str) {
        std::fs::write(&self.config_path, toml).expect("rewrite the proxy config");
    }

    /// How many times the proxy has logged `needle` so far.
    pub fn logged(&self, needle: &str) -> usize {
        self.stderr().matches(needle).count()
    }

    /// Writes `toml`, sends SIGHUP, and waits (10 s at most) until the proxy
    /// logs the reload's outcome: true when it applied, false when rejected.
    pub async fn hup_reload(&self, toml: &str) -> bool {
        let (applied, rejected) = (
            self.logged("config reloaded"),
            self.logged("reload rejected"),
        );
        self.write_config(toml);
        self.signal(Signal::Hup);
        poll_until(RELOAD_DEADLINE, "the reload is logged", async || {
            self.logged("config reloaded") > applied || self.logged("reload rejected") > rejected
        })
        .await;
        self.logged("config reloaded") > applied
    }

    pub fn signal(&self, signal: Signal) {
        let status = Command::new("kill")
            .arg(signal.flag())
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill {} {} failed",
            signal.flag(),
            self.pid()
        );
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("poll the proxy process");
        }
        self.exit
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- sluice stderr ---\n{}", self.stderr());
        }
    }
}

pub fn capture(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    text
}

/// The `[[listener]] listen` addresses and `[admin] listen` of a config, as
/// addresses a client can connect to (a wildcard becomes loopback).
fn listen_addrs(toml: &str) -> (Vec<SocketAddr>, Option<SocketAddr>) {
    let Ok(value) = toml.parse::<toml::Table>() else {
        // An invalid config is a legitimate test input: nothing to wait on.
        return (Vec::new(), None);
    };
    let listeners = value
        .get("listener")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("listen")?.as_str())
        .filter_map(connectable)
        .collect();
    let admin = value
        .get("admin")
        .and_then(|a| a.get("listen"))
        .and_then(|l| l.as_str())
        .and_then(connectable);
    (listeners, admin)
}

fn connectable(listen: &str) -> Option<SocketAddr> {
    let mut addr: SocketAddr = listen.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Some(addr)
}
