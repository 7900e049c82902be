//! Choosing a server: one file per method, sharing the availability rules here.
//!
//! Every method picks within a tier: first the primary servers, then, only
//! when none of them is available, the backup servers. Picking takes no lock
//! and allocates nothing: it reads the snapshot, the servers' atomics and the
//! upstream's counter. Only the `queue` (requests waiting for a server under
//! `max_conns`) takes a per-upstream lock, and only while requests wait.

mod hash;
mod ip_hash;
mod lease;
mod least_conn;
pub mod queue;
mod random;
mod ring;
mod round_robin;

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Uri};

use crate::config;
use crate::runtime::{Availability, UpstreamRt};
pub use hash::Hash;
pub use ip_hash::IpHash;
pub use lease::Lease;
pub use least_conn::LeastConn;
pub use random::Random;
pub use round_robin::RoundRobin;

/// What a method may look at to choose.
pub struct PickCtx<'a> {
    pub client_ip: IpAddr,
    pub uri: &'a Uri,
    /// The request's fields, less those `set` holds.
    pub headers: &'a HeaderMap,
    /// The fields the proxy sets on the request beside its map.
    pub set: Option<&'a dyn SetFields>,
    pub now_ms: u64,
    /// Servers this request already tried (indices into `UpstreamRt::servers`).
    pub tried: &'a [usize],
}

impl<'a> PickCtx<'a> {
    /// The request's field `name` as it goes upstream: the value the proxy
    /// sets, or else the first the client sent.
    pub fn header(&self, name: &HeaderName) -> Option<&'a [u8]> {
        match self.set.and_then(|set| set.get(name)) {
            Some(value) => Some(value),
            None => self.headers.get(name).map(HeaderValue::as_bytes),
        }
    }
}

/// Fields a proxy sets on a request beside its header map, written behind
/// the map's (`X-Forwarded-For` and its family).
pub trait SetFields {
    /// The value set for `name`, or `None` for a field not set here.
    fn get(&self, name: &HeaderName) -> Option<&[u8]>;
}

/// Which servers of an upstream a method chooses among.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Primary,
    Backup,
}

/// Declares [`Balancer`] from the config's list of methods: one variant per
/// [`config::Balance`] variant, holding the method type of the same name,
/// which has `new(&config::Upstream)` and `pick(&UpstreamRt, Tier, &PickCtx)`.
macro_rules! balancer {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// The method and whatever it precomputes from the server list.
        #[derive(Debug)]
        pub enum Balancer {
            $($variant($variant)),*
        }

        impl Balancer {
            pub fn build(cfg: &config::Upstream) -> Self {
                match cfg.balance {
                    $(config::Balance::$variant => Balancer::$variant($variant::new(cfg))),*
                }
            }

            fn pick_in(&self, up: &UpstreamRt, tier: Tier, ctx: &PickCtx<'_>) -> Option<usize> {
                match self {
                    $(Balancer::$variant(m) => m.pick(up, tier, ctx)),*
                }
            }
        }
    };
}

config::balance_methods!(balancer);

impl Balancer {
    /// A server for a request with no sticky binding, or `None` when no server
    /// of either tier is available.
    pub fn pick(&self, up: &UpstreamRt, ctx: &PickCtx<'_>) -> Option<usize> {
        [Tier::Primary, Tier::Backup]
            .into_iter()
            .find_map(|tier| self.pick_in(up, tier, ctx))
    }
}

/// The servers of a tier, in config order.
pub fn tier(up: &UpstreamRt, tier: Tier) -> &[usize] {
    match tier {
        Tier::Primary => &up.primary,
        Tier::Backup => &up.backup,
    }
}

/// Whether a method may choose server `i` for a new (unbound) request.
pub fn eligible(up: &UpstreamRt, i: usize, ctx: &PickCtx<'_>) -> bool {
    usable(up, i, ctx, false)
}

/// Whether server `i` may take a request a valid sticky cookie binds to it:
/// as [`eligible`], but a draining server still counts.
pub fn eligible_bound(up: &UpstreamRt, i: usize, ctx: &PickCtx<'_>) -> bool {
    usable(up, i, ctx, true)
}

fn usable(up: &UpstreamRt, i: usize, ctx: &PickCtx<'_>, bound: bool) -> bool {
    let server = &up.servers[i];
    !ctx.tried.contains(&i)
        && server.availability(ctx.now_ms, bound) != Availability::Unavailable
        && server.has_capacity()
}

/// A server's weight scaled by its slow-start share, in thousandths, so
/// load comparisons stay in integers. Never 0.
fn effective_weight(up: &UpstreamRt, i: usize, now_ms: u64) -> u64 {
    let server = &up.servers[i];
    let full = u64::from(server.cfg.weight.get()) * 1000;
    let factor = server.slow_start_factor(now_ms);
    if factor >= 1.0 {
        full
    } else {
        ((full as f64 * factor) as u64).max(1)
    }
}

/// Whether load `a` (in-flight, weight) is lighter than load `b`: nginx's
/// `a.conns * b.weight < b.conns * a.weight`, without dividing.
fn lighter(a: (u32, u64), b: (u32, u64)) -> bool {
    u128::from(a.0) * u128::from(b.1) < u128::from(b.0) * u128::from(a.1)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builds a running upstream from config text, for the methods' tests.

    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;
    use std::sync::Arc;

    use http::{HeaderMap, Uri};

    use super::PickCtx;
    use crate::runtime::{Shared, UpstreamRt};

    /// An upstream `u` with the given upstream keys and servers, where each
    /// server is `"PORT key = value, ..."`, e.g. `"9001 weight = 5"`.
    pub fn upstream(keys: &str, servers: &[&str]) -> Arc<UpstreamRt> {
        let mut text = format!(
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\nupstream = \"u\"\n\n[upstream.u]\n{keys}\n"
        );
        for server in servers {
            let (port, rest) = server.split_once(' ').unwrap_or((server, ""));
            text.push_str(&format!(
                "[[upstream.u.server]]\naddress = \"127.0.0.1:{port}\"\n"
            ));
            for kv in rest.split(',').filter(|kv| !kv.trim().is_empty()) {
                text.push_str(kv.trim());
                text.push('\n');
            }
        }
        let config = crate::config::parse(&text, Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("test config:\n{text}\n{e}"));
        let shared = Shared::new(config, Default::default());
        shared.load().upstreams[0].clone()
    }

    /// A context with nothing tried, at clock `now_ms`.
    pub fn ctx<'a>(uri: &'a Uri, headers: &'a HeaderMap, tried: &'a [usize]) -> PickCtx<'a> {
        PickCtx {
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            uri,
            headers,
            set: None,
            now_ms: 1_000_000,
            tried,
        }
    }

    /// Picks `n` times and names the servers a, b, c, ... by index.
    pub fn picks(up: &UpstreamRt, n: usize, ctx: &PickCtx<'_>) -> String {
        (0..n)
            .map(|_| match up.balancer.pick(up, ctx) {
                Some(i) => (b'a' + i as u8) as char,
                None => '-',
            })
            .collect()
    }
}
