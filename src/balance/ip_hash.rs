//! `ip_hash`, identical to nginx's: the same client lands on the same server
//! nginx would pick for the same server list, so migrating reshuffles nobody.
//!
//! The key is the first three octets of an IPv4 client (a /24 counts as one
//! client) or all sixteen bytes of an IPv6 one. The hash starts at 89 and takes
//! `h = (h * 113 + byte) % 6271` per key byte; `h % total_weight` is walked over
//! the tier's servers in config order by weight. Servers that are down still
//! count in the total, so taking one down moves only its own clients. On an
//! unavailable server the key is hashed again from the current `h`, which sends
//! that server's clients to the same replacement every time; after 21 draws
//! (nginx's `tries > 20`) the pick falls back to round-robin.
//!
//! nginx forbids `backup` with `ip_hash`; sluice hashes the backup tier the
//! same way when no primary is available. A server in `slow_start` (which
//! nginx refuses with `ip_hash`) takes a client the hash lands on it with
//! probability equal to its current share, and a refused client is hashed
//! again as for an unavailable server: the server's share ramps while every
//! other server keeps its clients.

use std::net::IpAddr;

use super::round_robin::admit_slow_start;
use super::{PickCtx, RoundRobin, Tier, eligible, tier};
use crate::config;
use crate::runtime::UpstreamRt;

/// nginx gives up re-hashing after this many draws.
const DRAWS: usize = 21;

#[derive(Debug)]
pub struct IpHash {
    fallback: RoundRobin,
}

impl IpHash {
    pub fn new(cfg: &config::Upstream) -> Self {
        IpHash {
            fallback: RoundRobin::new(cfg),
        }
    }

    pub fn pick(&self, up: &UpstreamRt, which: Tier, ctx: &PickCtx<'_>) -> Option<usize> {
        let servers = tier(up, which);
        // nginx hashes only with two servers or more.
        if servers.len() >= 2 {
            let weights = |k: usize| up.servers[servers[k]].cfg.weight.get();
            let (bytes, len) = key(ctx.client_ip);
            let found = draw(&bytes[..len], servers.len(), weights, |k| {
                eligible(up, servers[k], ctx) && admit_slow_start(up, servers[k], ctx.now_ms)
            });
            if let Some(k) = found {
                return Some(servers[k]);
            }
        }
        self.fallback.pick(up, which, ctx)
    }
}

/// The bytes nginx hashes: three for IPv4, sixteen for IPv6.
fn key(ip: IpAddr) -> ([u8; 16], usize) {
    let mut bytes = [0; 16];
    match crate::config::canonical(ip) {
        IpAddr::V4(v4) => {
            bytes[..3].copy_from_slice(&v4.octets()[..3]);
            (bytes, 3)
        }
        IpAddr::V6(v6) => (v6.octets(), 16),
    }
}

/// nginx's draw loop over `n` servers with `weight(k)`: the position of the
/// first usable server, or `None` after [`DRAWS`] draws.
fn draw(
    key: &[u8],
    n: usize,
    weight: impl Fn(usize) -> u32,
    mut usable: impl FnMut(usize) -> bool,
) -> Option<usize> {
    let total: u64 = (0..n).map(|k| u64::from(weight(k))).sum();
    let mut hash: u64 = 89;
    for _ in 0..DRAWS {
        for &b in key {
            hash = (hash * 113 + u64::from(b)) % 6271;
        }
        let k = walk(hash % total, n, &weight);
        if usable(k) {
            return Some(k);
        }
    }
    None
}

