//! What `[cluster]` becomes when it runs: this instance's name and the Redis
//! keys every instance of the same `key_prefix` shares.

use std::time::Duration;

use crate::config::{Cluster, Config};

/// The Redis names of one cluster. Every instance derives the same ones from
/// the same `key_prefix`, which is all it takes to join.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Hash: one versioned entry per operator change, per server.
    pub state: String,
    /// Channel: an entry as it is written, so the others apply it at once.
    pub changes: String,
    /// Hash: each instance's last heartbeat, by instance name.
    pub heartbeats: String,
    /// Channel: each heartbeat as it is written, so the others hear at
    /// once that an instance applied a change.
    pub beats: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub redis: redis::ConnectionInfo,
    pub instance: String,
    pub keys: Keys,
    pub heartbeat: Duration,
}

impl Settings {
    pub fn new(cluster: &Cluster, config: &Config) -> Settings {
        let prefix = &cluster.key_prefix;
        Settings {
            redis: cluster.redis.info.clone(),
            instance: cluster
                .instance
                .clone()
                .unwrap_or_else(|| default_instance(config)),
            keys: Keys {
                state: format!("{prefix}:state"),
                changes: format!("{prefix}:changes"),
                heartbeats: format!("{prefix}:heartbeats"),
                beats: format!("{prefix}:beats"),
            },
            heartbeat: cluster.heartbeat,
        }
    }
}

/// The host name and the admin port (else the first listener's): unique per
/// instance on one host as long as each has its own ports, and stable across
/// restarts, so a restarted instance takes its own heartbeat slot back.
fn default_instance(config: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".to_owned());
    let port = config
        .admin
        .as_ref()
        .map(|a| a.listen.port())
        .or_else(|| config.listeners.first().map(|l| l.listen.port()));
    match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}
