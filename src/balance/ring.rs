//! The ring behind `hash` with `consistent = true`: nginx's `hash $key
//! consistent` (ketama, Cache::Memcached::Fast-compatible), plus bounded
//! loads.
//!
//! Each server gets `160 * weight` points. Point `j` is
//! `crc32(host "\0" port prev)`, where `prev` is point `j - 1` as four
//! little-endian bytes (zero for the first) and host and port come from the
//! address as written. Points derive from the address alone, so reordering
//! the list moves nothing, and removing one of N servers moves only its keys
//! (about 1/N). Points are sorted (stably, so on the rare equal point the
//! server listed first keeps it, as nginx's merge sort does) and deduplicated.
//! A key goes to the first point at or after `crc32(key)`, wrapping around,
//! and walks on along the ring past unavailable servers.
//!
//! With `balance_factor` (consistent hashing with bounded loads, Mirrokni et
//! al.), a server also counts as full once its in-flight requests reach
//! `ceil(balance_factor * (in_flight + 1) * weight / total_weight)`, in-flight
//! and weight summed over the tier's available servers: a hot key spills to
//! the next server on the ring instead of overloading its own.

use super::hash::{Crc32, crc32};
use super::round_robin::admit_slow_start;
use super::{PickCtx, eligible};
use crate::config;
use crate::runtime::{Availability, UpstreamRt};

/// nginx's points per unit of weight.
const POINTS_PER_WEIGHT: u32 = 160;

#[derive(Debug)]
pub struct Ring {
    /// `(point, server index)`, sorted by point, points unique.
    points: Vec<(u32, u32)>,
    balance_factor: Option<f64>,
    backup: bool,
}

impl Ring {
    /// The ring of one tier (`backup` selects which).
    pub fn new(cfg: &config::Upstream, backup: bool, balance_factor: Option<f64>) -> Self {
        let mut points = Vec::new();
        for (i, server) in cfg.servers.iter().enumerate() {
            if server.backup != backup {
                continue;
            }
            let mut base = Crc32::new();
            base.update(server.host().as_bytes());
            base.update(b"\0");
            base.update(server.port().as_bytes());
            let mut prev = 0u32;
            for _ in 0..POINTS_PER_WEIGHT * server.weight.get() {
                let mut point = base;
                point.update(&prev.to_le_bytes());
                prev = point.finish();
                points.push((prev, i as u32));
            }
        }
        points.sort_by_key(|&(point, _)| point);
        points.dedup_by_key(|&mut (point, _)| point);
        Ring {
            points,
            balance_factor,
            backup,
        }
    }

    pub fn pick(&self, up: &UpstreamRt, key: &[u8], ctx: &PickCtx<'_>) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let hash = crc32(key);
        let start = self.points.partition_point(|&(point, _)| point < hash);
        let bound = self
            .balance_factor
            .map(|factor| Bound::new(up, ctx, self, factor));
        let mut over_bound = None;
        let mut ramping = None;
        for k in 0..self.points.len() {
            let i = self.points[(start + k) % self.points.len()].1 as usize;
            if !eligible(up, i, ctx) {
                continue;
            }
            // A server in slow start takes the key by its current share;
            // otherwise the key goes on round the ring.
            if !admit_slow_start(up, i, ctx.now_ms) {
                ramping.get_or_insert(i);
                continue;
            }
            match &bound {
                Some(b) if !b.admits(up, i) => {
                    over_bound.get_or_insert(i);
                }
                _ => return Some(i),
            }
        }
        // Every available server is at its bound (counts raced) or ramping:
        // the key's own server is still better than a 503.
        over_bound.or(ramping)
    }
}

/// The bounded-loads cap for one pick.
struct Bound {
    factor: f64,
    in_flight: u64,
    weight: u64,
}

