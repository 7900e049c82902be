//! `hash`: a key from the request mapped to a server exactly as nginx's
//! `hash $key` maps it, or, with `consistent = true`, as `hash $key
//! consistent` does (the ring is in [`super::ring`]).
//!
//! Plain mode is nginx's (Cache::Memcached-compatible) formula: draw `k`
//! hashes `crc32([k] key)` (the draw number in decimal before the key, left
//! out for the first), adds `(crc >> 16) & 0x7fff` to a running sum, and walks
//! `sum % total_weight` over the tier's servers by weight, down ones included.
//! An unavailable server means another draw; after 21 (nginx's `tries > 20`),
//! round-robin. Adding or removing a server moves most keys: use `consistent`
//! when that matters.
//!
//! Keys: `client_ip` (the address as text, after `client_ip_prefix` masking,
//! like nginx's `$remote_addr`), `uri` (path and query, `$request_uri`),
//! `header:NAME` (its first value, `$http_NAME`), `cookie:NAME`
//! (`$cookie_NAME`), `query:NAME` (the raw value, `$arg_NAME`). Cookie and
//! query names match case-insensitively, as in nginx. A request without the
//! key goes round-robin instead of piling every keyless request on one server.
//!
//! A server in `slow_start` (which nginx refuses with `hash`) takes a key
//! that lands on it with probability equal to its current share; a refused
//! key is drawn again (plain) or goes on round the ring (consistent), as for
//! an unavailable server. Its share ramps; every other server keeps its keys.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::COOKIE;

use super::ip_hash::walk;
use super::ring::Ring;
use super::round_robin::admit_slow_start;
use super::{PickCtx, RoundRobin, Tier, eligible, tier};
use crate::config::{self, HashKey};
use crate::inline_text::InlineText;
use crate::runtime::UpstreamRt;

/// nginx gives up re-hashing after this many draws.
const DRAWS: u32 = 21;

#[derive(Debug)]
pub struct Hash {
    key: HashKey,
    client_ip_prefix: (u8, u8),
    /// `Some` with `consistent = true`: one ring per tier.
    pub(super) rings: Option<[Ring; 2]>,
    fallback: RoundRobin,
}

impl Hash {
    pub fn new(cfg: &config::Upstream) -> Self {
        Hash {
            key: cfg.hash_key.clone(),
            client_ip_prefix: cfg.client_ip_prefix,
            rings: cfg
                .consistent
                .then(|| [false, true].map(|backup| Ring::new(cfg, backup, cfg.balance_factor))),
            fallback: RoundRobin::new(cfg),
        }
    }

    pub fn pick(&self, up: &UpstreamRt, which: Tier, ctx: &PickCtx<'_>) -> Option<usize> {
        let servers = tier(up, which);
        if servers.is_empty() {
            return None;
        }
        let mut ip_text = TextBuf::default();
        let key: Option<&[u8]> = match &self.key {
            HashKey::ClientIp => {
                let ip = mask(ctx.client_ip, self.client_ip_prefix);
                // An address is at most 45 characters: it always fits.
                let _ = write!(ip_text, "{ip}");
                Some(ip_text.as_bytes())
            }
            HashKey::Uri => Some(
                ctx.uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .as_bytes(),
            ),
            HashKey::Header(name) => ctx.header(name),
            HashKey::Cookie(name) => cookie(ctx, name),
            HashKey::Query(name) => query(ctx, name),
        };
        let key = key.filter(|k| !k.is_empty());
        let found = match (key, &self.rings) {
            (None, _) => None,
            (Some(key), Some(rings)) => {
                let ring = &rings[(which == Tier::Backup) as usize];
                return ring.pick(up, key, ctx);
            }
            // nginx's `single` peer: no hashing with one server.
            (Some(_), None) if servers.len() == 1 => None,
            (Some(key), None) => draw(
                key,
                servers.len(),
                |k| up.servers[servers[k]].cfg.weight.get(),
                |k| eligible(up, servers[k], ctx) && admit_slow_start(up, servers[k], ctx.now_ms),
            )
            .map(|k| servers[k]),
        };
        found.or_else(|| self.fallback.pick(up, which, ctx))
    }
}

