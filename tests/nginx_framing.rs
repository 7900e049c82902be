//! A differential test of request framing against nginx: the same raw bytes
//! (smuggling attempts, obfuscated and conflicting framing headers, bad
//! chunk sizes, bare LFs, oversized heads) through nginx and through sluice,
//! each in front of its own recording server. sluice may refuse more than
//! nginx, never less: a request nginx does not forward, sluice must not
//! forward either, and one both forward reaches the server with the same
//! body. Skipped (and passing, with a printed note) without nginx on PATH.

mod support;

use std::net::SocketAddr;

use support::{client::*, config::*, nginx::*, proxy::*, upstream::*};

/// The head limit both proxies are given: nginx's is per header line, so a
/// head nginx takes may be too large for sluice, never the other way round.
const HEAD_LIMIT_KIB: usize = 16;

/// One raw case: `{p}` in it is replaced by the case's own path prefix, so
/// every case's requests are told apart at the servers.
struct Case {
    name: &'static str,
    bytes: String,
}

fn case(name: &'static str, bytes: &str) -> Case {
    Case {
        name,
        bytes: bytes.to_owned(),
    }
}

/// A request pipelined behind the case: if a proxy reads the case the way
/// its sender meant, it forwards this one too, and closes after it.
const CLOSE: &str = "GET {p}/end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn cases() -> Vec<Case> {
    let smuggled = "GET {p}/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let chunked_post = |te: &str| {
        format!(
            "POST {{p}}/a HTTP/1.1\r\nHost: x\r\n{te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}{CLOSE}"
        )
    };
    let big = "a".repeat(HEAD_LIMIT_KIB * 1024 + 100);
    vec![
        case(
            "plain pipelined requests",
            &format!("GET {{p}}/a HTTP/1.1\r\nHost: x\r\n\r\n{CLOSE}"),
        ),
        case(
            "content-length body",
            &format!("POST {{p}}/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello{CLOSE}"),
        ),
        case("chunked body", &chunked_post("Transfer-Encoding: chunked")),
        case(
            "chunked body with extensions and trailers",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=\"v\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n{CLOSE}"
            ),
        ),
        case(
            "content-length and transfer-encoding",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}{CLOSE}"
            ),
        ),
        case(
            "transfer-encoding and content-length",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggled}{CLOSE}"
            ),
        ),
        case(
            "transfer-encoding xchunked",
            &chunked_post("Transfer-Encoding: xchunked"),
        ),
        case(
            "transfer-encoding chunked, identity",
            &chunked_post("Transfer-Encoding: chunked, identity"),
        ),
        case(
            "transfer-encoding identity, chunked",
            &chunked_post("Transfer-Encoding: identity, chunked"),
        ),
        case(
            "transfer-encoding twice",
            &chunked_post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"),
        ),
        case(
            "transfer-encoding space before colon",
            &chunked_post("Transfer-Encoding : chunked"),
        ),
        case(
            "transfer-encoding tab value",
            &chunked_post("Transfer-Encoding:\tchunked"),
        ),
        case(
            "transfer-encoding upper case",
            &chunked_post("Transfer-Encoding: CHUNKED"),
        ),
        case(
            "transfer-encoding folded",
            &chunked_post("Transfer-Encoding:\r\n chunked"),
        ),
        case(
            "transfer_encoding underscore",
            &chunked_post("Transfer_Encoding: chunked"),
        ),
        case(
            "transfer-encoding with vertical tab",
            &chunked_post("Transfer-Encoding: \x0bchunked"),
        ),
        case(
            "transfer-encoding on HTTP/1.0",
            &format!(
                "POST {{p}}/a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}{CLOSE}"
            ),
        ),
        case(
            "duplicate content-length",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!{CLOSE}"
            ),
        ),
        case(
            "content-length list",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello{CLOSE}"
            ),
        ),
        case(
            "content-length with a sign",
            &format!("POST {{p}}/a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello{CLOSE}"),
        ),
        case(
            "content-length space before colon",
            &format!("POST {{p}}/a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello{CLOSE}"),
        ),
        case(
            "negative chunk size",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n{smuggled}{CLOSE}"
            ),
        ),
        case(
            "hex-prefixed chunk size",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n{smuggled}{CLOSE}"
            ),
        ),
        case(
            "overflowing chunk size",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n{smuggled}{CLOSE}"
            ),
        ),
        case(
            "chunk size with a space inside",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0 5\r\nhello\r\n0\r\n\r\n{smuggled}{CLOSE}"
            ),
        ),
        case(
            "chunk data longer than its size",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n{smuggled}{CLOSE}"
            ),
        ),
        case(
            "bare LF after a chunk size",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n{smuggled}{CLOSE}"
            ),
        ),
        case(
            "bare LF after the last chunk",
            &format!(
                "POST {{p}}/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n{smuggled}{CLOSE}"
            ),
        ),
        case(
            "bare CR in a field value",
            &format!("GET {{p}}/a HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n{CLOSE}"),
        ),
        case(
            "NUL in a field value",
            &format!("GET {{p}}/a HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n{CLOSE}"),
        ),
        case(
            "two Host fields",
            &format!("GET {{p}}/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n{CLOSE}"),
        ),
        case(
            "oversized header field",
            &format!("GET {{p}}/a HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n{CLOSE}"),
        ),
        case(
            "oversized request target",
            &format!("GET {{p}}/a?{big} HTTP/1.1\r\nHost: x\r\n\r\n{CLOSE}"),
        ),
    ]
}

