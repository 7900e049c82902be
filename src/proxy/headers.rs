//! Header rules of the contract: hop-by-hop headers removed both ways, the
//! `X-Forwarded-*` family set, and client addresses believed only from
//! `trusted_proxies`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{Cidr, canonical};
use crate::http1::head::{Fields, Known};

pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Whether `ip` is one of the configured trusted proxies.
pub fn is_trusted(ip: IpAddr, trusted: &[Cidr]) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the right-most `X-Forwarded-For` hop that is not itself trusted.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok().map(canonical))
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(**ip, trusted))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

/// Hop-by-hop headers, `Upgrade` aside; `Connection` first.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &PROXY_CONNECTION,
    &HTTP2_SETTINGS,
];

/// A hop-by-hop name's index in [`HOP_BY_HOP`], matched as lower-case
/// bytes: one length switch, not nine name comparisons, and no UTF-8 check
/// of a name as sent.
fn hop_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"connection" => 0,
        b"keep-alive" => 1,
        b"te" => 2,
        b"trailer" => 3,
        b"transfer-encoding" => 4,
        b"proxy-authenticate" => 5,
        b"proxy-authorization" => 6,
        b"proxy-connection" => 7,
        b"http2-settings" => 8,
        _ => return None,
    })
}

/// `Proxy-*` headers are hop-by-hop by the contract; a bare `Proxy` is the
/// httpoxy vector (CGI turns it into `HTTP_PROXY`). `name` in lower case.
fn is_proxy_header(name: &[u8]) -> bool {
    name.strip_prefix(b"proxy")
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'-')
}

/// Whether a field of this name (as sent, any case) is hop-by-hop by
/// itself, `Upgrade` included; the names a `Connection` lists are too.
/// Lower-cased on the stack and matched as [`strip_hop_by_hop`] matches a
/// map's names: no allocation.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    // Most names are ruled out by their first letter and length alone
    // (`Content-Type`, `Date`, `Server`...): no copy, no lower-casing.
    let Some(&first) = name.first() else {
        return false;
    };
    let candidate = matches!(
        (first | 0x20, name.len()),
        (b'c' | b'k', 10) | (b't', 2 | 7 | 17) | (b'h', 14) | (b'u', 7) | (b'p', 5..)
    );
    candidate && is_hop_by_hop_lower(name)
}

/// [`is_hop_by_hop`] for a name that may be one: lower-cased and matched.
fn is_hop_by_hop_lower(name: &[u8]) -> bool {
    // Longer than any name listed: only a `Proxy-*` can be one.
    let mut lower = [0u8; 24];
    let Some(lower) = lower.get_mut(..name.len()) else {
        return name[..6].eq_ignore_ascii_case(b"proxy-");
    };
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    hop_index(lower).is_some() || is_proxy_header(lower) || lower == b"upgrade"
}

/// A head's fields as a proxy passes them on, in the order and case they
/// came: without the hop-by-hop ones (`Upgrade` among them) and those its
/// `Connection` lines list, `Content-Length` excepted (the body's framing). What [`strip_hop_by_hop`] does to a map, done to
/// the raw fields without building one.
pub fn end_to_end(fields: &Fields) -> impl Iterator<Item = (&[u8], &[u8])> {
    // Usually one `Connection` line with one token, or none.
    let mut listed: [&[u8]; 4] = [b""; 4];
    let mut count = 0;
    let mut more: Vec<&[u8]> = Vec::new();
    let tokens = fields
        .named(Known::Connection)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    for token in tokens {
        match listed.get_mut(count) {
            Some(slot) => {
                *slot = token;
                count += 1;
            }
            None => more.push(token),
        }
    }
    fields
        .iter_known()
        .filter(move |&(known, name, _)| {
            let hop = match known {
                Known::Connection | Known::TransferEncoding => true,
                // The body's framing: a `Connection` line that lists it
                // does not take it away (the message would lose its end).
                Known::ContentLength => return true,
                Known::Date => false,
                Known::Other => is_hop_by_hop(name),
            };
            !hop && !listed[..count]
                .iter()
                .chain(&more)
                .any(|l| l.len() == name.len() && l.eq_ignore_ascii_case(name))
        })
        .map(|(_, name, value)| (name, value))
}

/// Joins an HTTP/2 request's `cookie` fields into one with `"; "`, as
/// RFC 9113 §8.2.3 asks of a request passed on over HTTP/1.1: HTTP/2
/// clients send one field per cookie, and many HTTP/1.1 servers read only
/// the first `Cookie` line.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for cookie in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(cookie.as_bytes());
    }
    // Joined from valid values with "; ": valid too.
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, joined);
    }
}

/// Removes every header whose name `matches`, found by text.
pub(super) fn remove_matching(headers: &mut HeaderMap, matches: impl Fn(&str) -> bool) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| matches(name.as_str()))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

/// Removes `Connection`, every header it names but `Content-Length` (the
/// body's framing), and the other hop-by-hop headers (`Proxy-*` among them). `Upgrade` survives only when
/// `keep_upgrade` (a tunnel); `Upgrade: h2c` and `HTTP2-Settings` never do.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Found in one pass over the few names a message has, then removed: a
    // hashed removal of every hop-by-hop name, present or not, costs more.
    let mut present = [false; HOP_BY_HOP.len()];
    let mut upgrade = false;
    let mut proxy = false;
    for name in headers.keys() {
        match hop_index(name.as_str().as_bytes()) {
            Some(hop) => present[hop] = true,
            None => {
                upgrade |= name == header::UPGRADE;
                proxy |= is_proxy_header(name.as_str().as_bytes());
            }
        }
    }
    if proxy {
        remove_matching(headers, |name| is_proxy_header(name.as_bytes()));
    }
    // `HOP_BY_HOP[0]` is `Connection`.
    if present[0] {
        // The names it lists are removed as text, with no `HeaderName` to
        // allocate; the lines are copied (refcounts) to let go of the map.
        let mut lines = headers.get_all(header::CONNECTION).iter();
        let first = lines.next().cloned();
        let rest: Vec<HeaderValue> = lines.cloned().collect();
        for line in first.iter().chain(&rest) {
            for token in line.to_str().unwrap_or_default().split(',') {
                let token = token.trim();
                // Most tokens (`keep-alive`, `close`) name no header here: a
                // look at the few names saves hashing them.
                let named = headers
                    .keys()
                    .any(|name| name.as_str().eq_ignore_ascii_case(token));
                let kept = (keep_upgrade && token.eq_ignore_ascii_case("upgrade"))
                    || token.eq_ignore_ascii_case("content-length");
                if named && !kept {
                    headers.remove(token);
                }
            }
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(*name);
        }
    }
    if upgrade && !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Whether the request asks for a protocol upgrade sluice tunnels (any
/// `Upgrade` but `h2c`, listed in `Connection`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    let Some(upgrade) = headers.get(header::UPGRADE) else {
        return false;
    };
    let h2c = upgrade
        .to_str()
        .map(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")))
        .unwrap_or(true);
    !h2c && connection_has(headers, "upgrade")
}

/// A request's or response's `Content-Length`, when it holds one number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    parse_content_length(headers.get(header::CONTENT_LENGTH)?)
}

/// A `Content-Length` value's number, when it holds one.
pub fn parse_content_length(value: &HeaderValue) -> Option<u64> {
    value.to_str().ok()?.trim().parse().ok()
}

/// Whether `Connection` lists `token`.
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests;
