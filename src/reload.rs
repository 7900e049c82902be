//! Hot reload: read, parse and validate the whole file, bind new listeners,
//! then swap the config in one step; and what triggers it: a change to the
//! file (or to a certificate it names) on disk, `SIGHUP`, and the admin API.
//!
//! Nothing is half-applied: every error (a bad file, a listener that cannot
//! bind) is found before the swap, and the running config stays. Requests
//! already in flight finish on the snapshot they started with; per-server
//! state survives through the [`Registry`](crate::runtime::Registry).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::StatusCode;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde::Serialize;
use serde_json::json;
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;

use crate::config::{self, Config, ConfigError};
use crate::server::{self, Server, ServerError};
use crate::tls::{self, Certs, TlsError};

/// Editors and `kubectl` write a file in several steps (truncate, write,
/// rename, symlink swap): wait for this much quiet before reading it.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Kubernetes mounts a ConfigMap or Secret as symlinks through `..data`, and
/// updates it by swapping that one symlink: the files themselves never change.
const KUBERNETES_DATA: &str = "..data";

/// Reload bookkeeping that lives as long as the [`Server`].
#[derive(Default)]
pub struct ReloadState {
    /// One reload at a time, whatever triggered it.
    serial: tokio::sync::Mutex<()>,
    /// The file watcher while `[global] watch` is on.
    watcher: Mutex<Option<Watching>>,
}

