use super::*;

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn connection_named_headers_are_removed() {
    let mut h = map(&[
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("proxy-authorization", "x"),
        ("upgrade", "websocket"),
        ("x-kept", "1"),
    ]);
    strip_hop_by_hop(&mut h, false);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("x-kept"));
}

#[test]
fn every_proxy_header_is_hop_by_hop_but_lookalikes_stay() {
    let mut h = map(&[
        ("proxy", "http://evil.example:3128"),
        ("proxy-foo", "1"),
        ("proxy-authorization", "x"),
        ("proxyish", "kept"),
        ("x-proxy", "kept"),
    ]);
    strip_hop_by_hop(&mut h, false);
    let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["proxyish", "x-proxy"]);
}

#[test]
fn connection_names_match_without_case_across_lines() {
    let mut h = map(&[
        ("connection", "X-Secret, Upgrade"),
        ("connection", "X-Other,,"),
        ("x-secret", "1"),
        ("x-other", "1"),
        ("upgrade", "websocket"),
        ("x-kept", "1"),
    ]);
    strip_hop_by_hop(&mut h, true);
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["upgrade", "x-kept"]);
}

#[test]
fn hop_by_hop_names_are_known_in_any_case() {
    for name in [
        "Connection",
        "TE",
        "Upgrade",
        "Proxy-Foo",
        "transfer-encoding",
    ] {
        assert!(is_hop_by_hop(name.as_bytes()), "{name}");
    }
    for name in ["Link", "X-Connection", "Proxyish", "Content-Type", "", "-"] {
        assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
    }
    // The first-letter-and-length shortcut lets every listed name through,
    // in either case.
    for name in HOP_BY_HOP
        .iter()
        .map(|n| n.as_str())
        .chain(["upgrade", "proxy"])
    {
        assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        let upper = name.to_ascii_uppercase();
        assert!(is_hop_by_hop(upper.as_bytes()), "{upper}");
    }
}

#[test]
fn hop_index_follows_the_hop_by_hop_list() {
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        assert_eq!(hop_index(name.as_str().as_bytes()), Some(i), "{name}");
    }
    assert_eq!(hop_index(b"upgrade"), None);
}

#[test]
fn a_lone_upgrade_or_te_is_removed_and_other_headers_kept() {
    let mut h = map(&[("upgrade", "websocket"), ("x-kept", "1")]);
    strip_hop_by_hop(&mut h, false);
    assert_eq!(h.len(), 1);
    let mut h = map(&[("te", "trailers"), ("host", "a")]);
    strip_hop_by_hop(&mut h, false);
    assert!(!h.contains_key("te"));
    let untouched = map(&[("host", "a"), ("accept", "*/*")]);
    let mut h = untouched.clone();
    strip_hop_by_hop(&mut h, false);
    assert_eq!(h, untouched);
}

#[test]
fn upgrade_h2c_is_not_a_tunnel() {
    assert!(wants_upgrade(&map(&[
        ("connection", "Upgrade"),
        ("upgrade", "websocket")
    ])));
    assert!(!wants_upgrade(&map(&[
        ("connection", "Upgrade"),
        ("upgrade", "h2c")
    ])));
    assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
}

/// The fields of a response head, as the engine reads them.
fn fields(head: &str) -> Fields {
    let limits = crate::http1::Limits {
        max_head: 4096,
        max_fields: 32,
    };
    let mut buf = bytes::BytesMut::from(head.as_bytes());
    crate::http1::ResponseHead::parse(&mut buf, limits)
        .unwrap()
        .unwrap()
        .fields
}

#[test]
fn raw_fields_pass_on_as_a_map_would_in_their_order_and_case() {
    let head = fields(concat!(
        "HTTP/1.1 200 OK\r\n",
        "Set-Cookie: a=1\r\n",
        "Connection: keep-alive, X-Secret\r\n",
        "CONNECTION: x-other,,\r\n",
        "X-Secret: 1\r\n",
        "x-other: 2\r\n",
        "X-Kept: 1\r\n",
        "Keep-Alive: timeout=5\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Proxy-Authenticate: x\r\n",
        "Upgrade: websocket\r\n",
        "HTTP2-Settings: x\r\n",
        "set-COOKIE: b=2\r\n",
        "\r\n"
    ));
    let passed: Vec<(&str, &str)> = end_to_end(&head)
        .map(|(n, v)| {
            (
                std::str::from_utf8(n).unwrap(),
                std::str::from_utf8(v).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        passed,
        [
            ("Set-Cookie", "a=1"),
            ("X-Kept", "1"),
            ("set-COOKIE", "b=2")
        ]
    );
}

#[test]
fn raw_fields_with_many_connection_tokens_drop_every_one_named() {
    let head =
        fields("HTTP/1.1 200 OK\r\nConnection: a, b, c, d, e, f\r\nA: 1\r\nF: 6\r\nG: 7\r\n\r\n");
    let names: Vec<&[u8]> = end_to_end(&head).map(|(n, _)| n).collect();
    assert_eq!(names, [b"G".as_slice()]);
}

#[test]
fn http2_cookie_fields_are_joined_in_order() {
    let mut h = map(&[
        ("cookie", "a=b"),
        ("x-other", "1"),
        ("cookie", "sid=7"),
        ("cookie", "c=d"),
    ]);
    join_cookies(&mut h);
    let cookies: Vec<_> = h.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=b; sid=7; c=d"]);
    assert_eq!(h.len(), 2);

    let mut one = map(&[("cookie", "a=b")]);
    join_cookies(&mut one);
    assert_eq!(one.get_all("cookie").iter().collect::<Vec<_>>(), ["a=b"]);
}
