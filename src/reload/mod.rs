//! Hot reload: read, parse and validate the whole file, bind new listeners,
//! then swap the config in one step; and what triggers it: a change to the
//! file (or to a certificate it names) on disk, `SIGHUP`, and the admin API.
//!
//! Nothing is half-applied: every error (a bad file, a listener that cannot
//! bind) is found before the swap, and the running config stays. Requests
//! already in flight finish on the snapshot they started with; per-server
//! state survives through the [`Registry`](crate::runtime::Registry).
//!
//! [`diff`] says what a new config changes, [`swap`] applies it, [`watch`]
//! notices a changed file. How a rejection reads over HTTP is the admin
//! API's business, not this module's.

mod diff;
mod swap;
mod watch;

/// The config the reload unit tests start from: one listener on
/// 127.0.0.1:18080 (its `listen` value at line 3, column 10) in front of
/// two servers.
#[cfg(test)]
const TEST_CONFIG: &str = r#"
[[listener]]
listen = "127.0.0.1:18080"
upstream = "web"

[upstream.web]
[[upstream.web.server]]
address = "127.0.0.1:19001"
[[upstream.web.server]]
address = "127.0.0.1:19002"
"#;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::signal::unix::Signal;

use crate::config::ConfigError;
use crate::server::{Server, ServerError};
use crate::tls::TlsError;
pub use diff::ReloadReport;

/// What reloads a running [`Server`]: every trigger (`SIGHUP`, the file
/// watcher, the admin API) goes through the one reloader the server has.
pub struct Reloader {
    pub server: Arc<Server>,
    /// One reload at a time, whatever triggered it.
    serial: tokio::sync::Mutex<()>,
    /// The file watcher while `[global] watch` is on.
    watcher: Mutex<Option<watch::Watching>>,
}

impl Reloader {
    pub fn new(server: Arc<Server>) -> Arc<Reloader> {
        Arc::new(Reloader {
            server,
            serial: tokio::sync::Mutex::new(()),
            watcher: Mutex::new(None),
        })
    }
}

/// Why a reload was rejected. The running config is untouched.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read, or is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A new listener address cannot be bound (in use, not local, ...).
    #[error("{}cannot listen on {addr}: {source}", Position(.file, *.at))]
    Bind {
        file: PathBuf,
        /// Line and column of its `listen` key, when found.
        at: Option<(usize, usize)>,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A certificate or key the new config names is unusable; the file is
    /// named in the message.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Loading panicked on its blocking thread: a bug, not a bad file.
    #[error("loading the config failed: {0}")]
    Load(#[source] tokio::task::JoinError),
    /// Any other failure to start serving a new listener.
    #[error(transparent)]
    Server(ServerError),
    /// Shutdown has begun: reloading would start listeners again.
    #[error("shutting down: not reloading")]
    ShuttingDown,
}

/// `FILE:LINE:COL: ` before a message, like a config diagnostic.
struct Position<'a>(&'a Path, Option<(usize, usize)>);

impl fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some((line, column)) => write!(f, "{}:{line}:{column}: ", self.0.display()),
            None => write!(f, "{}: ", self.0.display()),
        }
    }
}

/// Reloads the config file the server was started with. Serialized: a
/// reload that arrives while another runs waits for it, then reads the file
/// again. Logs the outcome and counts it in the reload metrics.
pub async fn reload(reloader: &Arc<Reloader>) -> Result<ReloadReport, ReloadError> {
    let _one_at_a_time = reloader.serial.lock().await;
    let server = &reloader.server;
    let result = swap::apply(server).await;
    match &result {
        Ok(report) => {
            server.shared.reloads_ok.inc();
            tracing::info!(changes = %report, "config reloaded");
            for key in &report.restart_required {
                tracing::warn!(key, "this setting changed but takes effect only at restart");
            }
            watch::sync_watch(reloader);
        }
        Err(err) => {
            server.shared.reloads_failed.inc();
            tracing::error!("reload rejected, still serving the previous config: {err}");
        }
    }
    result
}

/// Starts the reload triggers of a running server: `SIGHUP` (its handler,
/// `hangups`, installed by the caller before the listeners bound) and the
/// file watcher when `[global] watch` is on.
pub fn start(reloader: &Arc<Reloader>, mut hangups: Signal) {
    let weak = Arc::downgrade(reloader);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(reloader) = weak.upgrade() else {
                return;
            };
            tracing::info!("SIGHUP: reloading the config");
            // The outcome is logged and counted by `reload`.
            let _ = reload(&reloader).await;
        }
    });
    watch::sync_watch(reloader);
}