struct Watching {
    watcher: RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
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

impl ReloadError {
    /// The HTTP status `POST /api/reload` answers with: 422 for a file that
    /// cannot be applied, 503 during shutdown, 500 for a bug.
    pub fn status(&self) -> StatusCode {
        match self {
            ReloadError::Config(_) | ReloadError::Bind { .. } | ReloadError::Tls(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ReloadError::Load(_) | ReloadError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ReloadError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The body of a rejected `POST /api/reload`: the whole message, and
    /// each problem as `{file, line, column, message}` (`line` and `column`
    /// are null when the problem has no place in the file, e.g. it cannot be
    /// read).
    pub fn to_json(&self) -> serde_json::Value {
        let diagnostics: Vec<serde_json::Value> = match self {
            ReloadError::Config(err) if !err.diagnostics().is_empty() => err
                .diagnostics()
                .iter()
                .map(|d| {
                    json!({
                        "file": d.file.display().to_string(),
                        "line": d.line,
                        "column": d.column,
                        "message": d.kind.to_string(),
                    })
                })
                .collect(),
            ReloadError::Config(ConfigError::Read { path, source }) => vec![json!({
                "file": path.display().to_string(),
                "line": null,
                "column": null,
                "message": format!("cannot read the config file: {source}"),
            })],
            ReloadError::Tls(err) => vec![json!({
                "file": err.path().map(|p| p.display().to_string()),
                "line": null,
                "column": null,
                "message": err.to_string(),
            })],
            ReloadError::Config(_)
            | ReloadError::Load(_)
            | ReloadError::Server(_)
            | ReloadError::ShuttingDown => Vec::new(),
            ReloadError::Bind {
                file,
                at,
                addr,
                source,
            } => vec![json!({
                "file": file.display().to_string(),
                "line": at.map(|(line, _)| line),
                "column": at.map(|(_, column)| column),
                "message": format!("cannot listen on {addr}: {source}"),
            })],
        };
        json!({
            "error": self.to_string(),
            "diagnostics": diagnostics,
        })
    }
}

/// Names added, removed and changed between two configs.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    /// Compares two keyed lists; a key present in both whose value differs
    /// is changed.
    fn between<T: PartialEq>(old: &[(String, T)], new: &[(String, T)]) -> Changes {
        let find = |list: &[(String, T)], key: &str| list.iter().position(|(k, _)| k == key);
        Changes {
            added: new
                .iter()
                .filter(|(k, _)| find(old, k).is_none())
                .map(|(k, _)| k.clone())
                .collect(),
            removed: old
                .iter()
                .filter(|(k, _)| find(new, k).is_none())
                .map(|(k, _)| k.clone())
                .collect(),
            changed: new
                .iter()
                .filter(|(k, v)| find(old, k).is_some_and(|i| old[i].1 != *v))
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (sign, names) in [
            ("+", &self.added),
            ("-", &self.removed),
            ("~", &self.changed),
        ] {
            if names.is_empty() {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{sign}[{}]", names.join(", "))?;
        }
        Ok(())
    }
}

/// What a successful reload changed: the body of `POST /api/reload`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// By `listen` address, each listener's identity across reloads.
    pub listeners: Changes,
    /// By name; `changed` includes upstreams whose servers changed.
    pub upstreams: Changes,
    /// By address, for each surviving upstream whose servers changed.
    pub servers: BTreeMap<String, Changes>,
    /// Settings that changed but take effect only when sluice restarts.
    pub restart_required: Vec<&'static str>,
    /// Listeners (by `listen` address) that kept TLS and now serve other
    /// certificates: renewed files at the same paths, or new paths.
    pub certificates_renewed: Vec<String>,
}

impl ReloadReport {
    pub fn between(old: &Config, new: &Config) -> ReloadReport {
        let listeners = |c: &Config| {
            c.listeners
                .iter()
                .map(|l| (l.listen.to_string(), l.clone()))
                .collect::<Vec<_>>()
        };
        let upstreams = |c: &Config| {
            c.upstreams
                .iter()
                .map(|u| (u.name.clone(), u.clone()))
                .collect::<Vec<_>>()
        };
        let mut servers = BTreeMap::new();
        for upstream in &new.upstreams {
            let Some(before) = old.upstream(&upstream.name) else {
                continue;
            };
            let list = |u: &config::Upstream| {
                u.servers
                    .iter()
                    .map(|s| (s.address.clone(), s.clone()))
                    .collect::<Vec<_>>()
            };
            let changes = Changes::between(&list(before), &list(upstream));
            if !changes.is_empty() {
                servers.insert(upstream.name.clone(), changes);
            }
        }
        let restart_required = [
            (
                "global.worker_threads",
                old.global.worker_threads != new.global.worker_threads,
            ),
            ("log.level", old.log.level != new.log.level),
            ("log.format", old.log.format != new.log.format),
            (
                "admin.listen",
                old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen),
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
        ReloadReport {
            listeners: Changes::between(&listeners(old), &listeners(new)),
            upstreams: Changes::between(&upstreams(old), &upstreams(new)),
            servers,
            restart_required,
            certificates_renewed: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
            && self.upstreams.is_empty()
            && self.servers.is_empty()
            && self.certificates_renewed.is_empty()
    }
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no listener, upstream or server changed");
        }
        let mut parts = Vec::new();
        if !self.listeners.is_empty() {
            parts.push(format!("listeners {}", self.listeners));
        }
        if !self.upstreams.is_empty() {
            parts.push(format!("upstreams {}", self.upstreams));
        }
        for (upstream, changes) in &self.servers {
            parts.push(format!("servers of {upstream} {changes}"));
        }
        if !self.certificates_renewed.is_empty() {
            parts.push(format!(
                "certificates renewed on [{}]",
                self.certificates_renewed.join(", ")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Reloads the config file the server was started with. Serialized: a
/// reload that arrives while another runs waits for it, then reads the file
/// again. Logs the outcome and counts it in the reload metrics.
pub async fn reload(server: &Arc<Server>) -> Result<ReloadReport, ReloadError> {
    let _one_at_a_time = server.reload.serial.lock().await;
    let result = apply(server).await;
    match &result {
        Ok(report) => {
            server.shared.reloads_ok.inc();
            tracing::info!(changes = %report, "config reloaded");
            for key in &report.restart_required {
                tracing::warn!(key, "this setting changed but takes effect only at restart");
            }
            sync_watch(server);
        }
        Err(err) => {
            server.shared.reloads_failed.inc();
            tracing::error!("reload rejected, still serving the previous config: {err}");
        }
    }
    result
}

async fn apply(server: &Arc<Server>) -> Result<ReloadReport, ReloadError> {
    if server.is_shutting_down() {
        return Err(ReloadError::ShuttingDown);
    }
    let old = server.shared.load();
    let path = old.config.path.clone();
    let (text, config, certs) = tokio::task::spawn_blocking(move || read(&path))
        .await
        .map_err(ReloadError::Load)??;

    // Bind before anything changes: a listener that cannot bind rejects the
    // whole reload. The sockets bound so far close when `bound` drops.
    let listening = server.listening();
    let mut bound = Vec::new();
    for listener in &config.listeners {
        if listening.contains(&listener.listen) {
            continue;
        }
        match server::bind(listener.listen).await {
            Ok(socket) => bound.push((listener.listen, socket)),
            Err(ServerError::Bind { addr, source }) => {
                return Err(ReloadError::Bind {
                    at: listen_position(&text, addr),
                    file: config.path.clone(),
                    addr,
                    source,
                });
            }
            Err(other) => return Err(ReloadError::Server(other)),
        }
    }

    let mut report = ReloadReport::between(&old.config, &config);
    let kept: HashSet<SocketAddr> = config.listeners.iter().map(|l| l.listen).collect();
    // Stop removed listeners first, so a connection they accept at the last
    // moment still finds its listener in the snapshot it loads.
    for addr in listening.into_iter().filter(|a| !kept.contains(a)) {
        server.stop_listener(addr);
    }
    // Certificates first: a new TLS listener must never answer in plaintext,
    // and renewed certificates apply even when the config text is unchanged.
    report.certificates_renewed = server
        .apply_tls(certs)?
        .iter()
        .map(SocketAddr::to_string)
        .collect();
    server.shared.swap(config);
    for (addr, socket) in bound {
        server.serve(addr, socket);
    }
    Ok(report)
}

/// Reads and checks the file and loads every certificate it names, keeping
/// its text to place bind errors.
fn read(path: &Path) -> Result<(String, Config, Certs), ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config = config::parse(&text, path)?;
    let certs = tls::load(&config)?;
    Ok((text, config, certs))
}

/// Line and column of the `listen` value of the `[[listener]]` on `addr`.
fn listen_position(text: &str, addr: SocketAddr) -> Option<(usize, usize)> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        listener: Vec<Listener>,
    }
    #[derive(serde::Deserialize)]
    struct Listener {
        listen: toml::Spanned<String>,
    }
    let file: File = toml::from_str(text).ok()?;
    let listen = file
        .listener
        .into_iter()
        .find(|l| l.listen.get_ref().parse::<SocketAddr>() == Ok(addr))?;
    Some(config::line_column(text, listen.listen.span().start))
}

/// Starts the reload triggers of a running server: `SIGHUP` (its handler,
/// `hangups`, installed by the caller before the listeners bound) and the
/// file watcher when `[global] watch` is on.
pub fn start(server: &Arc<Server>, mut hangups: Signal) {
    let weak = Arc::downgrade(server);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(server) = weak.upgrade() else {
                return;
            };
            tracing::info!("SIGHUP: reloading the config");
            // The outcome is logged and counted by `reload`.
            let _ = reload(&server).await;
        }
    });
    sync_watch(server);
}

/// Files whose change triggers a reload: the config and every certificate,
/// key and CA bundle it names. Absolute, so they compare equal to the paths
/// in watch events.
fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.path.clone()];
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        files.push(tls.cert.clone());
        files.push(tls.key.clone());
        for sni in &tls.sni {
            files.push(sni.cert.clone());
            files.push(sni.key.clone());
        }
    }
    files.extend(config.upstreams.iter().filter_map(|u| u.ca.clone()));
    files
        .into_iter()
        .filter_map(|f| std::path::absolute(f).ok())
        .collect()
}

