//! What the contract refuses before a request is routed (framing hyper's
//! HTTP/2 server lets through, CONNECT, a missing or doubled Host, a target
//! in the wrong form), and the host a request is routed by.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Version};

use super::headers;
use crate::runtime::ListenerRt;

/// A request refused before it could reach a server.
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) reason: &'static str,
    /// The connection's framing can no longer be trusted.
    pub(super) close: bool,
}

/// Checks what hyper lets through but the contract refuses, and returns the
/// request's host (the `Host` header, or `:authority` over HTTP/2).
pub(super) fn validate<B>(req: &Request<B>, listener: &ListenerRt) -> Result<HeaderValue, Refusal> {
    let refuse = |status, reason| Refusal {
        status,
        reason,
        close: true,
    };
    let headers = req.headers();
    // One look at the few fields a request has finds the ones checked
    // here, where a hashed lookup of each name would cost more.
    let (mut host_header, mut hosts) = (None, 0);
    let (mut content_length, mut te) = (None, false);
    for (name, value) in headers {
        if name == header::HOST {
            host_header = host_header.or(Some(value));
            hosts += 1;
        } else if name == header::CONTENT_LENGTH {
            content_length = content_length.or(Some(value));
        } else if name == header::TRANSFER_ENCODING {
            te = true;
        }
    }
    // The HTTP/1.1 reader counts fields as it parses; an HTTP/2 head
    // arrives whole. Its cookie fields (one per cookie, as clients split
    // them for compression) count as the one line they are joined into:
    // counted only past the limit, so no request under it pays for that.
    let max = listener.cfg.max_headers;
    if req.version() == Version::HTTP_2
        && headers.len() > max
        && headers.len()
            - headers
                .get_all(header::COOKIE)
                .iter()
                .count()
                .saturating_sub(1)
            > max
    {
        return Err(Refusal {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            reason: "more than max_headers fields",
            close: false,
        });
    }
    if te {
        if content_length.is_some() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "both Content-Length and Transfer-Encoding",
            ));
        }
        let mut codings = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(str::trim);
        let single_chunked = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case("chunked"))
            && codings.next().is_none();
        if !single_chunked {
            return Err(refuse(
                StatusCode::NOT_IMPLEMENTED,
                "transfer coding other than a single chunked",
            ));
        }
    }
    if let (Some(max), Some(len)) = (
        listener.cfg.max_body_size,
        content_length.and_then(headers::parse_content_length),
    ) && len > max
    {
        // Refused before the body is read; hyper sends no 100 Continue for
        // a body nobody polls.
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Content-Length over max_body_size",
        ));
    }

    if req.method() == Method::CONNECT {
        // sluice is a reverse proxy: it opens no tunnels to where clients say.
        return Err(refuse(StatusCode::NOT_IMPLEMENTED, "CONNECT"));
    }
    if hosts > 1 {
        return Err(refuse(StatusCode::BAD_REQUEST, "several Host headers"));
    }
    if req.version() != Version::HTTP_2 {
        let uri = req.uri();
        match (uri.scheme_str(), uri.authority()) {
            // Authority form (`host:port`) is for CONNECT only (RFC 9112 §3.2.3).
            (None, Some(_)) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "authority-form target without CONNECT",
                ));
            }
            // Absolute form: the target's authority wins over Host and
            // replaces it (RFC 9112 §3.2.2).
            (Some(scheme), Some(authority)) => {
                let host = HeaderValue::from_str(authority.as_str())
                    .ok()
                    .filter(|h| valid_host(h) && matches!(scheme, "http" | "https"));
                return host.ok_or_else(|| {
                    refuse(StatusCode::BAD_REQUEST, "invalid absolute-form target")
                });
            }
            _ => {}
        }
    }
    if req.version() == Version::HTTP_2 {
        // `:authority` is the host; a differing `host` field is not trusted.
        if let Some(authority) = req.uri().authority() {
            return HeaderValue::from_str(authority.as_str())
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, "invalid :authority"));
        }
    }
    match host_header {
        Some(host) if !host.is_empty() && valid_host(host) => Ok(host.clone()),
        Some(_) => Err(refuse(StatusCode::BAD_REQUEST, "invalid Host")),
        None if req.version() == Version::HTTP_10 => {
            HeaderValue::from_str(&listener.cfg.listen.to_string())
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, "no Host"))
        }
        None => Err(refuse(StatusCode::BAD_REQUEST, "no Host header")),
    }
}

/// A host is `name[:port]` with no spaces, slashes or userinfo. One
/// `match` a byte, which compiles to a few range checks: every request's
/// host goes through it.
fn valid_host(host: &HeaderValue) -> bool {
    host.as_bytes().iter().all(|&b| {
        matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b':' | b'[' | b']' | b'_')
    })
}

/// The lower-case host name without its port, for routing. Borrowed when
/// the client already sent it in lower case, as clients almost always do.
pub(super) fn host_name(host: &HeaderValue) -> Cow<'_, str> {
    let host = host.to_str().unwrap_or_default();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        // Found as a byte: a `str` pattern search costs more than the
        // short host it looks through.
        match host.bytes().rposition(|b| b == b':') {
            Some(colon) if host.as_bytes()[colon + 1..].iter().all(u8::is_ascii_digit) => {
                &host[..colon]
            }
            _ => host,
        }
    };
    // `example.com.` is `example.com` (as nginx reads it): for routes and
    // for the SNI name alike.
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_drops_port_case_and_a_trailing_dot() {
        assert_eq!(
            host_name(&HeaderValue::from_static("API.Example.com:8080")),
            "api.example.com"
        );
        assert_eq!(host_name(&HeaderValue::from_static("[::1]:80")), "::1");
        assert_eq!(
            host_name(&HeaderValue::from_static("example.com")),
            "example.com"
        );
        assert_eq!(
            host_name(&HeaderValue::from_static("a.test:x")),
            "a.test:x",
            "what follows the colon is no port"
        );
        assert_eq!(host_name(&HeaderValue::from_static("a.test:")), "a.test");
        assert_eq!(
            host_name(&HeaderValue::from_static("API.example.com.:443")),
            "api.example.com"
        );
    }
}
