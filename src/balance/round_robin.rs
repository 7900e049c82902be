//! Smooth weighted round-robin, exactly nginx's order (weights 5,1,1 give
//! a a b a c a a).
//!
//! nginx recomputes the "current weights" under a per-upstream lock on every
//! pick. The sequence is periodic, so sluice computes one period when the
//! snapshot is built and a pick is one atomic increment plus an index: no lock,
//! no allocation. A server that is unavailable (or held back by slow start) is
//! skipped by taking the next position, so the others keep their proportions.

use std::sync::atomic::Ordering;

use super::{PickCtx, Tier, eligible, tier};
use crate::config;
use crate::runtime::UpstreamRt;

/// One period is at most this long; larger weight sums are scaled down.
const MAX_PERIOD: u64 = 1 << 16;

#[derive(Debug)]
pub struct RoundRobin {
    primary: Vec<u32>,
    backup: Vec<u32>,
}

impl RoundRobin {
    pub fn new(cfg: &config::Upstream) -> Self {
        let tier_of = |backup: bool| -> Vec<(usize, u64)> {
            cfg.servers
                .iter()
                .enumerate()
                .filter(|(_, s)| s.backup == backup)
                .map(|(i, s)| (i, u64::from(s.weight.get())))
                .collect()
        };
        RoundRobin {
            primary: sequence(&tier_of(false)),
            backup: sequence(&tier_of(true)),
        }
    }

    /// One period of the tier's order, as indices into the upstream's servers.
    pub fn sequence(&self, which: Tier) -> &[u32] {
        match which {
            Tier::Primary => &self.primary,
            Tier::Backup => &self.backup,
        }
    }

    pub fn pick(&self, up: &UpstreamRt, which: Tier, ctx: &PickCtx<'_>) -> Option<usize> {
        let seq = self.sequence(which);
        if seq.is_empty() {
            return None;
        }
        // Each tier turns on its own, as nginx's: the primaries' skipped
        // positions must not steer the backups.
        let position = match which {
            Tier::Primary => &up.state.rr,
            Tier::Backup => &up.state.rr_backup,
        };
        for _ in 0..seq.len() {
            let turn = position.fetch_add(1, Ordering::Relaxed);
            let i = seq[(turn % seq.len() as u64) as usize] as usize;
            if eligible(up, i, ctx) && admit_slow_start(up, i, ctx.now_ms) {
                return Some(i);
            }
        }
        // Positions raced with other threads or slow start said no everywhere:
        // any eligible server beats a 503.
        tier(up, which)
            .iter()
            .copied()
            .find(|&i| eligible(up, i, ctx))
    }
}

/// Lets a server in slow start take a request with probability equal to its
/// current share, so its effective weight ramps without shared mutable state.
pub fn admit_slow_start(up: &UpstreamRt, i: usize, now_ms: u64) -> bool {
    let factor = up.servers[i].slow_start_factor(now_ms);
    factor >= 1.0 || rand::random::<f64>() < factor
}

/// One period of nginx's smooth weighted round-robin over `(index, weight)`.
fn sequence(servers: &[(usize, u64)]) -> Vec<u32> {
    if servers.is_empty() {
        return Vec::new();
    }
    let gcd = servers.iter().fold(0, |g, &(_, w)| gcd(g, w));
    let mut weights: Vec<u64> = servers.iter().map(|&(_, w)| w / gcd).collect();
    let total: u64 = weights.iter().sum();
    if total > MAX_PERIOD {
        let scale = total.div_ceil(MAX_PERIOD);
        weights.iter_mut().for_each(|w| *w = (*w / scale).max(1));
    }
    let total: i64 = weights.iter().map(|&w| w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            let mut best = 0;
            for (k, &w) in weights.iter().enumerate() {
                current[k] += w as i64;
                if current[k] > current[best] {
                    best = k;
                }
            }
            current[best] -= total;
            servers[best].0 as u32
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::sequence;

    fn names(seq: &[u32]) -> String {
        seq.iter().map(|&i| (b'a' + i as u8) as char).collect()
    }

    #[test]
    fn weights_5_1_1_give_nginx_order() {
        assert_eq!(names(&sequence(&[(0, 5), (1, 1), (2, 1)])), "aabacaa");
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(names(&sequence(&[(0, 1), (1, 1), (2, 1)])), "abc");
        assert_eq!(names(&sequence(&[(0, 3), (1, 3)])), "ab");
    }

    #[test]
    fn weights_are_honoured_over_a_period() {
        let seq = sequence(&[(0, 3), (1, 2), (2, 1)]);
        assert_eq!(seq.len(), 6);
        for (i, want) in [(0, 3), (1, 2), (2, 1)] {
            assert_eq!(seq.iter().filter(|&&s| s == i).count(), want);
        }
    }

    #[test]
    fn huge_weights_are_scaled_to_a_bounded_period() {
        let seq = sequence(&[(0, 1_000_000), (1, 999_999)]);
        assert!(seq.len() as u64 <= super::MAX_PERIOD + 2);
    }
}
