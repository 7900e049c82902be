//! Least connections, as nginx's `least_conn`: the server with the fewest
//! in-flight requests relative to its weight, ties going round-robin.
//!
//! nginx breaks ties with smooth weighted round-robin over the tied servers,
//! updating every peer's current weight under the upstream lock. sluice keeps
//! picking lock-free: the upstream's rotating counter chooses the t-th tied
//! entry of the tier's precomputed smooth round-robin period. When every
//! server is tied (an idle upstream) that is exactly nginx's order (weights
//! 5,1,1 give a a b a c a a); for a subset it rotates through the subset in
//! the same smooth order, each tied server getting its weight's share.
//!
//! In-flight counts are the process-wide atomics in each server's state, so
//! the comparison is exact across worker threads. `slow_start` scales a
//! server's weight by its ramp share, and a server still ramping wins a tie
//! only with that probability.

use super::round_robin::admit_slow_start;
use super::{PickCtx, RoundRobin, Tier, effective_weight, eligible, lighter, tier};
use crate::config;
use crate::runtime::UpstreamRt;

#[derive(Debug)]
pub struct LeastConn {
    order: RoundRobin,
    /// Each server's number of entries in its tier's period.
    shares: Vec<u32>,
}

impl LeastConn {
    pub fn new(cfg: &config::Upstream) -> Self {
        let order = RoundRobin::new(cfg);
        let mut shares = vec![0; cfg.servers.len()];
        for which in [Tier::Primary, Tier::Backup] {
            for &i in order.sequence(which) {
                shares[i as usize] += 1;
            }
        }
        LeastConn { order, shares }
    }

    pub fn pick(&self, up: &UpstreamRt, which: Tier, ctx: &PickCtx<'_>) -> Option<usize> {
        let load = |i: usize| {
            (
                up.servers[i].state.in_flight(),
                effective_weight(up, i, ctx.now_ms),
            )
        };
        let servers = tier(up, which);
        let mut best: Option<(u32, u64)> = None;
        let (mut tied, mut tied_shares, mut only) = (0, 0u64, 0);
        for &i in servers {
            if !eligible(up, i, ctx) {
                continue;
            }
            let l = load(i);
            match best {
                Some(b) if lighter(b, l) => continue,
                Some(b) if !lighter(l, b) => {}
                _ => {
                    best = Some(l);
                    (tied, tied_shares, only) = (0, 0, i);
                }
            }
            tied += 1;
            tied_shares += u64::from(self.shares[i]);
        }
        let best = best?;
        if tied == 1 {
            return Some(only);
        }
        let seq = self.order.sequence(which);
        let turn = up.state.next_rr();
        let is_tied = |i: usize| {
            let l = load(i);
            eligible(up, i, ctx) && !lighter(l, best) && !lighter(best, l)
        };
        // Everyone tied (an idle upstream): the period from the turn's
        // position. Otherwise the turn-th tied entry of the period.
        let (start, mut nth) = if tied == servers.len() {
            ((turn % seq.len() as u64) as usize, 0)
        } else {
            (0, turn % tied_shares.max(1))
        };
        for k in 0..seq.len() {
            let i = seq[(start + k) % seq.len()] as usize;
            if !is_tied(i) {
                continue;
            }
            if nth > 0 {
                nth -= 1;
            } else if admit_slow_start(up, i, ctx.now_ms) {
                return Some(i);
            }
        }
        // Counts moved under us, or slow start declined the turn: the
        // lightest eligible server now is still right.
        servers
            .iter()
            .copied()
            .filter(|&i| eligible(up, i, ctx))
            .reduce(|a, b| if lighter(load(b), load(a)) { b } else { a })
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Uri};

    use super::super::testing::{ctx, picks, upstream};
    use crate::balance::Lease;

    fn hold(up: &crate::runtime::UpstreamRt, i: usize, n: usize) -> Vec<Lease> {
        let s = &up.servers[i];
        (0..n)
            .map(|_| Lease::acquire(&s.state, &up.state, s.max_conns()).expect("a slot"))
            .collect()
    }

    #[test]
    fn idle_servers_go_in_smooth_round_robin_order() {
        let up = upstream(
            "balance = \"least_conn\"",
            &["9001 weight = 5", "9002", "9003"],
        );
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        assert_eq!(picks(&up, 14, &ctx(&uri, &headers, &[])), "aabacaaaabacaa");
    }

    #[test]
    fn busy_server_is_avoided_until_its_load_per_weight_is_lowest() {
        let up = upstream(
            "balance = \"least_conn\"",
            &["9001 weight = 2", "9002", "9003"],
        );
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        let c = ctx(&uri, &headers, &[]);
        let _a = hold(&up, 0, 2);
        let _b = hold(&up, 1, 1);
        // a: 2/2, b: 1/1, c: 0/1.
        assert_eq!(up.balancer.pick(&up, &c), Some(2));
        let _c = hold(&up, 2, 1);
        // Everyone at 1 per weight: a tie, broken by round-robin over all.
        let mut seen = picks(&up, 8, &c).into_bytes();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, b"abc");
        let _b2 = hold(&up, 1, 1);
        let _c2 = hold(&up, 2, 1);
        // a: 2/2 = 1 beats b and c at 2.
        assert_eq!(picks(&up, 4, &c), "aaaa");
    }

    #[test]
    fn ties_among_a_subset_alternate_between_them() {
        let up = upstream("balance = \"least_conn\"", &["9001", "9002", "9003"]);
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        let _a = hold(&up, 0, 1);
        assert_eq!(picks(&up, 6, &ctx(&uri, &headers, &[])), "bcbcbc");
    }

    #[test]
    fn down_full_and_tried_servers_are_skipped_and_backup_waits() {
        let up = upstream(
            "balance = \"least_conn\"",
            &[
                "9001 down = true",
                "9002 max_conns = 1",
                "9003 backup = true",
            ],
        );
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        assert_eq!(picks(&up, 2, &ctx(&uri, &headers, &[])), "bb");
        let _b = hold(&up, 1, 1);
        assert_eq!(picks(&up, 2, &ctx(&uri, &headers, &[])), "cc");
        assert_eq!(picks(&up, 1, &ctx(&uri, &headers, &[2])), "-");
    }

    #[test]
    fn slow_start_scales_the_weight_in_the_comparison() {
        let up = upstream(
            "balance = \"least_conn\"",
            &["9001 weight = 4, slow_start = \"100s\"", "9002"],
        );
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        up.servers[0].state.mark_recovered();
        let since = up.servers[0].state.recovered_ms().expect("recovered");
        let _a = hold(&up, 0, 1);
        let _b = hold(&up, 1, 1);
        let mut c = ctx(&uri, &headers, &[]);
        // Just recovered: a's weight is 4 * 10%, so 1/0.4 loses to b's 1/1.
        c.now_ms = since;
        assert_eq!(picks(&up, 3, &c), "bbb");
        // Fully ramped: 1/4 beats 1/1.
        c.now_ms = since + 100_000;
        assert_eq!(picks(&up, 3, &c), "aaa");
    }
}
