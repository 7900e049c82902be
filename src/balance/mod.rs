//! Choosing a server: one file per method, sharing the availability rules here.
//!
//! Every method picks within a tier: first the primary servers, then, only
//! when none of them is available, the backup servers. Picking takes no lock:
//! it reads the snapshot, the servers' atomics and the upstream's counter.

mod round_robin;

use std::net::IpAddr;

use http::{HeaderMap, Uri};

use crate::config;
use crate::runtime::{Availability, UpstreamRt};
pub use round_robin::RoundRobin;

/// What a method may look at to choose.
pub struct PickCtx<'a> {
    pub client_ip: IpAddr,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub now_ms: u64,
    /// Servers this request already tried (indices into `UpstreamRt::servers`).
    pub tried: &'a [usize],
}

/// Which servers of an upstream a method chooses among.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Primary,
    Backup,
}

/// The method and whatever it precomputes from the server list.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
}

impl Balancer {
    pub fn build(cfg: &config::Upstream) -> Self {
        match cfg.balance {
            // The other methods land with their own modules; until then they
            // are reported by `sluice check` as having no effect.
            config::Balance::RoundRobin
            | config::Balance::LeastConn
            | config::Balance::IpHash
            | config::Balance::Hash
            | config::Balance::Random => Balancer::RoundRobin(RoundRobin::new(cfg)),
        }
    }

    /// A server for a request with no sticky binding, or `None` when no server
    /// of either tier is available.
    pub fn pick(&self, up: &UpstreamRt, ctx: &PickCtx) -> Option<usize> {
        [Tier::Primary, Tier::Backup]
            .into_iter()
            .find_map(|tier| match self {
                Balancer::RoundRobin(rr) => rr.pick(up, tier, ctx),
            })
    }
}

/// The servers of a tier.
pub fn tier(up: &UpstreamRt, tier: Tier) -> &[usize] {
    match tier {
        Tier::Primary => &up.primary,
        Tier::Backup => &up.backup,
    }
}

/// Whether a method may choose server `i` for a new (unbound) request.
pub fn eligible(up: &UpstreamRt, i: usize, ctx: &PickCtx) -> bool {
    let server = &up.servers[i];
    !ctx.tried.contains(&i)
        && server.availability(ctx.now_ms, false) != Availability::Unavailable
        && server.has_capacity()
}
