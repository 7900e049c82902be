//! A tier of sluice instances acting as one through Redis (`[cluster]`).
//!
//! Operator changes (drain, enable, disable, weight) made through any
//! instance's API are written to a Redis hash, versioned, and announced on a
//! channel; every instance applies them to its own runtime state. Each
//! instance also publishes its per-server load, and with it the changes it
//! has applied, so "drained" is answered for the whole tier, on counts
//! taken after every instance applied the drain. Redis is never on the
//! request path: requests read only the local state, which the tasks here
//! update; with Redis away, the instance serves on what it last knew and
//! writes its own changes back once Redis returns.

mod config;
mod heartbeat;
mod store;
mod sync;
mod view;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::Notify;

pub use config::Settings;
pub use store::Change;

use crate::runtime::{ChangeId, Shared, clock};
use store::{Entry, Field, Known, Version};
use view::View;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("the subscription to the changes channel ended")]
    SubscriptionEnded,
}

/// This instance's side of the cluster, shared by the admin API and the
/// cluster tasks.
pub struct Cluster {
    pub settings: Settings,
    connected: AtomicBool,
    known: Mutex<Known>,
    view: Mutex<View>,
    /// A local change is waiting to be sent.
    wake: Notify,
    /// A change was applied here: the others wait for this instance's
    /// counts taken since, so the heartbeat goes now.
    beat_now: Notify,
}

impl Cluster {
    /// `None` without a `[cluster]` table.
    pub fn new(config: &crate::config::Config) -> Option<Cluster> {
        let cluster = config.cluster.as_ref()?;
        Some(Cluster {
            settings: Settings::new(cluster, config),
            connected: AtomicBool::new(false),
            known: Mutex::new(Known::default()),
            view: Mutex::new(View::default()),
            wake: Notify::new(),
            beat_now: Notify::new(),
        })
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Returns whether this changed it.
    fn set_connected(&self, connected: bool) -> bool {
        self.connected.swap(connected, Ordering::Relaxed) != connected
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A change made through this instance's API: versioned now, applied
    /// here by `apply` under that version's [`ChangeId`], and sent to Redis
    /// (at once, or when it is back).
    pub fn local_change(
        &self,
        upstream: &str,
        address: &str,
        apply: impl FnOnce(Option<ChangeId>) -> Change,
    ) {
        let version = Version {
            ms: clock::unix_now_ms(),
            by: self.settings.instance.clone(),
        };
        let change = apply(Some(version.change_id()));
        let field = Field::of(upstream, address, &change);
        self.known().record_local(field, Entry { version, change });
        self.wake.notify_one();
        self.applied_changes();
    }

    /// Changes were applied here (or found to be for servers this instance
    /// does not run): the instances that made them wait for this one's
    /// counts taken since, so the heartbeat goes at once.
    fn applied_changes(&self) {
        self.beat_now.notify_one();
    }

    /// `GET /api/cluster`: who is live, their last heartbeats, and whether
    /// this instance reaches Redis.
    pub fn status(&self) -> Value {
        let now = clock::unix_now_ms();
        let view = self.view();
        let instances: Vec<Value> = view
            .live(now)
            .into_iter()
            .map(|(name, at)| {
                json!({
                    "instance": name,
                    "this": name == self.settings.instance,
                    "last_heartbeat_unix_ms": at,
                    "last_heartbeat_age_s": now.saturating_sub(at) as f64 / 1000.0,
                })
            })
            .collect();
        json!({
            "instance": self.settings.instance,
            "connected": self.is_connected(),
            "heartbeat_s": self.settings.heartbeat.as_secs_f64(),
            "instances": instances,
        })
    }
}

/// Starts the cluster tasks of `shared`: the sync task (operator state)
/// and the heartbeat task (load). Neither blocks start-up: with Redis down,
/// the proxy starts and serves its file's state.
pub fn start(shared: &Arc<Shared>, cluster: &Arc<Cluster>) -> Result<(), ClusterError> {
    let cluster = cluster.clone();
    let client = redis::Client::open(cluster.settings.redis.clone())?;
    let manager = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(sync::CONNECT_TIMEOUT))
        .set_response_timeout(Some(sync::RESPONSE_TIMEOUT))
        .set_number_of_retries(1);
    let conn = redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), manager)?;
    tokio::spawn(heartbeat::run(
        shared.clone(),
        cluster.clone(),
        conn.clone(),
    ));
    tokio::spawn(sync::run(shared.clone(), cluster, client, conn));
    Ok(())
}