/// Makes the watcher match the current config: on or off with `watch`, and
/// watching the directory of every file in [`watched_files`]. Directories,
/// not files: editors save by renaming a new file over the old one, which a
/// watch on the old file never sees.
fn sync_watch(server: &Arc<Server>) {
    let config = server.shared.load().config.clone();
    let mut slot = server
        .reload
        .watcher
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !config.global.watch {
        if slot.take().is_some() {
            tracing::info!("watch is off: no longer watching the config file");
        }
        return;
    }
    let started = slot.is_none();
    if started {
        match start_watcher(server) {
            Ok(watcher) => {
                *slot = Some(Watching {
                    watcher,
                    dirs: BTreeSet::new(),
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP instead");
                return;
            }
        }
    }
    let Some(watching) = slot.as_mut() else {
        return;
    };
    let dirs: BTreeSet<PathBuf> = watched_files(&config)
        .iter()
        .filter_map(|f| f.parent().map(Path::to_owned))
        .collect();
    for gone in watching.dirs.difference(&dirs) {
        let _ = watching.watcher.unwatch(gone);
    }
    let mut watched = BTreeSet::new();
    for dir in dirs {
        if watching.dirs.contains(&dir) {
            watched.insert(dir);
            continue;
        }
        match watching.watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), "watching for config changes");
                watched.insert(dir);
            }
            // Left out of `watched`, so the next reload tries again.
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch this directory")
            }
        }
    }
    watching.dirs = watched;
    if started {
        catch_up(server);
    }
}