/// nginx's plain `hash` draws over `n` servers with `weight(k)`.
fn draw(
    key: &[u8],
    n: usize,
    weight: impl Fn(usize) -> u32,
    mut usable: impl FnMut(usize) -> bool,
) -> Option<usize> {
    let total: u64 = (0..n).map(|k| u64::from(weight(k))).sum();
    let mut sum: u32 = 0;
    for rehash in 0..DRAWS {
        let mut crc = Crc32::new();
        if rehash > 0 {
            let mut digits = TextBuf::default();
            let _ = write!(digits, "{rehash}");
            crc.update(digits.as_bytes());
        }
        crc.update(key);
        sum = sum.wrapping_add((crc.finish() >> 16) & 0x7fff);
        let k = walk(u64::from(sum) % total, n, &weight);
        if usable(k) {
            return Some(k);
        }
    }
    None
}

/// The client address with only its first `prefix` bits kept.
fn mask(ip: IpAddr, (v4, v6): (u8, u8)) -> IpAddr {
    let ip = config::canonical(ip);
    config::truncate(ip, if ip.is_ipv4() { v4 } else { v6 })
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(ctx: &PickCtx<'a>, name: &str) -> Option<&'a [u8]> {
    ctx.headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii_start();
            let (k, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            k.trim_ascii_end()
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| v[1..].trim_ascii())
        })
}

/// The raw (undecoded) value of query argument `name`.
fn query<'a>(ctx: &PickCtx<'a>, name: &str) -> Option<&'a [u8]> {
    ctx.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case(name).then_some(v.as_bytes())
    })
}

/// An address or a number as text, on the stack: no allocation per pick.
/// An address is at most 45 characters.
type TextBuf = InlineText<48>;

/// CRC-32 (IEEE, reflected), as nginx's `ngx_crc32_*`, with the running
/// state exposed so the ring can hash a server's points from a shared prefix.
#[derive(Debug, Clone, Copy)]
pub(super) struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

impl Crc32 {
    pub(super) fn new() -> Self {
        Crc32(0xffff_ffff)
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    pub(super) fn finish(self) -> u32 {
        self.0 ^ 0xffff_ffff
    }
}

pub(super) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(bytes);
    crc.finish()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use http::{HeaderMap, HeaderValue, Uri};

    use super::super::testing::{ctx, picks, upstream};
    use super::{crc32, draw, mask};

    #[test]
    fn crc32_is_the_standard_one() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn known_nginx_values() {
        // crc32("a") = 0xe8b7be43 -> (>> 16) & 0x7fff = 0x68b7 = 26807.
        assert_eq!(draw(b"a", 3, |_| 1, |_| true), Some(26807 % 3));
        assert_eq!(draw(b"a", 4, |_| 1, |_| true), Some(26807 % 4));
        // Server 2 unusable: the second draw adds crc32("1a")'s bits.
        // crc32("1a") = 0xbd314483: (26807 + 0x3d31) % 3 = 1.
        assert_eq!(crc32(b"1a"), 0xbd31_4483);
        assert_eq!(draw(b"a", 3, |_| 1, |k| k != 2), Some(1));
    }

    #[test]
    fn weights_widen_a_servers_range() {
        // 26807 % 4 = 3: with weights 3,1 that is the second server.
        assert_eq!(draw(b"a", 2, |k| [3, 1][k], |_| true), Some(1));
    }

