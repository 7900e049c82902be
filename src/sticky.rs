//! Cookie stickiness: which server a client is bound to, and the
//! `Set-Cookie` that binds it.
//!
//! A server's cookie value is an HMAC-SHA256 of its stable identity — the
//! upstream name and the address as written in the config — keyed with the
//! upstream's `secret`, truncated to 128 bits and hex-encoded. So the value
//! reveals no address, cannot be forged without the key, survives reloads and
//! reorderings of the server list, and is the same on every sluice instance
//! that shares the secret: the balancer tier stays stateless.
//!
//! Without a `secret` the key is derived from the upstream name
//! ([`default_key`]). The value is still opaque, but anyone who knows the
//! upstream name can compute the value of a guessed address, so such cookies
//! can be forged and addresses confirmed by guessing: set a secret where that
//! matters.
//!
//! Values are computed once per snapshot; finding a client's server is a
//! comparison against that short list.

use http::HeaderMap;
use http::header::{COOKIE, HeaderValue};
use ring::hmac;

use crate::config::{self, SameSite};

/// Bytes of the HMAC kept in the cookie: 128 bits is far beyond guessing.
const VALUE_BYTES: usize = 16;

/// The key used when an upstream's `sticky.secret` is empty: public and
/// deterministic, so instances without a secret still agree.
pub fn default_key(upstream: &str) -> Vec<u8> {
    format!("sluice sticky cookie for upstream {upstream}").into_bytes()
}

/// An upstream's stickiness, built with its snapshot.
#[derive(Debug)]
pub struct Sticky {
    cfg: config::Sticky,
    /// The cookie value of each server, by index into `UpstreamRt::servers`.
    values: Vec<String>,
    /// The `Set-Cookie` of each server, by index: for cleartext clients,
    /// then for TLS ones. `None` when the config's attributes make no valid
    /// field value.
    set_cookies: Vec<[Option<HeaderValue>; 2]>,
}

/// What a request's cookies say about its binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// No cookie of this upstream's name.
    Missing,
    /// A cookie whose value names no server (forged, garbage, or a server
    /// removed since).
    Invalid,
    /// Bound to this server (an index into `UpstreamRt::servers`).
    Server(usize),
}

impl Sticky {
    pub fn build(upstream: &str, cfg: &config::Sticky, servers: &[config::Server]) -> Sticky {
        let key = if cfg.secret.is_empty() {
            hmac::Key::new(hmac::HMAC_SHA256, &default_key(upstream))
        } else {
            hmac::Key::new(hmac::HMAC_SHA256, cfg.secret.as_bytes())
        };
        let values: Vec<String> = servers
            .iter()
            .map(|s| cookie_value(&key, upstream, &s.address))
            .collect();
        let set_cookies = values
            .iter()
            .map(|value| [false, true].map(|tls| set_cookie(cfg, value, tls)))
            .collect();
        Sticky {
            cfg: cfg.clone(),
            values,
            set_cookies,
        }
    }

    pub fn cookie_name(&self) -> &str {
        &self.cfg.cookie
    }

    /// The binding the request's cookies carry. Every `Cookie` field counts
    /// (HTTP/2 clients send one per cookie); the first value of our name that
    /// names a server wins.
    pub fn binding(&self, headers: &HeaderMap) -> Binding {
        let mut found = Binding::Missing;
        let pairs = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='));
        for (name, value) in pairs {
            if name.trim() != self.cfg.cookie {
                continue;
            }
            let value = value.trim().trim_matches('"');
            match self.values.iter().position(|v| v == value) {
                Some(i) => return Binding::Server(i),
                None => found = Binding::Invalid,
            }
        }
        found
    }

    /// The `Set-Cookie` binding a client to server `i`. `tls` is whether the
    /// client connection is TLS, where a `SameSite=None` cookie is `Secure`.
    pub fn set_cookie(&self, i: usize, tls: bool) -> Option<HeaderValue> {
        self.set_cookies.get(i)?[usize::from(tls)].clone()
    }
}

