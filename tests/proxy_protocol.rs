//! The PROXY protocol from `trusted_proxies`, end to end: a v1 or v2 header
//! in front of a connection from a trusted peer names the client, which then
//! stands for the connection in `X-Forwarded-For` and `X-Real-IP`; from an
//! untrusted peer the header is plain bad HTTP.

mod support;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::{client::*, config::*, proxy::*, upstream::*};

const GET: &[u8] = b"GET /pp HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 PROXY header (command PROXY, transport STREAM) from `source` to
/// `destination`.
fn v2_proxy(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x21
        }
        _ => panic!("mixed families"),
    };
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&destination.port().to_be_bytes());
    v2(0x21, family, &block)
}

fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[ver_cmd, family]);
    header.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    header.extend_from_slice(block);
    header
}

fn with_get(header: &[u8]) -> Vec<u8> {
    [header, GET].concat()
}

fn assert_client(upstream: &MockUpstream, client: &str) {
    assert_eq!(upstream.seen("x-forwarded-for").as_deref(), Some(client));
    assert_eq!(upstream.seen("x-real-ip").as_deref(), Some(client));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_header_from_trusted_peer_names_the_client() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).trusting_loopback().toml()).await;

    let response = raw_request(
        proxy.addr(),
        &with_get(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n"),
    )
    .await;
    assert_eq!(
        raw_status(&response),
        Some(200),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_client(&a, "203.0.113.7");

    // The relayed client is not trusted: a chain it sends is replaced.
    let spoofed = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n\
GET / HTTP/1.1\r\nhost: app.test\r\nx-forwarded-for: 6.6.6.6\r\nx-real-ip: 6.6.6.6\r\nconnection: close\r\n\r\n";
    assert_eq!(
        raw_status(&raw_request(proxy.addr(), spoofed).await),
        Some(200)
    );
    assert_client(&a, "203.0.113.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_header_split_across_writes_is_read_whole() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).trusting_loopback().toml()).await;

    // Cut inside the signature and inside the line: sluice must wait for the
    // rest without taking any byte of the request.
    let bytes = with_get(b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n");
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    for part in [&bytes[..3], &bytes[3..20], &bytes[20..]] {
        stream.write_all(part).await.expect("write");
        // Let each part go out as its own segment.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = read_to_end(stream).await;
    assert_eq!(
        raw_status(&response),
        Some(200),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_client(&a, "2001:db8::7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_header_from_trusted_peer_names_the_client() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).trusting_loopback().toml()).await;

    let v4 = v2_proxy(
        "203.0.113.7:5555".parse().unwrap(),
        "127.0.0.1:80".parse().unwrap(),
    );
    let response = raw_request(proxy.addr(), &with_get(&v4)).await;
    assert_eq!(raw_status(&response), Some(200));
    assert_client(&a, "203.0.113.7");

    let v6 = v2_proxy(
        SocketAddr::new("2001:db8::7".parse::<Ipv6Addr>().unwrap().into(), 5555),
        "[2001:db8::1]:443".parse().unwrap(),
    );
    // TLVs after the addresses (here an ALPN "h2" one) are skipped.
    let mut with_tlv = v6.clone();
    with_tlv.extend_from_slice(b"\x01\x00\x02h2");
    let len = u16::from_be_bytes([with_tlv[14], with_tlv[15]]) + 5;
    with_tlv[14..16].copy_from_slice(&len.to_be_bytes());
    for header in [v6, with_tlv] {
        a.clear();
        let response = raw_request(proxy.addr(), &with_get(&header)).await;
        assert_eq!(raw_status(&response), Some(200));
        assert_client(&a, "2001:db8::7");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_local_keeps_the_real_peer() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).trusting_loopback().toml()).await;

    let local = v2(0x20, 0x00, &[]);
    let response = raw_request(proxy.addr(), &with_get(&local)).await;
    assert_eq!(raw_status(&response), Some(200));
    assert_client(&a, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peer_header_is_bad_http() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).toml()).await;

    let v1 = with_get(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n");
    let v2 = with_get(&v2_proxy(
        "203.0.113.7:5555".parse().unwrap(),
        "127.0.0.1:80".parse().unwrap(),
    ));
    for bytes in [v1, v2] {
        let response = raw_request(proxy.addr(), &bytes).await;
        assert_eq!(
            raw_status(&response),
            Some(400),
            "{}",
            String::from_utf8_lossy(&response)
        );
    }
    assert_eq!(a.count(), 0, "the upstream saw {:?}", a.requests());
    // The listener still serves ordinary requests.
    assert_eq!(get(&proxy.url("/")).await.status, 200);
    assert_client(&a, "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_from_trusted_peer_closes_the_connection() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).trusting_loopback().toml()).await;

    let too_long = {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(120, b'x');
        line.extend_from_slice(b"\r\n");
        line
    };
    for header in [
        b"PROXY TCP4 203.0.113.7 127.0.0.1 5555\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.999 127.0.0.1 5555 80\r\n".to_vec(),
        too_long,
        v2(0x22, 0x11, &[0; 12]),
    ] {
        let response = raw_request(proxy.addr(), &with_get(&header)).await;
        assert!(
            response.is_empty(),
            "answered {:?}",
            String::from_utf8_lossy(&response)
        );
    }
    assert_eq!(a.count(), 0, "the upstream saw {:?}", a.requests());
    // Plain HTTP from the trusted peer is unaffected.
    assert_eq!(get(&proxy.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_comes_before_the_tls_handshake() {
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("app.pem"), dir.path().join("app.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let a = MockUpstream::named("a").start().await;
    let toml = Config::new()
        .global("trusted_proxies", ["127.0.0.1/32"])
        .listener_with(|l| {
            l.set("upstream", "web")
                .table("tls", "cert", cert_path.display().to_string())
                .table("tls", "key", key_path.display().to_string())
        })
        .upstream("web", |u| u.server(&a))
        .toml();
    let proxy = Proxy::start(&toml).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.der().to_vec()))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tcp = TcpStream::connect(proxy.addr()).await.expect("connect");
    tcp.write_all(&v2_proxy(
        "203.0.113.7:5555".parse().unwrap(),
        "127.0.0.1:443".parse().unwrap(),
    ))
    .await
    .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("app.test").unwrap(), tcp)
        .await
        .expect("TLS handshake after the PROXY header");
    tls.write_all(GET).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    assert_eq!(
        raw_status(&response),
        Some(200),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_client(&a, "203.0.113.7");
    assert_eq!(a.seen("x-forwarded-proto").as_deref(), Some("https"));
}

async fn read_to_end(mut stream: TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;
    received
}

/// HAProxy in TCP mode, killed on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn haproxy_in_front_of(sluice: SocketAddr, server_options: &str) -> Option<Haproxy> {
    let dir = tempfile::tempdir().expect("temp dir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
frontend f\n  bind {addr}\n  default_backend b\n\
backend b\n  server s {sluice} {server_options}\n"
        ),
    )
    .expect("write haproxy.cfg");
    let child = match Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipping: cannot run haproxy ({e}); install it to run this test");
            return None;
        }
    };
    let haproxy = Haproxy {
        child,
        addr,
        _dir: dir,
    };
    poll_until(Duration::from_secs(10), "haproxy listens", async || {
        TcpStream::connect(addr).await.is_ok()
    })
    .await;
    Some(haproxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_send_proxy_relays_the_real_client() {
    let a = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&Config::web(&[&a]).trusting_loopback().toml()).await;
    // The client connects from 127.0.0.2; HAProxy reaches sluice from
    // 127.0.0.1, the trusted peer.
    let client: IpAddr = "127.0.0.2".parse().unwrap();
    for options in ["send-proxy-v2", "send-proxy"] {
        let Some(haproxy) = haproxy_in_front_of(proxy.addr(), options).await else {
            return;
        };
        a.clear();
        let response = get_from(client, &format!("http://{}/hap", haproxy.addr)).await;
        assert_eq!(response.status, 200, "through haproxy {options}");
        assert_client(&a, "127.0.0.2");
    }
}
