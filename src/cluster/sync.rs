//! Keeping this instance's operator state in step with Redis: subscribe,
//! then re-read the whole hash (so nothing announced in between is missed),
//! apply each change as it is announced, re-read every few seconds (so a
//! lost message is repaired), and reconnect with backoff when Redis goes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;

use super::store::{Change, Entry, Field, Store, decode_message};
use super::{Cluster, ClusterError, heartbeat};
use crate::runtime::{Shared, clock};

/// A dead connection is noticed by its subscription closing, or by a
/// command timing out: these bound how long that takes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
const RESYNC_EVERY: Duration = Duration::from_secs(3);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub async fn run(
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    client: redis::Client,
    conn: ConnectionManager,
) {
    let store = Store::new(cluster.settings.keys.clone());
    let mut backoff = BACKOFF_FIRST;
    let mut first = true;
    loop {
        let Err(error) = session(
            &shared,
            &cluster,
            &client,
            &store,
            conn.clone(),
            &mut backoff,
        )
        .await;
        if cluster.set_connected(false) {
            tracing::warn!(%error, "cluster: lost Redis; serving on the last known state");
        } else if first {
            tracing::warn!(%error, "cluster: Redis unreachable; serving on the file's state until it answers");
        } else {
            tracing::debug!(%error, ?backoff, "cluster: Redis still unreachable");
        }
        first = false;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life: returns only with what ended it.
async fn session(
    shared: &Shared,
    cluster: &Cluster,
    client: &redis::Client,
    store: &Store,
    mut conn: ConnectionManager,
    backoff: &mut Duration,
) -> Result<Infallible, ClusterError> {
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| ClusterError::Timeout(CONNECT_TIMEOUT))??;
    let keys = &cluster.settings.keys;
    pubsub.subscribe(&[&keys.changes, &keys.beats]).await?;
    resync(shared, cluster, store, &mut conn).await?;
    if cluster.set_connected(true) {
        tracing::info!(
            instance = %cluster.settings.instance,
            redis = %cluster.settings.redis.addr(),
            "cluster: connected"
        );
    }
    *backoff = BACKOFF_FIRST;
    let mut messages = pubsub.on_message();
    let mut resync_every = tokio::time::interval(RESYNC_EVERY);
    resync_every.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(ClusterError::SubscriptionEnded);
                };
                let payload: String = message.get_payload()?;
                if message.get_channel_name() == keys.beats {
                    heartbeat::heard(shared, cluster, &payload);
                    continue;
                }
                match decode_message(&payload) {
                    Some((field, entry)) => announced(shared, cluster, &field, &entry),
                    None => tracing::warn!(payload, "cluster: ignoring an unreadable message"),
                }
            }
            () = cluster.wake.notified() => {
                let unsent = cluster.known().take_unsent();
                for (field, entry) in unsent {
                    store.write(&mut conn, &field, &entry).await?;
                }
            }
            _ = resync_every.tick() => resync(shared, cluster, store, &mut conn).await?,
        }
    }
}

/// Reads the whole hash: applies what is newer, writes back what is older
/// there (or missing) than known here.
async fn resync(
    shared: &Shared,
    cluster: &Cluster,
    store: &Store,
    conn: &mut ConnectionManager,
) -> Result<(), ClusterError> {
    // Sent below if Redis lacks them; otherwise they are already there.
    cluster.known().take_unsent();
    let remote = store.read_all(conn).await?;
    let write_back = {
        let mut known = cluster.known();
        for (field, entry) in &remote {
            known.merge(field, entry);
        }
        known.newer_than(&remote)
    };
    let unapplied = cluster.known().unapplied();
    if !unapplied.is_empty() {
        for (field, entry) in unapplied {
            apply(shared, cluster, &field, &entry);
        }
        cluster.applied_changes();
    }
    for (field, entry) in write_back {
        tracing::info!(
            field = field.as_str(),
            "cluster: writing back a change Redis lacks"
        );
        store.write(conn, &field, &entry).await?;
    }
    Ok(())
}

/// An announced entry: applied if newer than the one known.
fn announced(shared: &Shared, cluster: &Cluster, field: &Field, entry: &Entry) {
    if cluster.known().merge(field, entry) {
        apply(shared, cluster, field, entry);
        cluster.applied_changes();
    }
}

/// Applies an entry to the running servers, as this instance's own API
/// would have; a server not in the running config keeps it for later (and
/// gets nothing from here meanwhile, which the heartbeat says).
fn apply(shared: &Shared, cluster: &Cluster, field: &Field, entry: &Entry) {
    let Some((upstream, address)) = field.server() else {
        return;
    };
    let snapshot = shared.load();
    let Some(server) = snapshot
        .upstream(upstream)
        .and_then(|u| u.servers.iter().find(|s| s.cfg.address == address))
    else {
        return;
    };
    let state = &server.state;
    let id = Some(entry.version.change_id());
    match entry.change {
        Change::Drain { deadline_unix_ms } => {
            state.drain(deadline_unix_ms.map(clock::mono_of_unix), id)
        }
        Change::Enable => state.enable(id),
        Change::Disable => state.disable(id),
        Change::Weight { value } => {
            if state.set_weight(Some(value)) {
                shared.rebuild();
            }
        }
    }
    cluster.known().mark_applied(field, &entry.version);
    if entry.version.by != cluster.settings.instance {
        tracing::info!(
            upstream,
            server = address,
            change = ?entry.change,
            by = %entry.version.by,
            "cluster: applied a change made elsewhere"
        );
    }
}
