//! The fields sluice sets on a request going upstream: `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Real-IP`.
//!
//! They are kept beside the request's header map, not inserted into it:
//! the writer puts them behind the request's own fields, as it does the
//! framing fields. Four inserts a request (hashing each name, growing the
//! map) cost more than the rest of the rewriting together. What the client
//! sent of them is removed from the map, so what goes upstream is exactly
//! what [`Forwarding::get`] reads (the `header:` hash keys read through it).

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::headers::{
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP, remove_matching,
};
use crate::balance::SetFields;
use crate::config::canonical;
use crate::inline_text::InlineText;

/// An address in text, in its canonical form (IPv4-mapped IPv6 as IPv4),
/// held inline: a connection keeps its peer's for all its requests without
/// a heap allocation. 40 bytes, as the header value it replaces: the
/// longest canonical address is an IPv6 one in eight full groups, 39
/// characters (a mapped IPv4 one is written as IPv4).
#[derive(Clone, Copy, Debug)]
pub struct IpText(InlineText<39>);

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        let mut text = InlineText::new();
        write!(text, "{}", canonical(ip)).expect("an address in text fits in 39 bytes");
        IpText(text)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// What the proxy knows about the client of one request.
pub struct Client<'a> {
    /// The peer's address in text: made once per connection.
    pub peer: &'a IpText,
    /// The client's address, as [`client_ip`](super::headers::client_ip)
    /// gives it: the peer's own when the peer is not trusted.
    pub ip: IpAddr,
    pub peer_trusted: bool,
    pub proto: &'static str,
    /// The host the client asked for, as it sent it (with any port).
    pub host: &'a HeaderValue,
}

/// The values sluice sets on one request.
pub struct Forwarding<'a> {
    peer: &'a IpText,
    /// `X-Forwarded-For` when a trusted peer passed a chain on: the chain
    /// with the peer added. Otherwise the field is the peer alone.
    chain: Option<String>,
    /// `X-Real-IP` when it is not the peer's (a trusted peer's client).
    real_ip: Option<IpText>,
    /// `X-Forwarded-Proto`, unless a trusted peer set it.
    proto: Option<&'static str>,
    /// `X-Forwarded-Host`, unless a trusted peer set it.
    host: Option<HeaderValue>,
}

impl<'a> Forwarding<'a> {
    /// The fields to set for `client`'s request, whose `headers` lose what
    /// they are replacing. From an untrusted peer every incoming value is
    /// replaced (and the other `X-Forwarded-*` it sent, such as
    /// `X-Forwarded-Port`, and `Forwarded` are dropped: sluice has nothing
    /// true to put there); from a trusted one the chain is kept (several
    /// lines joined in order) and extended, and its `X-Forwarded-Proto` and
    /// `-Host` are kept.
    pub fn new(headers: &mut HeaderMap, client: &Client<'a>) -> Forwarding<'a> {
        if !client.peer_trusted {
            // Usually none of them came: one look at the names says so.
            if headers.keys().any(|name| untrusted_drops(name.as_str())) {
                remove_matching(headers, untrusted_drops);
            }
            return Forwarding {
                peer: client.peer,
                chain: None,
                real_ip: None,
                proto: Some(client.proto),
                host: Some(client.host.clone()),
            };
        }
        let mut chain = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        let chain = (!chain.is_empty()).then(|| {
            chain.push_str(", ");
            chain.push_str(client.peer.as_str());
            chain
        });
        headers.remove(&X_FORWARDED_FOR);
        headers.remove(&X_REAL_IP);
        Forwarding {
            peer: client.peer,
            chain,
            real_ip: Some(IpText::new(client.ip)),
            proto: (!headers.contains_key(&X_FORWARDED_PROTO)).then_some(client.proto),
            host: (!headers.contains_key(&X_FORWARDED_HOST)).then(|| client.host.clone()),
        }
    }

    /// The fields, in sluice's spelling, as the writer puts them on the wire.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        [
            Some((X_FORWARDED_FOR.as_str(), self.forwarded_for())),
            self.proto
                .map(|proto| (X_FORWARDED_PROTO.as_str(), proto.as_bytes())),
            self.host
                .as_ref()
                .map(|host| (X_FORWARDED_HOST.as_str(), host.as_bytes())),
            Some((X_REAL_IP.as_str(), self.real_ip())),
        ]
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.as_bytes(), value))
    }

    fn forwarded_for(&self) -> &[u8] {
        self.chain
            .as_ref()
            .map_or(self.peer.as_bytes(), String::as_bytes)
    }

    fn real_ip(&self) -> &[u8] {
        self.real_ip.as_ref().unwrap_or(self.peer).as_bytes()
    }
}

/// What the request's map lacks: the value sluice sets for a name, or
/// `None` for a field it does not set (which the map holds as the client
/// sent it, if at all).
impl SetFields for Forwarding<'_> {
    fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        if *name == X_FORWARDED_FOR {
            Some(self.forwarded_for())
        } else if *name == X_REAL_IP {
            Some(self.real_ip())
        } else if *name == X_FORWARDED_PROTO {
            self.proto.map(str::as_bytes)
        } else if *name == X_FORWARDED_HOST {
            self.host.as_ref().map(HeaderValue::as_bytes)
        } else {
            None
        }
    }
}

