//! The instances this one has seen through their heartbeats, which of them
//! still count, and the load they report for each server.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::runtime::{Counts, Snapshot};

/// One instance's heartbeat: its counts for every server it has load on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub at_unix_ms: u64,
    /// Its heartbeat interval: it is left out after three of them in silence.
    pub every_ms: u64,
    pub servers: Vec<ServerLoad>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLoad {
    pub upstream: String,
    pub address: String,
    pub in_flight: u32,
    pub tunnels: u32,
    pub last_bound_unix_ms: Option<u64>,
}

/// Heartbeats missed before an instance no longer counts.
const SILENT_BEATS: u64 = 3;

impl Beat {
    /// Its stamp is the sender's wall clock: instances are expected to keep
    /// their clocks in sync (NTP), as for any cluster.
    fn is_live(&self, now_unix_ms: u64) -> bool {
        now_unix_ms.saturating_sub(self.at_unix_ms) <= SILENT_BEATS * self.every_ms
    }
}

#[derive(Debug, Default)]
pub struct View {
    beats: HashMap<String, Beat>,
}

impl View {
    /// Replaces what is known with a fresh read of every heartbeat; entries
    /// that do not parse are left out.
    pub fn update(&mut self, raw: HashMap<String, String>) {
        self.beats = raw
            .into_iter()
            .filter_map(|(name, text)| Some((name, serde_json::from_str(&text).ok()?)))
            .collect();
    }

    /// Writes, into every server of `snapshot`, the load the other live
    /// instances report for it.
    pub fn apply(&self, snapshot: &Snapshot, me: &str, now_unix_ms: u64) {
        let mut sums: HashMap<(&str, &str), (Counts, Option<u64>)> = HashMap::new();
        for (_, beat) in self.others(me, now_unix_ms) {
            for load in &beat.servers {
                let (counts, last) = sums
                    .entry((load.upstream.as_str(), load.address.as_str()))
                    .or_default();
                counts.in_flight += load.in_flight;
                counts.tunnels += load.tunnels;
                *last = (*last).max(load.last_bound_unix_ms);
            }
        }
        for upstream in &snapshot.upstreams {
            for server in &upstream.servers {
                let (counts, last) = sums
                    .get(&(&*upstream.name, server.cfg.address.as_str()))
                    .copied()
                    .unwrap_or_default();
                if server.state.remote.store(counts, last) {
                    server.state.open_changed();
                }
            }
        }
    }

    fn others<'a>(
        &'a self,
        me: &'a str,
        now_unix_ms: u64,
    ) -> impl Iterator<Item = (&'a String, &'a Beat)> + 'a {
        self.beats
            .iter()
            .filter(move |(name, beat)| name.as_str() != me && beat.is_live(now_unix_ms))
    }

    /// Live instances, this one included, by name: `(name, last heartbeat)`.
    pub fn live(&self, now_unix_ms: u64) -> Vec<(&str, u64)> {
        let mut live: Vec<(&str, u64)> = self
            .beats
            .iter()
            .filter(|(_, beat)| beat.is_live(now_unix_ms))
            .map(|(name, beat)| (name.as_str(), beat.at_unix_ms))
            .collect();
        live.sort_unstable();
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(at: u64, in_flight: u32) -> String {
        serde_json::to_string(&Beat {
            at_unix_ms: at,
            every_ms: 1000,
            servers: vec![ServerLoad {
                upstream: "web".into(),
                address: "10.0.0.1:80".into(),
                in_flight,
                tunnels: 0,
                last_bound_unix_ms: None,
            }],
        })
        .unwrap()
    }

    #[test]
    fn an_instance_silent_for_three_heartbeats_is_left_out() {
        let mut view = View::default();
        view.update(HashMap::from([
            ("a".to_owned(), beat(10_000, 1)),
            ("b".to_owned(), beat(6_999, 1)),
            ("c".to_owned(), "garbage".to_owned()),
        ]));
        assert_eq!(view.live(10_000), vec![("a", 10_000)]);
        assert_eq!(view.live(13_000), vec![("a", 10_000)]);
        assert!(view.live(13_001).is_empty());
        assert_eq!(view.others("a", 10_000).count(), 0, "itself is not other");
    }
}
