//! The file watcher: which files a config depends on, and turning their
//! changes on disk into one reload once the writing has stopped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{Reloader, reload};
use crate::config::{self, Config};

/// Editors and `kubectl` write a file in several steps (truncate, write,
/// rename, symlink swap): wait for this much quiet before reading it.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Kubernetes mounts a ConfigMap or Secret as symlinks through `..data`, and
/// updates it by swapping that one symlink: the files themselves never change.
const KUBERNETES_DATA: &str = "..data";

/// A running watcher and the directories it watches.
pub(super) struct Watching {
    watcher: RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
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
pub(super) fn sync_watch(reloader: &Arc<Reloader>) {
    let config = reloader.server.shared.load().config.clone();
    let mut slot = reloader.watcher.lock().unwrap_or_else(|e| e.into_inner());
    if !config.global.watch {
        if slot.take().is_some() {
            tracing::info!("watch is off: no longer watching the config file");
        }
        return;
    }
    let started = slot.is_none();
    if started {
        match start_watcher(reloader) {
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
        catch_up(reloader);
    }
}

/// A change made between reading the files and the watcher starting raised
/// no event (the listeners already answer then, so a client may well have
/// made one): reread the config once the watcher runs, and reload if it
/// differs from the running one.
fn catch_up(reloader: &Arc<Reloader>) {
    let weak = Arc::downgrade(reloader);
    tokio::spawn(async move {
        let Some(reloader) = weak.upgrade() else {
            return;
        };
        let running = reloader.server.shared.load().config.clone();
        let path = running.path.clone();
        let on_disk = tokio::task::spawn_blocking(move || config::load(&path)).await;
        if matches!(&on_disk, Ok(Ok(config)) if *config == *running) {
            return;
        }
        tracing::info!("config file changed on disk: reloading");
        // The outcome is logged and counted by `reload`.
        let _ = reload(&reloader).await;
    });
}

fn start_watcher(reloader: &Arc<Reloader>) -> notify::Result<RecommendedWatcher> {
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        // The receiver is gone only when the watcher is being dropped.
        let _ = tx.send(event);
    })?;
    tokio::spawn(watch_loop(Arc::downgrade(reloader), rx));
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
    reloader: Weak<Reloader>,
    mut events: mpsc::UnboundedReceiver<notify::Result<Event>>,
) {
    let mut config_target = reloader
        .upgrade()
        .and_then(|r| std::fs::canonicalize(&r.server.shared.load().config.path).ok());
    let mut touches_config = |reloader: &Reloader, event: notify::Result<Event>| match event {
        Ok(event) => {
            let config = reloader.server.shared.load().config.clone();
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
        let Some(reloader) = reloader.upgrade() else {
            return;
        };
        if !touches_config(&reloader, event) {
            continue;
        }
        let mut quiet_at = tokio::time::Instant::now() + DEBOUNCE;
        loop {
            match tokio::time::timeout_at(quiet_at, events.recv()).await {
                Ok(Some(event)) => {
                    if touches_config(&reloader, event) {
                        quiet_at = tokio::time::Instant::now() + DEBOUNCE;
                    }
                }
                Ok(None) => return,
                Err(_quiet) => break,
            }
        }
        tracing::info!("config file changed on disk: reloading");
        // The outcome is logged and counted by `reload`.
        let _ = reload(&reloader).await;
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