/// A field an untrusted peer's request loses: every `X-Forwarded-*` (the
/// three sluice sets are replaced, the others dropped), `X-Real-IP` and
/// `Forwarded`.
fn untrusted_drops(name: &str) -> bool {
    match name.as_bytes().first() {
        Some(b'x') => name.starts_with("x-forwarded-") || name == "x-real-ip",
        Some(b'f') => name == "forwarded",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::PickCtx;
    use crate::config::Cidr;
    use crate::proxy::headers::client_ip;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn text(value: Option<&[u8]>) -> Option<&str> {
        value.map(|v| std::str::from_utf8(v).unwrap())
    }

    static HOST: HeaderValue = HeaderValue::from_static("example.com");

    /// The fields for a request to `HOST` over plain HTTP from `client`
    /// through the peer at `peer`.
    fn forwarding<'a>(
        h: &mut HeaderMap,
        peer: &'a IpText,
        client: IpAddr,
        peer_trusted: bool,
    ) -> Forwarding<'a> {
        Forwarding::new(
            h,
            &Client {
                peer,
                ip: client,
                peer_trusted,
                proto: "http",
                host: &HOST,
            },
        )
    }

    #[test]
    fn untrusted_peer_forwarded_headers_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded", "kept: not of the family"),
        ]);
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let peer_text = IpText::new(peer);
        let fwd = forwarding(&mut h, &peer_text, peer, false);
        assert_eq!(text(fwd.get(&X_FORWARDED_FOR)), Some("10.1.2.3"));
        assert_eq!(text(fwd.get(&X_FORWARDED_PROTO)), Some("http"));
        assert_eq!(text(fwd.get(&X_REAL_IP)), Some("10.1.2.3"));
        assert_eq!(text(fwd.get(&X_FORWARDED_HOST)), Some("example.com"));
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-forwarded"]);
        let written: Vec<(&[u8], &[u8])> = fwd.fields().collect();
        assert_eq!(
            written,
            [
                (b"x-forwarded-for".as_slice(), b"10.1.2.3".as_slice()),
                (b"x-forwarded-proto", b"http"),
                (b"x-forwarded-host", b"example.com"),
                (b"x-real-ip", b"10.1.2.3"),
            ]
        );
    }

    #[test]
    fn trusted_peer_chain_is_joined_and_extended() {
        let trusted = [Cidr {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        }];
        let h0 = map(&[
            ("x-forwarded-for", "1.1.1.1, 10.0.0.9"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "9.9.9.9"),
        ]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let client = client_ip(peer, &h0, &trusted);
        assert_eq!(client, "2.2.2.2".parse::<IpAddr>().unwrap());
        let mut h = h0.clone();
        let peer_text = IpText::new(peer);
        let fwd = forwarding(&mut h, &peer_text, client, true);
        assert_eq!(
            text(fwd.get(&X_FORWARDED_FOR)),
            Some("1.1.1.1, 10.0.0.9, 2.2.2.2, 10.0.0.1")
        );
        assert_eq!(text(fwd.get(&X_REAL_IP)), Some("2.2.2.2"));
        // The peer's own is kept, in the map.
        assert_eq!(fwd.get(&X_FORWARDED_PROTO), None);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(text(fwd.get(&X_FORWARDED_HOST)), Some("example.com"));
        assert!(!h.contains_key(&X_FORWARDED_FOR));
        assert!(!h.contains_key(&X_REAL_IP));
    }

    #[test]
    fn a_trusted_peer_without_a_chain_is_the_chain() {
        let mut h = HeaderMap::new();
        let peer: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let peer_text = IpText::new(peer);
        let fwd = forwarding(&mut h, &peer_text, peer, true);
        assert_eq!(text(fwd.get(&X_FORWARDED_FOR)), Some("10.0.0.1"));
        assert_eq!(text(fwd.get(&X_FORWARDED_PROTO)), Some("http"));
    }

    #[test]
    fn a_pick_reads_the_fields_as_they_go_upstream() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6"), ("x-key", "k")]);
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let peer_text = IpText::new(peer);
        let fwd = forwarding(&mut h, &peer_text, peer, false);
        let uri = http::Uri::from_static("/");
        let ctx = PickCtx {
            set: Some(&fwd),
            ..crate::balance::testing::ctx(&uri, &h, &[])
        };
        assert_eq!(text(ctx.header(&X_FORWARDED_FOR)), Some("10.1.2.3"));
        assert_eq!(
            text(ctx.header(&HeaderName::from_static("x-key"))),
            Some("k")
        );
        assert_eq!(ctx.header(&HeaderName::from_static("x-none")), None);
    }

    #[test]
    fn the_longest_address_fits() {
        let ip: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap();
        assert_eq!(
            IpText::new(ip).as_str(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"
        );
        assert_eq!(std::mem::size_of::<IpText>(), 40);
    }
}