impl Bound {
    fn new(up: &UpstreamRt, ctx: &PickCtx<'_>, ring: &Ring, factor: f64) -> Self {
        let (mut in_flight, mut weight) = (0, 0);
        let tier = if ring.backup { &up.backup } else { &up.primary };
        for &i in tier {
            let server = &up.servers[i];
            if server.availability(ctx.now_ms, false) != Availability::Unavailable {
                in_flight += u64::from(server.state.in_flight());
                weight += u64::from(server.cfg.weight.get());
            }
        }
        Bound {
            factor,
            in_flight,
            weight: weight.max(1),
        }
    }

    fn admits(&self, up: &UpstreamRt, i: usize) -> bool {
        let server = &up.servers[i];
        let share = f64::from(server.cfg.weight.get()) / self.weight as f64;
        let cap = (self.factor * (self.in_flight + 1) as f64 * share).ceil();
        f64::from(server.state.in_flight()) < cap
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Uri};

    use super::super::testing::{ctx, upstream};
    use crate::balance::Lease;
    use crate::runtime::UpstreamRt;

    fn consistent(servers: &[&str], extra: &str) -> std::sync::Arc<UpstreamRt> {
        upstream(
            &format!("balance = \"hash\"\nhash_key = \"query:key\"\nconsistent = true\n{extra}"),
            servers,
        )
    }

    fn port_for(up: &UpstreamRt, key: &str) -> u16 {
        let uri: Uri = format!("/?key={key}").parse().expect("uri");
        let headers = HeaderMap::new();
        let i = up
            .balancer
            .pick(up, &ctx(&uri, &headers, &[]))
            .expect("a server");
        up.servers[i].cfg.addr.port()
    }

    #[test]
    fn ring_has_160_points_per_weight() {
        let up = consistent(&["9001", "9002 weight = 2"], "");
        let super::super::Balancer::Hash(hash) = &up.balancer else {
            panic!("a hash balancer");
        };
        let rings = hash.rings.as_ref().expect("consistent rings");
        assert_eq!(rings[0].points.len(), 480);
        assert!(rings[1].points.is_empty());
    }

    #[test]
    fn removing_a_server_moves_only_its_keys_and_order_does_not_matter() {
        let four = consistent(&["9001", "9002", "9003", "9004"], "");
        let three = consistent(&["9004", "9001", "9003"], "");
        let mut moved = 0;
        for n in 0..400 {
            let key = format!("user{n}");
            let before = port_for(&four, &key);
            let after = port_for(&three, &key);
            if before == 9002 {
                moved += 1;
            } else {
                assert_eq!(before, after, "key {key} moved off a surviving server");
            }
        }
        assert!(
            (50..150).contains(&moved),
            "{moved} of 400 keys were on the removed server"
        );
    }

    #[test]
    fn unavailable_server_sends_its_keys_to_the_next_on_the_ring() {
        let up = consistent(&["9001", "9002", "9003"], "");
        let downed = consistent(&["9001", "9002 down = true", "9003"], "");
        for n in 0..100 {
            let key = format!("k{n}");
            let after = port_for(&downed, &key);
            assert_ne!(after, 9002);
            if port_for(&up, &key) != 9002 {
                assert_eq!(port_for(&up, &key), after);
            }
        }
    }

    #[test]
    fn bounded_loads_spill_a_hot_key_to_the_next_server() {
        let up = consistent(&["9001", "9002", "9003"], "balance_factor = 1.5");
        let home = port_for(&up, "hot");
        let i = up
            .servers
            .iter()
            .position(|s| s.cfg.addr.port() == home)
            .expect("home");
        let s = &up.servers[i];
        // cap = ceil(1.5 * (in_flight + 1) / 3): with 2 in flight on home, cap = 2.
        let _held: Vec<Lease> = (0..2)
            .map(|_| Lease::acquire(&s.state, &up.state, None).expect("slot"))
            .collect();
        let spilled = port_for(&up, "hot");
        assert_ne!(spilled, home);
        // Without the factor the key stays home however busy it is.
        let plain = consistent(&["9001", "9002", "9003"], "");
        assert_eq!(port_for(&plain, "hot"), home);
    }
}
