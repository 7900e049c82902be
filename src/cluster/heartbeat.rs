//! Every `heartbeat`, this instance writes its per-server load to Redis and
//! reads everyone else's, so "drained" can mean drained on every instance.

use std::collections::HashMap;
use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio::time::MissedTickBehavior;

use super::Cluster;
use super::view::{Beat, ServerLoad};
use crate::runtime::{Shared, Snapshot, clock};

pub async fn run(shared: Arc<Shared>, cluster: Arc<Cluster>, mut conn: ConnectionManager) {
    let mut every = tokio::time::interval(cluster.settings.heartbeat);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let snapshot = shared.load();
        let beat = beat(&snapshot, clock::ms(cluster.settings.heartbeat));
        match exchange(&cluster, &mut conn, &beat).await {
            Ok(beats) => {
                let mut view = cluster.view();
                view.update(beats);
                view.apply(&snapshot, &cluster.settings.instance, clock::unix_now_ms());
            }
            // The others' counts stay as last read: with Redis away this
            // instance cannot hear them, which is not the same as silence,
            // and calling a server drained on a guess could lose requests.
            // (The sync task reports the connection.)
            Err(error) => tracing::debug!(%error, "cluster: heartbeat not sent"),
        }
    }
}

/// Writes this instance's beat and reads every instance's, in one round trip.
async fn exchange(
    cluster: &Cluster,
    conn: &mut ConnectionManager,
    beat: &Beat,
) -> Result<HashMap<String, String>, redis::RedisError> {
    let key = &cluster.settings.keys.heartbeats;
    let text = serde_json::to_string(beat).unwrap_or_default();
    let (beats,): (HashMap<String, String>,) = redis::pipe()
        .cmd("HSET")
        .arg(key)
        .arg(&cluster.settings.instance)
        .arg(text)
        .ignore()
        .cmd("HGETALL")
        .arg(key)
        .query_async(conn)
        .await?;
    Ok(beats)
}

/// The servers with anything to report; the rest are idle by omission.
fn beat(snapshot: &Snapshot, every_ms: u64) -> Beat {
    let servers = snapshot
        .upstreams
        .iter()
        .flat_map(|u| u.servers.iter().map(move |s| (u, s)))
        .filter_map(|(u, s)| {
            let state = &s.state;
            let last_bound = state.last_bound_ms();
            if state.in_flight() == 0 && state.tunnels() == 0 && last_bound.is_none() {
                return None;
            }
            Some(ServerLoad {
                upstream: u.name.to_string(),
                address: s.cfg.address.clone(),
                in_flight: state.in_flight(),
                tunnels: state.tunnels(),
                last_bound_unix_ms: last_bound.map(clock::unix_of_mono),
            })
        })
        .collect();
    Beat {
        at_unix_ms: clock::unix_now_ms(),
        every_ms,
        servers,
    }
}