    #[test]
    fn prefix_masks_the_client_address() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(mask(ip, (24, 128)), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 0)));
        assert_eq!(mask(ip, (32, 128)), ip);
        assert_eq!(mask(ip, (0, 128)), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let v6: Ipv6Addr = "2001:db8::1".parse().expect("v6");
        assert_eq!(
            mask(IpAddr::V6(v6), (32, 32)),
            "2001:db8::".parse::<IpAddr>().expect("v6")
        );
    }

    #[test]
    fn keys_come_from_query_header_cookie_and_missing_keys_go_round_robin() {
        let query = upstream(
            "balance = \"hash\"\nconsistent = false\nhash_key = \"query:key\"",
            &["9001", "9002", "9003"],
        );
        let header = upstream(
            "balance = \"hash\"\nconsistent = false\nhash_key = \"header:x-key\"",
            &["9001", "9002", "9003"],
        );
        let cookie = upstream(
            "balance = \"hash\"\nconsistent = false\nhash_key = \"cookie:k\"",
            &["9001", "9002", "9003"],
        );
        let empty = HeaderMap::new();
        let uri = Uri::from_static("/p?x=1&KEY=a");
        let want = draw(b"a", 3, |_| 1, |_| true).map(|k| (b'a' + k as u8) as char);
        let want: String = std::iter::repeat_n(want.expect("a server"), 4).collect();
        assert_eq!(picks(&query, 4, &ctx(&uri, &empty, &[])), want);

        let mut headers = HeaderMap::new();
        headers.insert("x-key", HeaderValue::from_static("a"));
        headers.insert("cookie", HeaderValue::from_static("other=1; k=a"));
        let plain = Uri::from_static("/p");
        assert_eq!(picks(&header, 4, &ctx(&plain, &headers, &[])), want);
        assert_eq!(picks(&cookie, 4, &ctx(&plain, &headers, &[])), want);
        // No key: round-robin.
        assert_eq!(picks(&header, 3, &ctx(&plain, &empty, &[])), "abc");
    }

    #[test]
    fn unavailable_server_draws_again_and_backup_takes_over() {
        let up = upstream(
            "balance = \"hash\"\nconsistent = false\nhash_key = \"query:key\"",
            &["9001", "9002", "9003", "9004 backup = true"],
        );
        let headers = HeaderMap::new();
        let uri = Uri::from_static("/?key=a");
        let first = draw(b"a", 3, |_| 1, |_| true).expect("a server");
        let tried = [first];
        let again = draw(b"a", 3, |_| 1, |k| k != first).expect("a server");
        assert_eq!(
            up.balancer.pick(&up, &ctx(&uri, &headers, &tried)),
            Some(again)
        );
        assert_eq!(
            up.balancer.pick(&up, &ctx(&uri, &headers, &[0, 1, 2])),
            Some(3)
        );
    }

    #[test]
    fn slow_start_ramps_the_share_of_the_keys_a_recovering_server_owns() {
        for consistent in [false, true] {
            let up = upstream(
                &format!("balance = \"hash\"\nconsistent = {consistent}\nhash_key = \"uri\""),
                &[
                    "9001 slow_start = \"100s\"",
                    "9002 slow_start = \"100s\"",
                    "9003 slow_start = \"100s\"",
                ],
            );
            let headers = HeaderMap::new();
            // Keys owned by each server while none ramps.
            let owner = |key: &str, now_ms: u64| {
                let uri: Uri = key.parse().unwrap();
                let mut c = ctx(&uri, &headers, &[]);
                c.now_ms = now_ms;
                up.balancer.pick(&up, &c).expect("a server")
            };
            let keys: Vec<String> = (0..300).map(|k| format!("/k{k}")).collect();
            let before: Vec<usize> = keys.iter().map(|k| owner(k, 1_000)).collect();
            up.servers[0].state.mark_recovered();
            let since = up.servers[0].state.recovered_ms().expect("recovered");

            let early: Vec<usize> = keys.iter().map(|k| owner(k, since)).collect();
            let owned = before.iter().filter(|&&o| o == 0).count();
            let kept = (0..keys.len())
                .filter(|&k| before[k] == 0 && early[k] == 0)
                .count();
            assert!(owned > 50, "{owned}");
            assert!(kept * 4 < owned, "kept {kept} of {owned} at 10 %");
            // The other servers keep every key of theirs.
            for k in 0..keys.len() {
                if before[k] != 0 {
                    assert_eq!(early[k], before[k], "{}", keys[k]);
                }
            }
            let late: Vec<usize> = keys.iter().map(|k| owner(k, since + 100_000)).collect();
            assert_eq!(late, before, "consistent = {consistent}, once ramped");
        }
    }
}