/// A request as a server received it: method, path and body.
type Seen = (String, String, Vec<u8>);

fn seen_under(mock: &MockUpstream, prefix: &str) -> Vec<Seen> {
    mock.requests()
        .into_iter()
        .filter(|r| r.uri.path().starts_with(prefix))
        .map(|r| {
            (
                r.method.to_string(),
                r.uri.path().to_owned(),
                r.body.to_vec(),
            )
        })
        .collect()
}

async fn send(addr: SocketAddr, bytes: String) -> Option<u16> {
    raw_status(&raw_request(addr, bytes.as_bytes()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_never_forwards_what_nginx_refuses() {
    let Some(binary) = nginx_binary() else {
        println!(
            "SKIPPED: no nginx on PATH (apt-get install nginx-light to run this differential test)"
        );
        return;
    };
    let behind_nginx = MockUpstream::named("behind-nginx").start().await;
    let behind_sluice = MockUpstream::named("behind-sluice").start().await;
    let nginx_port = free_port();
    let http = format!(
        "large_client_header_buffers 4 {HEAD_LIMIT_KIB}k;\n\
         server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://{}; }} }}\n",
        behind_nginx.address()
    );
    let _nginx = start_nginx(&binary, &http, &[nginx_port]).await;
    let toml = Config::new()
        .listener_with(|l| {
            l.set("upstream", "u")
                .set("max_header_size", format!("{HEAD_LIMIT_KIB}KiB"))
        })
        .upstream("u", |u| u.server(&behind_sluice))
        .toml();
    let sluice = Proxy::start(&toml).await;
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], nginx_port));
    let sluice_addr = sluice.addr();

    let cases = cases();
    // All at once: a case a proxy reads as an unfinished body waits out the
    // raw client's read timeout, and they wait together.
    let runs = cases.iter().enumerate().map(|(n, case)| {
        let bytes = case.bytes.replace("{p}", &format!("/c{n}"));
        let (nginx_bytes, sluice_bytes) = (bytes.clone(), bytes);
        async move {
            tokio::join!(
                send(nginx_addr, nginx_bytes),
                send(sluice_addr, sluice_bytes)
            )
        }
    });
    let statuses = futures_util::future::join_all(runs).await;

    let mut refused_by_both = 0;
    let mut forwarded_beyond_nginx = Vec::new();
    for (n, (case, (nginx_status, sluice_status))) in cases.iter().zip(statuses).enumerate() {
        let prefix = format!("/c{n}/");
        let by_nginx = seen_under(&behind_nginx, &prefix);
        let by_sluice = seen_under(&behind_sluice, &prefix);
        for request in by_sluice.iter().filter(|r| !by_nginx.contains(r)) {
            forwarded_beyond_nginx.push(format!(
                "{}: sluice forwarded {} {} with body {:?}, which nginx did not \
                 (nginx answered {nginx_status:?} and forwarded {by_nginx:?}; sluice answered {sluice_status:?})",
                case.name,
                request.0,
                request.1,
                String::from_utf8_lossy(&request.2),
            ));
        }
        if by_nginx.is_empty() && by_sluice.is_empty() {
            refused_by_both += 1;
        }
    }
    assert!(
        forwarded_beyond_nginx.is_empty(),
        "{}",
        forwarded_beyond_nginx.join("\n")
    );
    // The corner cases are corner cases for both: a test whose cases nginx
    // all forwarded would prove nothing.
    assert!(
        refused_by_both >= 5,
        "only {refused_by_both} cases were refused by both proxies"
    );
    // And the plain cases went through both, so the harness itself works.
    for (n, case) in cases.iter().enumerate().take(3) {
        let prefix = format!("/c{n}/");
        assert!(
            !seen_under(&behind_sluice, &prefix).is_empty(),
            "{}: sluice forwarded nothing",
            case.name
        );
    }
}
