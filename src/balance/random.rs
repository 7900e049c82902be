//! `random`: the power of two random choices. Two distinct available
//! servers are drawn at random, each with probability proportional to its
//! weight, and the one with fewer in-flight requests per weight wins.
//!
//! nginx's `random two least_conn` does the same; sluice draws without a lock
//! or a shared random state (the thread's own generator), and scales weights
//! by the `slow_start` share so a recovering server is drawn less often.

use rand::Rng;

use super::{PickCtx, Tier, effective_weight, eligible, lighter, tier};
use crate::config;
use crate::runtime::UpstreamRt;

#[derive(Debug)]
pub struct Random;

impl Random {
    /// Nothing to precompute: every pick draws afresh.
    pub fn new(_: &config::Upstream) -> Self {
        Random
    }

    pub fn pick(&self, up: &UpstreamRt, which: Tier, ctx: &PickCtx<'_>) -> Option<usize> {
        let servers = tier(up, which);
        let weight = |i: usize| effective_weight(up, i, ctx.now_ms);
        let total: u64 = servers
            .iter()
            .filter(|&&i| eligible(up, i, ctx))
            .map(|&i| weight(i))
            .sum();
        if total == 0 {
            return None;
        }
        let mut rng = rand::rng();
        let first = draw(servers, rng.random_range(0..total), |i| {
            eligible(up, i, ctx).then(|| weight(i))
        })?;
        let rest = total.saturating_sub(weight(first));
        if rest == 0 {
            return Some(first);
        }
        let second = draw(servers, rng.random_range(0..rest), |i| {
            (i != first && eligible(up, i, ctx)).then(|| weight(i))
        });
        let load = |i: usize| (up.servers[i].state.in_flight(), weight(i));
        Some(match second {
            Some(second) if lighter(load(second), load(first)) => second,
            _ => first,
        })
    }
}

/// The server `r` falls on when the drawable servers' weights are laid end
/// to end; the last drawable one if availability changed mid-draw.
fn draw(servers: &[usize], mut r: u64, weight: impl Fn(usize) -> Option<u64>) -> Option<usize> {
    let mut last = None;
    for &i in servers {
        let Some(w) = weight(i) else { continue };
        if r < w {
            return Some(i);
        }
        r -= w;
        last = Some(i);
    }
    last
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Uri};

    use super::super::testing::{ctx, picks, upstream};
    use crate::balance::Lease;

    #[test]
    fn the_less_loaded_of_two_wins() {
        let up = upstream("balance = \"random\"", &["9001", "9002"]);
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        let s = &up.servers[0];
        let _busy = Lease::acquire(&s.state, &up.state, None).expect("slot");
        // With two servers both are always drawn: the idle one wins.
        assert_eq!(picks(&up, 20, &ctx(&uri, &headers, &[])), "b".repeat(20));
    }

    #[test]
    fn draws_follow_weights_and_skip_unavailable_servers() {
        let up = upstream(
            "balance = \"random\"",
            &[
                "9001 weight = 8",
                "9002",
                "9003 down = true",
                "9004 backup = true",
            ],
        );
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        let seen = picks(&up, 400, &ctx(&uri, &headers, &[]));
        assert!(!seen.contains('c') && !seen.contains('d'), "{seen}");
        assert!(seen.contains('a') && seen.contains('b'));
        assert_eq!(picks(&up, 5, &ctx(&uri, &headers, &[0, 1])), "ddddd");
    }

    #[test]
    fn distinct_choices_spread_load_over_many_servers() {
        let up = upstream("balance = \"random\"", &["9001", "9002", "9003", "9004"]);
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        let seen = picks(&up, 400, &ctx(&uri, &headers, &[]));
        for name in ['a', 'b', 'c', 'd'] {
            assert!(
                seen.matches(name).count() > 20,
                "{name} rarely picked: {seen}"
            );
        }
    }

    #[test]
    fn slow_start_makes_a_recovering_server_a_rare_first_choice() {
        let up = upstream(
            "balance = \"random\"",
            &["9001 slow_start = \"100s\"", "9002"],
        );
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        up.servers[0].state.mark_recovered();
        let since = up.servers[0].state.recovered_ms().expect("recovered");
        let mut c = ctx(&uri, &headers, &[]);
        // Equal loads: the first draw wins, and a weighs 10% of b right now.
        c.now_ms = since;
        let early = picks(&up, 1000, &c).matches('a').count();
        assert!(
            (20..250).contains(&early),
            "a won {early} of 1000 just after recovering"
        );
        c.now_ms = since + 100_000;
        let late = picks(&up, 1000, &c).matches('a').count();
        assert!(
            (350..650).contains(&late),
            "a won {late} of 1000 once ramped"
        );
    }
}