/// A change made between reading the files and the watcher starting raised
/// no event (the listeners already answer then, so a client may well have
/// made one): reread the config once the watcher runs, and reload if it
/// differs from the running one.
fn catch_up(server: &Arc<Server>) {
    let weak = Arc::downgrade(server);
    tokio::spawn(async move {
        let Some(server) = weak.upgrade() else {
            return;
        };
        let running = server.shared.load().config.clone();
        let path = running.path.clone();
        let on_disk = tokio::task::spawn_blocking(move || config::load(&path)).await;
        if matches!(&on_disk, Ok(Ok(config)) if *config == *running) {
            return;
        }
        tracing::info!("config file changed on disk: reloading");
        // The outcome is logged and counted by `reload`.
        let _ = reload(&server).await;
    });
}

fn start_watcher(server: &Arc<Server>) -> notify::Result<RecommendedWatcher> {
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        // The receiver is gone only when the watcher is being dropped.
        let _ = tx.send(event);
    })?;
    tokio::spawn(watch_loop(Arc::downgrade(server), rx));
    Ok(watcher)
}

/// Turns file events into reloads: a relevant event, then [`DEBOUNCE`]
/// without another relevant one, then one reload. Ends when the watcher is
/// dropped.
///
/// Only relevant events restart the wait: the directory watched may hold
/// a file that never stops changing (a log written next to the config under
/// traffic), and its events must not postpone a reload forever.
async fn watch_loop(
    server: Weak<Server>,
    mut events: mpsc::UnboundedReceiver<notify::Result<Event>>,
) {
    let mut config_target = server
        .upgrade()
        .and_then(|s| std::fs::canonicalize(&s.shared.load().config.path).ok());
    let mut touches_config = |server: &Server, event: notify::Result<Event>| match event {
        Ok(event) => {
            let config = server.shared.load().config.clone();
            relevant(
                &event,
                &watched_files(&config),
                &config.path,
                &mut config_target,
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "watching the config file");
            false
        }
    };
    while let Some(event) = events.recv().await {
        let Some(server) = server.upgrade() else {
            return;
        };
        if !touches_config(&server, event) {
            continue;
        }
        let mut quiet_at = tokio::time::Instant::now() + DEBOUNCE;
        loop {
            match tokio::time::timeout_at(quiet_at, events.recv()).await {
                Ok(Some(event)) => {
                    if touches_config(&server, event) {
                        quiet_at = tokio::time::Instant::now() + DEBOUNCE;
                    }
                }
                Ok(None) => return,
                Err(_quiet) => break,
            }
        }
        tracing::info!("config file changed on disk: reloading");
        // The outcome is logged and counted by `reload`.
        let _ = reload(&server).await;
    }
}

/// Whether `event` (in a watched directory) touches a watched file, the
/// Kubernetes `..data` link, or retargets the config symlink.
fn relevant(
    event: &Event,
    files: &[PathBuf],
    config_path: &Path,
    config_target: &mut Option<PathBuf>,
) -> bool {
    // Opening or reading a file (reload itself does) changes nothing.
    if let EventKind::Access(kind) = event.kind
        && kind != AccessKind::Close(AccessMode::Write)
    {
        return false;
    }
    let named = event.paths.iter().any(|p| {
        p.file_name().is_some_and(|n| n == KUBERNETES_DATA) || files.iter().any(|f| f == p)
    });
    let is_symlink = std::fs::symlink_metadata(config_path).is_ok_and(|m| m.is_symlink());
    let target = std::fs::canonicalize(config_path).ok();
    let retargeted = is_symlink && target != *config_target;
    *config_target = target;
    named || retargeted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        config::parse(text, Path::new("sluice.toml")).expect("valid test config")
    }

    const BASE: &str = r#"