/// The position `w` falls on when the servers' weights are laid end to end.
pub(super) fn walk(mut w: u64, n: usize, weight: impl Fn(usize) -> u32) -> usize {
    for k in 0..n {
        let own = u64::from(weight(k));
        if w < own {
            return k;
        }
        w -= own;
    }
    n - 1
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use http::{HeaderMap, Uri};

    use super::super::testing::{ctx, upstream};
    use super::{draw, key};

    fn hash_of(ip: IpAddr, n: usize) -> usize {
        let (bytes, len) = key(ip);
        draw(&bytes[..len], n, |_| 1, |_| true).expect("a server")
    }

    #[test]
    fn known_nginx_values() {
        // 127.0.0.x: h = 89 -> 3913 -> 3199 -> 4040; 4040 % 3 = 2.
        assert_eq!(hash_of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 3), 2);
        assert_eq!(hash_of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 200)), 3), 2);
        // 127.0.1.x: 3913 -> 3199 -> (3199 * 113 + 1) % 6271 = 4041.
        assert_eq!(hash_of(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 9)), 3), 0);
        assert_eq!(hash_of(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 9)), 4), 1);
    }

    #[test]
    fn ipv4_mapped_clients_hash_as_ipv4_and_ipv6_uses_every_byte() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
        assert_eq!(key(v4), key(mapped));
        let (_, len) = key(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(len, 16);
    }

    #[test]
    fn weights_widen_a_servers_range() {
        // 127.0.1.x hashes to 4041; 4041 % (1 + 3) = 1 falls past a's one unit onto b.
        let (bytes, len) = key(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)));
        let w = |k: usize| [1, 3][k];
        assert_eq!(draw(&bytes[..len], 2, w, |_| true), Some(1));
    }

    #[test]
    fn unavailable_server_rehashes_to_the_same_replacement() {
        let up = upstream(
            "balance = \"ip_hash\"",
            &["9001", "9002", "9003 down = true"],
        );
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        let mut c = ctx(&uri, &headers, &[]);
        c.client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        // 4040 % 3 = 2 is down; re-hash: (4040*113 + 127) ... computed by nginx's loop.
        let (bytes, len) = key(c.client_ip);
        let expected = draw(&bytes[..len], 3, |_| 1, |k| k != 2).expect("a server");
        for _ in 0..5 {
            assert_eq!(up.balancer.pick(&up, &c), Some(expected));
        }
        // A retry skips the tried server with the same re-hash.
        let tried = [expected];
        c.tried = &tried;
        let next = up.balancer.pick(&up, &c).expect("another server");
        assert!(next != expected && next != 2);
    }

    #[test]
    fn same_slash_24_same_server_and_backup_only_when_primaries_are_gone() {
        let up = upstream(
            "balance = \"ip_hash\"",
            &["9001", "9002", "9003", "9004 backup = true"],
        );
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        let mut c = ctx(&uri, &headers, &[]);
        c.client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(up.balancer.pick(&up, &c), Some(2));
        c.client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77));
        assert_eq!(up.balancer.pick(&up, &c), Some(2));
        let tried = [0, 1, 2];
        c.tried = &tried;
        assert_eq!(up.balancer.pick(&up, &c), Some(3));
    }

    #[test]
    fn slow_start_ramps_the_share_of_the_clients_a_recovering_server_owns() {
        let up = upstream(
            "balance = \"ip_hash\"",
            &["9001 slow_start = \"100s\"", "9002 slow_start = \"100s\""],
        );
        let (uri, headers) = (Uri::from_static("/"), HeaderMap::new());
        let pick = |client: IpAddr, now_ms: u64| {
            let mut c = ctx(&uri, &headers, &[]);
            c.client_ip = client;
            c.now_ms = now_ms;
            up.balancer.pick(&up, &c).expect("a server")
        };
        let clients: Vec<IpAddr> = (0..=255)
            .map(|k| IpAddr::V4(Ipv4Addr::new(10, 0, k, 1)))
            .collect();
        let before: Vec<usize> = clients.iter().map(|&c| pick(c, 1_000)).collect();
        up.servers[0].state.mark_recovered();
        let since = up.servers[0].state.recovered_ms().expect("recovered");
        let early: Vec<usize> = clients.iter().map(|&c| pick(c, since)).collect();
        let owned = before.iter().filter(|&&o| o == 0).count();
        let kept = (0..clients.len())
            .filter(|&k| before[k] == 0 && early[k] == 0)
            .count();
        assert!(owned > 50, "{owned}");
        assert!(kept * 4 < owned, "kept {kept} of {owned} at 10 %");
        for k in 0..clients.len() {
            if before[k] == 1 {
                assert_eq!(early[k], 1, "{}", clients[k]);
            }
        }
        let late: Vec<usize> = clients.iter().map(|&c| pick(c, since + 100_000)).collect();
        assert_eq!(late, before, "once ramped");
    }
}
