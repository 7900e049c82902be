//! Every `heartbeat`, and at once whenever an operator change was applied
//! here, this instance writes its per-server load to Redis, announces it on
//! the beats channel, and reads everyone else's, so "drained" can mean
//! drained on every instance — counted after each of them applied the drain.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio::time::MissedTickBehavior;

use super::Cluster;
use super::store::Known;
use super::view::{self, Beat, ServerLoad};
use crate::runtime::{Shared, Snapshot, clock};

pub async fn run(shared: Arc<Shared>, cluster: Arc<Cluster>, mut conn: ConnectionManager) {
    let mut every = tokio::time::interval(cluster.settings.heartbeat);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = cluster.beat_now.notified() => {}
        }
        let snapshot = shared.load();
        let beat = beat(
            &snapshot,
            &cluster.known(),
            clock::ms(cluster.settings.heartbeat),
        );
        match exchange(&cluster, &mut conn, &beat).await {
            Ok(beats) => {
                let mut view = cluster.view();
                view.update(beats);
                view.apply(&snapshot, &cluster.settings.instance, clock::unix_now_ms());
            }
            Err(error) => {
                // The others' counts stay as last read: with Redis away this
                // instance cannot hear them, which is not the same as
                // silence, and calling a server drained on a guess could
                // lose requests. Nor can they confirm a change: this
                // instance decides on what it last heard, as it would
                // without the confirmation. (The sync task reports the
                // connection; a failed beat while it still holds is a
                // hiccup that the next beat repairs.)
                if !cluster.is_connected() {
                    view::confirm_locally(&snapshot);
                }
                tracing::debug!(%error, "cluster: heartbeat not sent");
            }
        }
    }
}

/// A beat announced on the channel by another instance: taken into the
/// view at once, so a confirmation takes milliseconds, not a heartbeat.
pub fn heard(shared: &Shared, cluster: &Cluster, payload: &str) {
    let me = &cluster.settings.instance;
    let Some((name, beat)) = payload
        .split_once('\n')
        .and_then(|(name, text)| Some((name, serde_json::from_str::<Beat>(text).ok()?)))
    else {
        tracing::warn!(payload, "cluster: ignoring an unreadable heartbeat");
        return;
    };
    if name == me {
        return;
    }
    let mut view = cluster.view();
    view.heard(name, beat);
    view.apply(&shared.load(), me, clock::unix_now_ms());
}

/// Writes this instance's beat, announces it and reads every instance's,
/// in one round trip.
async fn exchange(
    cluster: &Cluster,
    conn: &mut ConnectionManager,
    beat: &Beat,
) -> Result<HashMap<String, String>, redis::RedisError> {
    let keys = &cluster.settings.keys;
    let me = &cluster.settings.instance;
    let text = serde_json::to_string(beat).unwrap_or_default();
    let (beats,): (HashMap<String, String>,) = redis::pipe()
        .cmd("HSET")
        .arg(&keys.heartbeats)
        .arg(me)
        .arg(&text)
        .ignore()
        .cmd("PUBLISH")
        .arg(&keys.beats)
        .arg(format!("{me}\n{text}"))
        .ignore()
        .cmd("HGETALL")
        .arg(&keys.heartbeats)
        .query_async(conn)
        .await?;
    Ok(beats)
}

/// The servers with anything to report (the rest are idle by omission),
/// and the operator changes applied before their counts were taken.
fn beat(snapshot: &Snapshot, known: &Known, every_ms: u64) -> Beat {
    let mut applied = BTreeSet::new();
    let mut runs = HashSet::new();
    let mut servers = Vec::new();
    for (u, s) in snapshot
        .upstreams
        .iter()
        .flat_map(|u| u.servers.iter().map(move |s| (u, s)))
    {
        runs.insert((&*u.name, s.cfg.address.as_str()));
        let state = &s.state;
        // The change before the counts: a request let in before it was
        // applied is counted in them (see `ServerState::try_acquire`).
        let (_, change) = state.operator();
        applied.extend(change.map(|c| c.get()));
        let counts = state.counts();
        let last_bound = state.last_bound_ms();
        if counts.is_idle() && last_bound.is_none() {
            continue;
        }
        servers.push(ServerLoad {
            upstream: u.name.to_string(),
            address: s.cfg.address.clone(),
            in_flight: counts.in_flight,
            tunnels: counts.tunnels,
            last_bound_unix_ms: last_bound.map(clock::unix_of_mono),
        });
    }
    // A change for a server this instance does not run is dealt with: it
    // sends that server nothing.
    applied.extend(
        known
            .admin_changes()
            .filter(|(upstream, address, _)| !runs.contains(&(*upstream, *address)))
            .map(|(_, _, id)| id.get()),
    );
    Beat {
        at_unix_ms: clock::unix_now_ms(),
        every_ms,
        servers,
        applied,
    }
}
