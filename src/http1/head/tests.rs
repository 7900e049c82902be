use super::*;

const LIMITS: Limits = Limits {
    max_head: 1024,
    max_fields: 8,
};

fn parse(bytes: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    RequestHead::parse(&mut BytesMut::from(bytes), LIMITS)
}

#[test]
fn keeps_name_case_and_order_and_leaves_the_body() {
    let mut buf = BytesMut::from(
        &b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nX-MiXed-Case: One\r\nx-mixed-case: two\r\n\r\nbody"[..],
    );
    let head = RequestHead::parse(&mut buf, LIMITS).unwrap().unwrap();
    assert_eq!(head.method, Method::POST);
    assert_eq!(head.version, Version::Http11);
    assert_eq!(head.target(), "/a?b=1");
    let fields: Vec<_> = head.fields.iter().collect();
    assert_eq!(
        fields,
        [
            (&b"Host"[..], &b"x"[..]),
            (b"X-MiXed-Case", b"One"),
            (b"x-mixed-case", b"two")
        ]
    );
    assert_eq!(
        head.fields.get_all("X-MIXED-CASE").collect::<Vec<_>>(),
        [&b"One"[..], b"two"]
    );
    assert_eq!(&buf[..], b"body");
    let map = head.fields.to_header_map(0).unwrap();
    assert_eq!(map.get_all("x-mixed-case").iter().count(), 2);
}

#[test]
fn raw_values_keep_the_whitespace_around_them() {
    let head = parse(b"GET / HTTP/1.1\r\nConnection:\t x \t\r\nDate:y\r\nConnection: \r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(
        head.fields.get_all("connection").collect::<Vec<_>>(),
        [&b"x"[..], b""]
    );
    assert_eq!(
        head.fields.named_raw(Known::Connection).collect::<Vec<_>>(),
        [&b"\t x \t"[..], b" "]
    );
    assert_eq!(
        head.fields.named_raw(Known::Date).collect::<Vec<_>>(),
        [&b"y"[..]]
    );
}