/// Written once per server when the snapshot is built, not per response.
fn set_cookie(cfg: &config::Sticky, value: &str, tls: bool) -> Option<HeaderValue> {
    let mut cookie = format!("{}={value}; Path={}", cfg.cookie, cfg.path);
    if let Some(age) = cfg.max_age {
        cookie.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if cfg.http_only {
        cookie.push_str("; HttpOnly");
    }
    // Browsers drop `SameSite=None` cookies that are not `Secure`; over
    // plain HTTP they drop `Secure` ones, so it is forced over TLS only.
    if cfg.secure || (tls && cfg.same_site == SameSite::None) {
        cookie.push_str("; Secure");
    }
    cookie.push_str(match cfg.same_site {
        SameSite::Strict => "; SameSite=Strict",
        SameSite::Lax => "; SameSite=Lax",
        SameSite::None => "; SameSite=None",
    });
    HeaderValue::from_str(&cookie).ok()
}

fn cookie_value(key: &hmac::Key, upstream: &str, address: &str) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(upstream.as_bytes());
    ctx.update(b"\0");
    ctx.update(address.as_bytes());
    let tag = ctx.sign();
    tag.as_ref()[..VALUE_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use super::*;

    fn cfg(secret: &str) -> config::Sticky {
        config::Sticky {
            cookie: "sid".into(),
            max_age: Some(Duration::from_secs(3600)),
            path: "/".into(),
            http_only: true,
            secure: false,
            same_site: SameSite::Lax,
            secret: secret.into(),
        }
    }

    fn servers(addresses: &[&str]) -> Vec<config::Server> {
        addresses
            .iter()
            .enumerate()
            .map(|(i, a)| config::Server {
                address: (*a).into(),
                host_len: a.rfind(':').unwrap_or_default(),
                addr: ([127, 0, 0, 1], 9000 + i as u16).into(),
                weight: NonZeroU32::MIN,
                max_conns: None,
                backup: false,
                down: false,
                drain: false,
                slow_start: Duration::ZERO,
            })
            .collect()
    }

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn value_hides_the_address_and_depends_on_the_secret() {
        let list = servers(&["127.0.0.1:9001", "127.0.0.1:9002"]);
        let a = Sticky::build("web", &cfg("s3cret"), &list);
        let b = Sticky::build("web", &cfg("s3cret"), &list);
        let other = Sticky::build("web", &cfg("another"), &list);
        let default = Sticky::build("web", &cfg(""), &list);
        assert_eq!(a.values, b.values);
        assert_ne!(a.values, other.values);
        assert_ne!(a.values, default.values);
        assert_ne!(a.values[0], a.values[1]);
        for v in &a.values {
            assert_eq!(v.len(), 2 * VALUE_BYTES);
            assert!(!v.contains("9001") && !v.contains("127"), "{v}");
        }
    }

    #[test]
    fn value_follows_the_server_not_its_position() {
        let forward = Sticky::build("web", &cfg("k"), &servers(&["a:1", "b:2"]));
        let reversed = Sticky::build("web", &cfg("k"), &servers(&["b:2", "a:1"]));
        assert_eq!(forward.values[0], reversed.values[1]);
        let elsewhere = Sticky::build("api", &cfg("k"), &servers(&["a:1"]));
        assert_ne!(forward.values[0], elsewhere.values[0]);
    }

    #[test]
    fn binding_reads_every_cookie_field() {
        let s = Sticky::build("web", &cfg("k"), &servers(&["a:1", "b:2"]));
        let b = s.values[1].clone();
        assert_eq!(s.binding(&HeaderMap::new()), Binding::Missing);
        assert_eq!(s.binding(&cookies(&["other=1; sidx=2"])), Binding::Missing);
        assert_eq!(s.binding(&cookies(&["sid=garbage"])), Binding::Invalid);
        assert_eq!(s.binding(&cookies(&["sid=a:1"])), Binding::Invalid);
        assert_eq!(
            s.binding(&cookies(&[&format!("x=1; sid={b}; y=2")])),
            Binding::Server(1)
        );
        assert_eq!(
            s.binding(&cookies(&["x=1", &format!("sid={b}")])),
            Binding::Server(1)
        );
        assert_eq!(
            s.binding(&cookies(&["sid=junk", &format!("sid=\"{b}\"")])),
            Binding::Server(1)
        );
    }

    #[test]
    fn set_cookie_carries_the_attributes() {
        let s = Sticky::build("web", &cfg("k"), &servers(&["a:1"]));
        let v = s.values[0].clone();
        let plain = s.set_cookie(0, false).unwrap();
        assert_eq!(
            plain,
            format!("sid={v}; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax").as_str()
        );
        // `secure = false`: over TLS too, unless `SameSite=None`.
        assert_eq!(s.set_cookie(0, true).unwrap(), plain);

        let mut session = cfg("k");
        session.max_age = None;
        session.http_only = false;
        session.same_site = SameSite::None;
        let s = Sticky::build("web", &session, &servers(&["a:1"]));
        assert_eq!(
            s.set_cookie(0, true).unwrap(),
            format!("sid={v}; Path=/; Secure; SameSite=None").as_str()
        );
        assert_eq!(
            s.set_cookie(0, false).unwrap(),
            format!("sid={v}; Path=/; SameSite=None").as_str()
        );
        assert!(s.set_cookie(1, false).is_none());
    }
}