[[listener]]
listen = "127.0.0.1:18080"
upstream = "web"

[upstream.web]
[[upstream.web.server]]
address = "127.0.0.1:19001"
[[upstream.web.server]]
address = "127.0.0.1:19002"
"#;

    #[test]
    fn report_names_what_changed() {
        let old = parse(BASE);
        let new = parse(
            r#"
[[listener]]
listen = "127.0.0.1:18081"
upstream = "web"

[upstream.web]
[[upstream.web.server]]
address = "127.0.0.1:19001"
weight = 3
[[upstream.web.server]]
address = "127.0.0.1:19003"

[upstream.api]
[[upstream.api.server]]
address = "127.0.0.1:19004"
"#,
        );
        let report = ReloadReport::between(&old, &new);
        assert_eq!(report.listeners.added, ["127.0.0.1:18081"]);
        assert_eq!(report.listeners.removed, ["127.0.0.1:18080"]);
        assert_eq!(report.upstreams.added, ["api"]);
        assert_eq!(report.upstreams.changed, ["web"]);
        let web = &report.servers["web"];
        assert_eq!(web.added, ["127.0.0.1:19003"]);
        assert_eq!(web.removed, ["127.0.0.1:19002"]);
        assert_eq!(web.changed, ["127.0.0.1:19001"]);
        assert_eq!(
            report.to_string(),
            "listeners +[127.0.0.1:18081] -[127.0.0.1:18080]; upstreams +[api] ~[web]; \
             servers of web +[127.0.0.1:19003] -[127.0.0.1:19002] ~[127.0.0.1:19001]"
        );
    }

    #[test]
    fn same_file_reports_no_change() {
        let report = ReloadReport::between(&parse(BASE), &parse(BASE));
        assert!(report.is_empty());
        assert_eq!(
            report.to_string(),
            "no listener, upstream or server changed"
        );
    }

    #[test]
    fn bind_error_points_at_the_listen_line() {
        let addr: SocketAddr = "127.0.0.1:18080".parse().unwrap();
        assert_eq!(listen_position(BASE, addr), Some((3, 10)));
        let err = ReloadError::Bind {
            file: "sluice.toml".into(),
            at: Some((3, 10)),
            addr,
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert!(
            err.to_string()
                .starts_with("sluice.toml:3:10: cannot listen on 127.0.0.1:18080")
        );
        let body = err.to_json();
        assert_eq!(body["diagnostics"][0]["line"], 3);
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn invalid_file_lists_each_diagnostic() {
        let err = config::parse(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"nope\"\n",
            Path::new("s.toml"),
        )
        .expect_err("unknown upstream");
        let body = ReloadError::Config(err).to_json();
        assert_eq!(body["diagnostics"][0]["file"], "s.toml");
        assert_eq!(body["diagnostics"][0]["line"], 3);
    }

    #[test]
    fn reading_the_config_is_not_a_change() {
        let path = PathBuf::from("/etc/sluice/sluice.toml");
        let files = vec![path.clone()];
        let mut target = None;
        let event = |kind| Event::new(kind).add_path(path.clone());
        assert!(!relevant(
            &event(EventKind::Access(AccessKind::Close(AccessMode::Read))),
            &files,
            &path,
            &mut target
        ));
        assert!(relevant(
            &event(EventKind::Access(AccessKind::Close(AccessMode::Write))),
            &files,
            &path,
            &mut target
        ));
        let other = Event::new(EventKind::Any).add_path("/etc/sluice/other.txt".into());
        assert!(!relevant(&other, &files, &path, &mut target));
        let swap = Event::new(EventKind::Any).add_path("/etc/sluice/..data".into());
        assert!(relevant(&swap, &files, &path, &mut target));
    }
}