#[test]
fn the_names_framing_reads_are_known_in_any_case() {
    let head = parse(
        concat!(
            "POST / HTTP/1.1\r\nCONTENT-length: 1\r\nx-content-length: 2\r\n",
            "Transfer-Encoding: \tchunked\r\nconnection: close\r\nDATE: d\r\n",
            "Connections: no\r\nData: no\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap()
    .unwrap();
    let f = &head.fields;
    assert_eq!(f.named(Known::ContentLength).collect::<Vec<_>>(), [b"1"]);
    assert_eq!(
        f.named(Known::TransferEncoding).collect::<Vec<_>>(),
        [b"chunked"]
    );
    assert_eq!(
        f.named_raw(Known::TransferEncoding).collect::<Vec<_>>(),
        [b" \tchunked"]
    );
    assert_eq!(f.named(Known::Connection).collect::<Vec<_>>(), [b"close"]);
    assert_eq!(f.named(Known::Date).collect::<Vec<_>>(), [b"d"]);
    let others: Vec<&[u8]> = f
        .iter_known()
        .filter(|(known, _, _)| *known == Known::Other)
        .map(|(_, name, _)| name)
        .collect();
    assert_eq!(others, [&b"x-content-length"[..], b"Connections", b"Data"]);
}

#[test]
fn partial_heads_ask_for_more_at_every_cut() {
    let whole = b"GET / HTTP/1.0\r\nHost: x\r\nAccept: */*\r\n\r\n";
    for cut in 0..whole.len() {
        assert!(parse(&whole[..cut]).unwrap().is_none(), "cut at {cut}");
    }
    let head = parse(whole).unwrap().unwrap();
    assert_eq!(head.version, Version::Http10);
    assert_eq!(head.wire_len(), whole.len());
}

#[test]
fn leading_empty_lines_are_skipped() {
    let head = parse(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(head.target(), "/");
}

#[test]
fn limits_give_the_contract_statuses() {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2000));
    let err = parse(long_target.as_bytes()).unwrap_err();
    assert_eq!(err.status(), StatusCode::URI_TOO_LONG);
    // Incomplete, but already past the limit on the request line.
    let err = parse(&long_target.as_bytes()[..1500]).unwrap_err();
    assert_eq!(err, HeadError::TargetTooLong);

    let big_field = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
    let err = parse(big_field.as_bytes()).unwrap_err();
    assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let err = parse(&big_field.as_bytes()[..1500]).unwrap_err();
    assert_eq!(err, HeadError::TooLarge(1024));

    let many: String = (0..9).map(|i| format!("X-{i}: 1\r\n")).collect();
    let err = parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).unwrap_err();
    assert_eq!(err, HeadError::TooManyFields(8));
    assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[test]
fn more_fields_than_the_stack_holds_are_parsed_when_allowed() {
    let many: String = (0..200).map(|i| format!("X-{i}: {i}\r\n")).collect();
    let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
    let limits = Limits {
        max_head: 64 * 1024,
        max_fields: 300,
    };
    let head = RequestHead::parse(&mut BytesMut::from(text.as_bytes()), limits)
        .unwrap()
        .unwrap();
    assert_eq!(head.fields.len(), 200);
}

#[test]
fn malformed_heads_are_refused() {
    for bad in [
        &b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
    ] {
        let err = parse(bad).unwrap_err();
        assert_eq!(
            err.status(),
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        parse(b"GET / HTTP/2.0\r\n\r\n").unwrap_err(),
        HeadError::Version
    );
    assert_eq!(
        parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap_err(),
        HeadError::Version
    );
    assert_eq!(
        parse(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n\r\n")
            .unwrap_err()
            .status(),
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn target_forms() {
    assert_eq!(target_form("/x?y"), TargetForm::Origin("/x?y"));
    assert_eq!(target_form("*"), TargetForm::Asterisk);
    assert_eq!(
        target_form("http://a.test/x?y"),
        TargetForm::Absolute {
            authority: "a.test",
            path_and_query: "/x?y"
        }
    );
    assert_eq!(
        target_form("HTTP://a.test:8080"),
        TargetForm::Absolute {
            authority: "a.test:8080",
            path_and_query: ""
        }
    );
    assert_eq!(
        target_form("http://a.test?q"),
        TargetForm::Absolute {
            authority: "a.test",
            path_and_query: "?q"
        }
    );
    assert_eq!(
        target_form("example.com:443"),
        TargetForm::Authority("example.com:443")
    );
    assert_eq!(
        target_form("ftp://a.test/"),
        TargetForm::Authority("ftp://a.test/")
    );
}

#[test]
fn response_heads() {
    let limits = LIMITS;
    let mut buf = BytesMut::from(&b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\nrest"[..]);
    let head = ResponseHead::parse(&mut buf, limits).unwrap().unwrap();
    assert_eq!(head.status, StatusCode::NO_CONTENT);
    assert_eq!(head.fields.get_all("x-a").next(), Some(&b"1"[..]));
    assert_eq!(&buf[..], b"rest");

    let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A"[..]);
    assert!(ResponseHead::parse(&mut partial, limits).unwrap().is_none());
    for bad in [
        &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nX A: 1\r\n\r\n",
        b"garbage\r\n\r\n",
    ] {
        assert!(
            ResponseHead::parse(&mut BytesMut::from(bad), limits).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn keep_alive_follows_the_version_and_connection_tokens() {
    let keeps = |head: &str| {
        let mut buf = BytesMut::from(head.as_bytes());
        let head = ResponseHead::parse(&mut buf, LIMITS).unwrap().unwrap();
        head.keeps_alive()
    };
    assert!(keeps("HTTP/1.1 200 OK\r\n\r\n"));
    assert!(!keeps(
        "HTTP/1.1 200 OK\r\nConnection: upgrade, Close\r\n\r\n"
    ));
    assert!(!keeps("HTTP/1.0 200 OK\r\n\r\n"));
    assert!(keeps("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n"));
}

#[test]
fn a_later_minor_version_is_read_as_http11_and_a_later_major_is_refused() {
    for line in [
        &b"GET / HTTP/1.2\r\nHost: x\r\n\r\n"[..],
        b"GET / HTTP/1.9\r\n\r\n",
    ] {
        let head = parse(line).unwrap().unwrap();
        assert_eq!(head.version, Version::Http11);
    }
    // Incomplete: nothing to decide yet.
    assert!(parse(b"GET / HTTP/1.2").unwrap().is_none());
    for refused in [
        &b"GET / HTTP/2.2\r\n\r\n"[..],
        b"GET / HTTP/1.22\r\n\r\n",
        b"GET / HTTP/3.0\r\n\r\n",
    ] {
        assert!(
            parse(refused).is_err(),
            "{}",
            String::from_utf8_lossy(refused)
        );
    }
}
