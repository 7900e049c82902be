//! The instances this one has seen through their heartbeats, which of them
//! still count, the load they report for each server, and whether they
//! have applied this instance's operator changes.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::runtime::{ChangeId, Counts, Snapshot};

/// One instance's heartbeat: its counts for every server it has load on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub at_unix_ms: u64,
    /// Its heartbeat interval: it is left out after three of them in silence.
    pub every_ms: u64,
    pub servers: Vec<ServerLoad>,
    /// The operator changes ([`ChangeId`]s) it had applied to the servers
    /// it runs, or knew of for servers it does not run (and so sends
    /// nothing), before it took these counts. A beat without them (from an
    /// older sluice) confirms nothing.
    #[serde(default)]
    pub applied: BTreeSet<u64>,
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
    /// Takes a fresh read of every heartbeat: instances missing from it
    /// are forgotten, but a beat heard on the channel since the read was
    /// sent, newer than the one read, stays. Entries that do not parse are
    /// left out.
    pub fn update(&mut self, raw: HashMap<String, String>) {
        let mut beats: HashMap<String, Beat> = raw
            .into_iter()
            .filter_map(|(name, text)| Some((name, serde_json::from_str(&text).ok()?)))
            .collect();
        for (name, beat) in &mut beats {
            if let Some(heard) = self.beats.get(name)
                && heard.at_unix_ms > beat.at_unix_ms
            {
                *beat = heard.clone();
            }
        }
        self.beats = beats;
    }

    /// One instance's beat as announced, unless an as new one is known.
    pub fn heard(&mut self, name: &str, beat: Beat) {
        match self.beats.get_mut(name) {
            Some(known) if known.at_unix_ms >= beat.at_unix_ms => {}
            Some(known) => *known = beat,
            None => {
                self.beats.insert(name.to_owned(), beat);
            }
        }
    }

    /// Writes, into every server of `snapshot`, the load the other live
    /// instances report for it, and whether all of them confirm having
    /// applied the server's current operator change before counting.
    pub fn apply(&self, snapshot: &Snapshot, me: &str, now_unix_ms: u64) {
        let others: Vec<&Beat> = self.others(me, now_unix_ms).map(|(_, b)| b).collect();
        let mut sums: HashMap<(&str, &str), (Counts, Option<u64>)> = HashMap::new();
        for beat in &others {
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
                // Read now: a change applied here meanwhile is not the one
                // confirmed, so it waits for the next beats.
                let (_, change) = server.state.operator();
                let confirmed = change.filter(|id| confirmed_by(&others, *id));
                if server.state.remote.store(counts, last, confirmed) {
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

/// Whether every one of `beats` was sent after applying `change`.
fn confirmed_by(beats: &[&Beat], change: ChangeId) -> bool {
    beats
        .iter()
        .all(|beat| beat.applied.contains(&change.get()))
}

/// With Redis away, nobody can confirm anything: every server's current
/// change counts as confirmed, so this instance decides on its own counts
/// and the others' last heard, as without the confirmation.
pub fn confirm_locally(snapshot: &Snapshot) {
    for server in snapshot.upstreams.iter().flat_map(|u| &u.servers) {
        let (_, change) = server.state.operator();
        if server.state.remote.confirm_locally(change) {
            server.state.open_changed();
        }
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
            applied: BTreeSet::new(),
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

    /// One upstream of one server, draining under the change `drain`.
    fn draining(drain: ChangeId) -> std::sync::Arc<crate::runtime::Snapshot> {
        let text = "[[listener]]\nlisten = \"127.0.0.1:18080\"\nupstream = \"web\"\n\
                    [[upstream.web.server]]\naddress = \"10.0.0.1:80\"\n";
        let config = crate::config::parse(text, std::path::Path::new("test.toml")).unwrap();
        let snapshot = crate::runtime::Shared::new(config, Default::default()).load();
        snapshot.upstreams[0].servers[0]
            .state
            .drain(None, Some(drain));
        snapshot
    }

    fn load(at: u64, in_flight: u32, applied: &[ChangeId]) -> Beat {
        let mut beat: Beat = serde_json::from_str(&beat(at, in_flight)).unwrap();
        beat.applied = applied.iter().map(|id| id.get()).collect();
        beat
    }

    #[test]
    fn a_drain_is_drained_only_once_every_live_instance_counted_after_applying_it() {
        let drain = ChangeId::from_digest(7);
        let snapshot = draining(drain);
        let server = &snapshot.upstreams[0].servers[0];
        let mut view = View::default();

        view.heard("b", load(10_000, 0, &[]));
        view.apply(&snapshot, "a", 10_000);
        assert!(!server.is_drained(), "b's idle beat predates the drain");
        assert!(!server.is_confirmed());

        view.heard("b", load(10_010, 1, &[drain]));
        view.apply(&snapshot, "a", 10_010);
        assert!(server.is_confirmed());
        assert!(
            !server.is_drained(),
            "b applied it with a request in flight"
        );

        view.heard("b", load(10_020, 0, &[drain]));
        view.apply(&snapshot, "a", 10_020);
        assert!(server.is_drained());

        server.state.drain(None, Some(ChangeId::from_digest(8)));
        assert!(!server.is_drained(), "a new drain is confirmed afresh");
    }

    #[test]
    fn a_silent_instance_or_an_unreachable_redis_holds_no_confirmation() {
        let snapshot = draining(ChangeId::from_digest(7));
        let server = &snapshot.upstreams[0].servers[0];
        let mut view = View::default();
        view.heard("b", load(10_000, 0, &[]));
        view.apply(&snapshot, "a", 13_000);
        assert!(!server.is_drained(), "b is live and has not confirmed");
        view.apply(&snapshot, "a", 13_001);
        assert!(server.is_drained(), "b is silent: left out");

        server.state.drain(None, Some(ChangeId::from_digest(8)));
        assert!(!server.is_drained());
        confirm_locally(&snapshot);
        assert!(
            server.is_drained(),
            "with Redis away, the local view decides"
        );
    }

    #[test]
    fn a_beat_heard_on_the_channel_outlives_an_older_read() {
        let drain = ChangeId::from_digest(7);
        let snapshot = draining(drain);
        let server = &snapshot.upstreams[0].servers[0];
        let mut view = View::default();
        view.heard("b", load(10_020, 0, &[drain]));
        view.update(HashMap::from([("b".to_owned(), beat(10_000, 0))]));
        view.apply(&snapshot, "a", 10_020);
        assert!(server.is_drained());
        view.update(HashMap::new());
        assert!(view.live(10_020).is_empty(), "gone from Redis: forgotten");
    }

    #[test]
    fn a_beat_from_an_older_sluice_confirms_nothing() {
        let snapshot = draining(ChangeId::from_digest(7));
        let server = &snapshot.upstreams[0].servers[0];
        let mut view = View::default();
        let old = r#"{"at_unix_ms":10000,"every_ms":1000,"servers":[]}"#;
        view.update(HashMap::from([("b".to_owned(), old.to_owned())]));
        view.apply(&snapshot, "a", 10_000);
        assert_eq!(view.live(10_000), vec![("b", 10_000)]);
        assert!(!server.is_drained());
    }
}
