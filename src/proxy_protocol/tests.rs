use super::*;

fn proxied(source: &str, destination: &str) -> Header {
    Header::Proxied {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
    }
}

// The v1 examples of proxy-protocol.txt, section 2.1.
#[test]
fn v1_spec_examples() {
    assert_eq!(
        parse_v1(b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n").unwrap(),
        proxied("255.255.255.255:65535", "255.255.255.255:65535")
    );
    let tcp6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(tcp6.len(), 104);
    assert_eq!(
        parse_v1(tcp6).unwrap(),
        proxied(
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
        )
    );
    assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), Header::Local);
    // The worst case: 107 bytes.
    let unknown = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(unknown.len(), V1_MAX_LEN);
    assert_eq!(parse_v1(unknown).unwrap(), Header::Local);
}

#[test]
fn v1_typical_headers() {
    assert_eq!(
        parse_v1(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n").unwrap(),
        proxied("192.168.0.1:56324", "192.168.0.11:443")
    );
    assert_eq!(
        parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 5678\r\n").unwrap(),
        proxied("[2001:db8::1]:1234", "[2001:db8::2]:5678")
    );
}

#[test]
fn v1_malformed_headers_are_refused() {
    use ProxyHeaderError as E;
    fn refused(bytes: &[u8]) -> ProxyHeaderError {
        parse_v1(bytes).expect_err(&String::from_utf8_lossy(bytes))
    }
    assert!(matches!(
        refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
        E::V1NoCrlf
    ));
    assert!(matches!(
        refused(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"),
        E::V1Protocol(_)
    ));
    assert!(matches!(
        refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
        E::V1Fields(3)
    ));
    assert!(matches!(
        refused(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"),
        E::V1Fields(5)
    ));
    assert!(matches!(
        refused(b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"),
        E::V1Address { .. }
    ));
    assert!(matches!(
        refused(b"PROXY TCP4 ::1 ::1 1 2\r\n"),
        E::V1Family(_)
    ));
    assert!(matches!(
        refused(b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"),
        E::V1Family(_)
    ));
    assert!(matches!(
        refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
        E::V1Port(_)
    ));
    assert!(matches!(
        refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"),
        E::V1Port(_)
    ));
    assert!(matches!(
        refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\r\n"),
        E::V1NotText
    ));
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX_LEN - 1, b'x');
    long.extend_from_slice(b"\r\n");
    assert!(matches!(parse_v1(&long), Err(E::V1TooLong)));
}

/// A v2 header: signature, `ver_cmd`, `fam`, then `body` with its length.
fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[ver_cmd, fam]);
    h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    h.extend_from_slice(body);
    h
}

#[test]
fn v2_tcp4_as_haproxy_sends_it() {
    // PROXY, AF_INET/STREAM, 192.168.0.1:56324 -> 192.168.0.11:443.
    let bytes = b"\x0d\x0a\x0d\x0a\x00\x0d\x0aQUIT\x0a\x21\x11\x00\x0c\
\xc0\xa8\x00\x01\xc0\xa8\x00\x0b\xdc\x04\x01\xbb";
    assert_eq!(detect(bytes), Detected::V2);
    assert_eq!(
        parse_v2(bytes).unwrap(),
        proxied("192.168.0.1:56324", "192.168.0.11:443")
    );
    // The same with an ALPN TLV (type 0x01, "h2"), which is skipped.
    let with_tlv = b"\x0d\x0a\x0d\x0a\x00\x0d\x0aQUIT\x0a\x21\x11\x00\x11\
\xc0\xa8\x00\x01\xc0\xa8\x00\x0b\xdc\x04\x01\xbb\x01\x00\x02h2";
    assert_eq!(
        parse_v2(with_tlv).unwrap(),
        proxied("192.168.0.1:56324", "192.168.0.11:443")
    );
}

#[test]
fn v2_tcp6() {
    let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut body = src.octets().to_vec();
    body.extend_from_slice(&dst.octets());
    body.extend_from_slice(&[0x15, 0xb3, 0x00, 0x50]);
    assert_eq!(
        parse_v2(&v2(0x21, 0x21, &body)).unwrap(),
        proxied("[2001:db8::7]:5555", "[2001:db8::1]:80")
    );
}

#[test]
fn v2_local_unspec_and_unix_keep_the_peer() {
    // LOCAL with no address block, as HAProxy's health checks send it.
    assert_eq!(parse_v2(&v2(0x20, 0x00, &[])).unwrap(), Header::Local);
    // LOCAL ignores whatever family and block follow.
    assert_eq!(
        parse_v2(&v2(0x20, 0x11, &[1, 2, 3])).unwrap(),
        Header::Local
    );
    assert_eq!(parse_v2(&v2(0x21, 0x00, &[])).unwrap(), Header::Local);
    assert_eq!(parse_v2(&v2(0x21, 0x31, &[0; 216])).unwrap(), Header::Local);
    let peer: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    assert_eq!(Header::Local.client(peer), peer);
}

#[test]
fn v2_malformed_headers_are_refused() {
    use ProxyHeaderError as E;
    let inet = [127, 0, 0, 1, 127, 0, 0, 1, 0, 1, 0, 2];
    assert!(matches!(
        parse_v2(&v2(0x11, 0x11, &inet)),
        Err(E::V2Version(1))
    ));
    assert!(matches!(
        parse_v2(&v2(0x22, 0x11, &inet)),
        Err(E::V2Command(2))
    ));
    assert!(matches!(
        parse_v2(&v2(0x21, 0x41, &inet)),
        Err(E::V2Family(0x41))
    ));
    assert!(matches!(
        parse_v2(&v2(0x21, 0x13, &inet)),
        Err(E::V2Family(0x13))
    ));
    assert!(matches!(
        parse_v2(&v2(0x21, 0x21, &inet)),
        Err(E::V2Short {
            len: 12,
            needed: 36
        })
    ));
    let mut short = v2(0x21, 0x11, &inet);
    short.pop();
    assert!(matches!(
        parse_v2(&short),
        Err(E::V2Length {
            expected: 12,
            got: 11
        })
    ));
}

#[test]
fn detection_leaves_other_protocols_alone() {
    assert_eq!(detect(b"PROXY TCP4 "), Detected::V1);
    assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detected::NotProxy);
    assert_eq!(
        detect(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Detected::NotProxy
    );
    assert_eq!(detect(b"PROPFIND / HTTP/1.1\r\n"), Detected::NotProxy);
    assert_eq!(
        detect(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        Detected::NotProxy
    );
    // A leading empty line is allowed before an HTTP/1.1 request.
    assert_eq!(detect(b"\r\nGET / HTTP/1.1\r\n"), Detected::NotProxy);
    assert_eq!(detect(b"PRO"), Detected::NeedMore);
    assert_eq!(detect(b"\r\n\r\n\0"), Detected::NeedMore);
    assert_eq!(detect(b""), Detected::NeedMore);
}
