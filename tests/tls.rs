//! TLS termination, SNI, ALPN/HTTP/2, the Host/SNI check, certificate
//! errors and swaps, h2load through the proxy, and TLS to upstreams.

mod support;
use support::{client::*, config::*, proxy::*, upstream::*};

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const WAIT: Duration = Duration::from_secs(10);

/// A test certificate authority writing certificates and keys to a
/// temporary directory (the proxy reads them before it listens, so they
/// cannot go into the proxy's own directory).
struct Pki {
    dir: TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and key written to disk.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            ca_key,
        };
        std::fs::write(pki.ca_path(), pki.ca.pem()).unwrap();
        pki
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `FILE.pem` (leaf then CA) and `FILE.key` for `names` (DNS names or IPs).
    fn issue(&self, file: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let issued = Issued {
            cert: self.path(&format!("{file}.pem")),
            key: self.path(&format!("{file}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&issued.cert, format!("{}{}", cert.pem(), self.ca.pem())).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }

    fn client(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        self.client_with(alpn, rustls::ALL_VERSIONS)
    }

    fn client_with(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(self.roots())
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

async fn handshake(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
}

fn served_cert(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server sent certificates")[0]
        .clone()
}

/// An HTTP/1.1 connection over an established stream.
async fn h1(stream: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn h1_get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> (StatusCode, String) {
    sender.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A listener in front of upstream `web`, which holds `upstream`, with the
/// keys `listener` sets.
fn proxy_config(upstream: &MockUpstream, listener: impl FnOnce(Listener) -> Listener) -> Config {
    Config::new()
        .listener_with(|l| listener(l.set("upstream", "web")))
        .upstream("web", |u| u.server(upstream))
}

/// `[listener.tls]` serving `default` to every name no `sni` entry lists.
fn tls(listener: Listener, default: &Issued) -> Listener {
    listener
        .table("tls", "cert", &default.cert)
        .table("tls", "key", &default.key)
}

/// A `[[listener.tls.sni]]` entry serving `issued` for `names`.
fn sni<const N: usize>(listener: Listener, names: [&str; N], issued: &Issued) -> Listener {
    listener.entry("tls.sni", |e| {
        e.set("names", names)
            .set("cert", &issued.cert)
            .set("key", &issued.key)
    })
}

#[tokio::test]
async fn default_certificate_and_sni_entries_are_served_by_name() {
    let pki = Pki::new("sluice test CA");
    // The client verifies names, so the default certificate also carries
    // the name no `sni` entry lists.
    let default = pki.issue("default", &["default.test", "other.test"]);
    let api = pki.issue("api", &["api.test", "*.wild.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let config = proxy_config(&upstream, |l| {
        sni(tls(l, &default), ["api.test", "*.wild.test"], &api)
    });
    let proxy = Proxy::start(&config.toml()).await;
    let client = pki.client(&[b"http/1.1"]);

    for (sni, expected) in [
        ("default.test", &default),
        ("api.test", &api),
        ("x.wild.test", &api),
        // Not listed: the default certificate (unknown_sni = "default").
        ("other.test", &default),
    ] {
        let stream = handshake(proxy.addr(), sni, client.clone())
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert!(
            served_cert(&stream) == expected.der,
            "{sni} got the wrong certificate"
        );
    }

    let stream = handshake(proxy.addr(), "api.test", client).await.unwrap();
    let mut sender = h1(stream).await;
    let (status, _) = h1_get(&mut sender, "api.test", "/hello").await;
    assert_eq!(status, StatusCode::OK);
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("host"), Some("api.test"));
}

#[tokio::test]
async fn h2_by_alpn_reaches_an_http1_upstream_with_authority_as_host() {
    let pki = Pki::new("sluice test CA");
    let default = pki.issue("default", &["site.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&proxy_config(&upstream, |l| tls(l, &default)).toml()).await;

    let stream = handshake(proxy.addr(), "site.test", pki.client(&[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // A `host` field that differs from :authority is not trusted.
    let req = Request::get("https://site.test/over/h2")
        .header("host", "evil.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers().get("x-upstream").unwrap(), "a");

    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.uri.path(), "/over/h2");
    assert_eq!(seen.header("host"), Some("site.test"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("site.test"));
}

/// The sticky cookie is `Secure` over TLS when `same_site = "None"` (and
/// `secure = false`), never forced over plain HTTP, where browsers would
/// drop it, and not forced over TLS for the other `SameSite` values.
#[tokio::test]
async fn sticky_cookies_are_forced_secure_over_tls_with_same_site_none_only() {
    let pki = Pki::new("sluice test CA");
    let site = pki.issue("site", &["site.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let client = pki.client(&[b"http/1.1"]);
    for (same_site, secure_over_tls) in [("None", true), ("Lax", false), ("Strict", false)] {
        let config = Config::new()
            .listener_with(|l| tls(l.set("upstream", "web"), &site))
            .listener_with(|l| l.set("upstream", "web"))
            .upstream("web", |u| {
                u.server(&upstream).table("sticky", "same_site", same_site)
            });
        let proxy = Proxy::start(&config.toml()).await;

        let stream = handshake(proxy.addr(), "site.test", client.clone())
            .await
            .unwrap();
        let mut sender = h1(stream).await;
        sender.ready().await.unwrap();
        let request = Request::get("/")
            .header("host", "site.test")
            .body(Empty::new())
            .unwrap();
        let response = tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        let over_tls = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(over_tls.contains("; Secure"), secure_over_tls, "{over_tls}");
        assert!(
            over_tls.contains(&format!("SameSite={same_site}")),
            "{over_tls}"
        );

        let plain = get(&format!("http://{}/", proxy.listeners()[1])).await;
        let over_http = plain.header("set-cookie").expect("a Set-Cookie").to_owned();
        assert!(!over_http.contains("Secure"), "{over_http}");
        assert!(
            over_http.contains(&format!("SameSite={same_site}")),
            "{over_http}"
        );
    }
}

#[tokio::test]
async fn only_tls_12_and_13_are_spoken() {
    let pki = Pki::new("sluice test CA");
    let default = pki.issue("default", &["site.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&proxy_config(&upstream, |l| tls(l, &default)).toml()).await;

    let tls12 = pki.client_with(&[b"http/1.1"], &[&rustls::version::TLS12]);
    let stream = handshake(proxy.addr(), "site.test", tls12).await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut sender = h1(stream).await;
    assert_eq!(
        h1_get(&mut sender, "site.test", "/").await.0,
        StatusCode::OK
    );

    let tls13 = pki.client_with(&[b"http/1.1"], &[&rustls::version::TLS13]);
    let stream = handshake(proxy.addr(), "site.test", tls13).await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // rustls cannot speak TLS 1.1; openssl can, when allowed to.
    let Some(output) = openssl_tls11(proxy.addr()) else {
        eprintln!("openssl not on PATH: skipping the TLS 1.1 refusal check");
        return;
    };
    assert!(
        !output.status.success(),
        "a TLS 1.1 handshake succeeded:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SSL alert number"),
        "not refused by the server:\n{stderr}"
    );
}

fn openssl_tls11(addr: SocketAddr) -> Option<std::process::Output> {
    std::process::Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-servername",
            "site.test",
            "-connect",
        ])
        .arg(addr.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .ok()
}

#[tokio::test]
async fn host_not_matching_sni_is_misdirected() {
    let pki = Pki::new("sluice test CA");
    let default = pki.issue("default", &["site.test", "other.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let proxy = Proxy::start(&proxy_config(&upstream, |l| tls(l, &default)).toml()).await;

    let stream = handshake(proxy.addr(), "site.test", pki.client(&[b"http/1.1"]))
        .await
        .unwrap();
    let mut sender = h1(stream).await;
    assert_eq!(
        h1_get(&mut sender, "other.test", "/").await.0,
        StatusCode::MISDIRECTED_REQUEST
    );
    // Same name, other case and a port: the same host.
    assert_eq!(
        h1_get(&mut sender, "SITE.test:443", "/").await.0,
        StatusCode::OK
    );
    assert_eq!(upstream.count(), 1);

    // Over HTTP/2 the :authority is what must match.
    let stream = handshake(proxy.addr(), "site.test", pki.client(&[b"h2"]))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://other.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(upstream.count(), 1);

    // The fully qualified spelling names the same host (as nginx reads it).
    let stream = handshake(proxy.addr(), "site.test", pki.client(&[b"http/1.1"]))
        .await
        .unwrap();
    let mut sender = h1(stream).await;
    assert_eq!(
        h1_get(&mut sender, "site.test.", "/").await.0,
        StatusCode::OK
    );
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn unknown_sni_is_refused_when_configured() {
    let pki = Pki::new("sluice test CA");
    let default = pki.issue("default", &["site.test"]);
    let api = pki.issue("api", &["api.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let config = proxy_config(&upstream, |l| {
        let refusing = tls(l, &default).table("tls", "unknown_sni", "refuse");
        sni(refusing, ["api.test"], &api)
    });
    let proxy = Proxy::start(&config.toml()).await;
    let client = pki.client(&[b"http/1.1"]);

    assert!(
        handshake(proxy.addr(), "unknown.test", client.clone())
            .await
            .is_err()
    );
    // The default certificate's own names are known names.
    let stream = handshake(proxy.addr(), "site.test", client.clone())
        .await
        .unwrap();
    assert!(served_cert(&stream) == default.der);
    let stream = handshake(proxy.addr(), "api.test", client).await.unwrap();
    assert!(served_cert(&stream) == api.der);
}

#[tokio::test]
async fn unusable_certificate_files_fail_check_and_startup_naming_the_file() {
    let pki = Pki::new("sluice test CA");
    let good = pki.issue("good", &["site.test"]);
    let other = pki.issue("other", &["other.test"]);
    let broken = pki.path("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let upstream = MockUpstream::named("a").start().await;
    let missing = pki.path("missing.pem");

    let files = |cert: &Path, key: &Path| {
        proxy_config(&upstream, |l| {
            l.table("tls", "cert", cert).table("tls", "key", key)
        })
    };
    let cases = [
        (files(&broken, &good.key), broken.display().to_string()),
        (
            files(&good.cert, &other.key),
            format!(
                "{} does not match certificate file {}",
                other.key.display(),
                good.cert.display()
            ),
        ),
        (
            proxy_config(&upstream, |l| {
                tls(l, &good).entry("tls.sni", |e| {
                    e.set("names", ["x.test"])
                        .set("cert", &missing)
                        .set("key", &good.key)
                })
            }),
            missing.display().to_string(),
        ),
    ];
    for (config, named) in cases {
        let config = config.toml();
        let (ok, _, stderr) = Proxy::check(&config);
        assert!(!ok, "check accepted:\n{config}");
        assert!(
            stderr.contains(&named),
            "check did not name {named}:\n{stderr}"
        );

        let mut proxy = Proxy::spawn(&config);
        let status = proxy
            .wait_exit(WAIT)
            .await
            .expect("sluice kept running with a bad certificate");
        assert!(!status.success());
        assert!(
            proxy.stderr().contains(&named),
            "startup did not name {named}:\n{}",
            proxy.stderr()
        );
    }

    let (ok, stdout, _) = Proxy::check(&proxy_config(&upstream, |l| tls(l, &good)).toml());
    assert!(ok);
    assert!(!stdout.contains("no effect yet"), "{stdout}");
}

/// A key that does not match its certificate is placed at the key of the
/// entry that pairs them, even when another entry names the same key file
/// (the default certificate's key reused by mistake in an SNI entry).
#[tokio::test]
async fn a_mismatched_key_is_placed_in_the_entry_that_pairs_it() {
    let pki = Pki::new("sluice test CA");
    let good = pki.issue("good", &["site.test"]);
    let api = pki.issue("api", &["api.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let config = proxy_config(&upstream, |l| {
        tls(l, &good).entry("tls.sni", |e| {
            e.set("names", ["api.test"])
                .set("cert", &api.cert)
                .set("key", &good.key)
        })
    })
    .toml();
    let sni_key_line = config
        .lines()
        .enumerate()
        .skip_while(|(_, l)| !l.contains("[[listener.tls.sni]]"))
        .find(|(_, l)| l.starts_with("key") && l.contains(&*good.key.display().to_string()))
        .map(|(i, _)| i + 1)
        .expect("the SNI entry's key");
    let (ok, _, stderr) = Proxy::check(&config);
    assert!(!ok, "check accepted:\n{config}");
    assert!(
        stderr.contains(&format!("sluice.toml:{sni_key_line}:"))
            && stderr.contains("does not match certificate file"),
        "not placed at line {sni_key_line}:\n{stderr}\n{config}"
    );
}

/// An upstream `server_name` TLS cannot carry is refused where it is
/// written, with the file's other problems.
#[test]
fn an_invalid_upstream_server_name_is_placed() {
    let config = tls_upstream_config("127.0.0.1:9".parse().unwrap(), |u| {
        u.set("server_name", "bad name!").set("weight", 1)
    });
    let line = config
        .lines()
        .position(|l| l.starts_with("server_name"))
        .expect("the server_name line")
        + 1;
    let (ok, _, stderr) = Proxy::check(&config);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("sluice.toml:{line}:")) && stderr.contains("invalid server_name"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown key \"weight\""), "{stderr}");
}

#[tokio::test]
async fn updated_certificates_serve_new_handshakes_while_old_connections_go_on() {
    let pki = Pki::new("sluice test CA");
    let first = pki.issue("site", &["site.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let toml = proxy_config(&upstream, |l| tls(l, &first)).toml();
    let config = sluice::config::parse(&toml, &pki.path("sluice.toml")).unwrap();
    let server = sluice::server::Server::start(config.clone()).await.unwrap();
    let addr: SocketAddr = config.listeners[0].listen;
    let old = handshake(addr, "site.test", pki.client(&[b"http/1.1"]))
        .await
        .unwrap();
    assert!(served_cert(&old) == first.der);
    let mut old = h1(old).await;
    assert_eq!(h1_get(&mut old, "site.test", "/").await.0, StatusCode::OK);

    // Renewal: new files at the same paths, loaded and checked, then swapped.
    let second = pki.issue("site", &["site.test"]);
    assert!(second.der != first.der);
    let certs = sluice::tls::load_listener_certs(&config.listeners[0])
        .unwrap()
        .unwrap();
    server
        .tls_listener(addr)
        .expect("a TLS listener")
        .update(certs);

    // A fresh client: one resuming its session would be shown the
    // certificate of the original handshake.
    let new = handshake(addr, "site.test", pki.client(&[b"http/1.1"]))
        .await
        .unwrap();
    assert!(
        served_cert(&new) == second.der,
        "the new handshake got the old certificate"
    );
    assert_eq!(
        h1_get(&mut old, "site.test", "/again").await.0,
        StatusCode::OK
    );
    assert_eq!(upstream.count(), 2);
    drop(old);
    drop(new);
    assert!(server.shutdown(WAIT).await);
}

#[tokio::test]
async fn idle_connections_are_closed_after_idle_timeout_but_busy_ones_are_not() {
    let upstream = MockUpstream::named("a")
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let config = proxy_config(&upstream, |l| l.set("idle_timeout", "1s"));
    let proxy = Proxy::start(&config.toml()).await;

    // h2c, prior knowledge.
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    // A request open for longer than idle_timeout keeps the connection
    // busy: no GOAWAY, so the next request still goes on it.
    let req = Request::get(format!("http://{}/slow", proxy.addr()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    upstream.set_delay(Duration::ZERO);
    let req = Request::get(format!("http://{}/next", proxy.addr()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(req)
        .await
        .expect("the busy connection was sent GOAWAY");
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    // Then idle: GOAWAY, and the connection ends.
    poll_until(WAIT, "the idle HTTP/2 connection is closed", async || {
        conn.is_finished()
    })
    .await;
}

/// h2load's summary line, e.g. `requests: 200 total, ..., 200 succeeded, 0 failed, ...`.
async fn h2load(url: &str) -> Option<String> {
    let output = tokio::process::Command::new("h2load")
        .args(["-n", "400", "-c", "4", "-m", "10", url])
        .output()
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn h2load_over_tls_and_h2c_all_succeed() {
    let pki = Pki::new("sluice test CA");
    let default = pki.issue("default", &["site.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let config = proxy_config(&upstream, |l| tls(l, &default)).listener("web");
    let proxy = Proxy::start(&config.toml()).await;
    let [tls_addr, plain_addr] = proxy.listeners() else {
        panic!("two listeners: {:?}", proxy.listeners());
    };

    let Some(tls) = h2load(&format!("https://{tls_addr}/")).await else {
        eprintln!("h2load not on PATH (Debian: nghttp2-client): skipping");
        return;
    };
    assert!(tls.contains("Application protocol: h2"), "{tls}");
    assert!(tls.contains("400 succeeded, 0 failed"), "{tls}");
    assert!(tls.contains("400 2xx"), "{tls}");

    let h2c = h2load(&format!("http://{plain_addr}/")).await.unwrap();
    assert!(h2c.contains("400 succeeded, 0 failed"), "{h2c}");
    assert!(h2c.contains("400 2xx"), "{h2c}");
}

/// An HTTPS server with `issued`'s certificate, answering every request
/// with "secure" and recording each request's headers.
async fn tls_upstream(issued: &Issued) -> (SocketAddr, Arc<Mutex<Vec<HeaderMap>>>) {
    let chain = CertificateDer::pem_file_iter(&issued.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                // A failed handshake (the proxy refusing our certificate) just ends here.
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    record.lock().unwrap().push(req.headers().clone());
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("secure"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A listener in front of upstream `secure`, which speaks TLS to `backend`,
/// with the keys `upstream` sets.
fn tls_upstream_config(backend: SocketAddr, upstream: impl FnOnce(Upstream) -> Upstream) -> String {
    Config::new()
        .listener("secure")
        .upstream("secure", |u| upstream(u.set("tls", true)).server(backend))
        .toml()
}

#[tokio::test]
async fn upstream_tls_verifies_the_server_against_ca() {
    let pki = Pki::new("backend CA");
    // Verified by IP when there is no server_name, by name when there is.
    let by_ip = pki.issue("by-ip", &["127.0.0.1"]);
    let by_name = pki.issue("by-name", &["backend.test"]);
    let (ip_backend, seen) = tls_upstream(&by_ip).await;
    let (name_backend, _) = tls_upstream(&by_name).await;
    let ca = pki.ca_path();

    let proxy = Proxy::start(&tls_upstream_config(ip_backend, |u| u.set("ca", &ca))).await;
    let response = get(&proxy.url("/tls")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "secure");
    assert_eq!(
        seen.lock().unwrap()[0].get("x-forwarded-proto").unwrap(),
        "http"
    );
    // Pooled: a second request reuses the TLS connection or opens another; both work.
    assert_eq!(get(&proxy.url("/tls")).await.status, 200);

    let named = |u: Upstream| u.set("ca", &ca).set("server_name", "backend.test");
    let proxy = Proxy::start(&tls_upstream_config(name_backend, named)).await;
    assert_eq!(get(&proxy.url("/")).await.status, 200);
}

/// A self-signed certificate as `openssl req -x509` makes it (marked as a
/// CA), given as the upstream's `ca`: trusted as the server's own, as
/// nginx and curl trust it; its name is still checked.
#[tokio::test]
async fn a_self_signed_ca_certificate_given_as_ca_is_trusted_as_the_servers_own() {
    let dir = tempfile::tempdir().unwrap();
    let self_signed = |file: &str, names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let issued = Issued {
            cert: dir.path().join(format!("{file}.pem")),
            key: dir.path().join(format!("{file}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    };
    let backend = self_signed("backend", &["127.0.0.1"]);
    let (addr, _) = tls_upstream(&backend).await;
    let proxy = Proxy::start(&tls_upstream_config(addr, |u| u.set("ca", &backend.cert))).await;
    let response = get(&proxy.url("/tls")).await;
    assert_eq!(response.status, 200, "{}", proxy.stderr());
    assert_eq!(response.body, "secure");

    // Pinned, not trusted blindly: the name must still match.
    let other = self_signed("other", &["other.test"]);
    let (addr, _) = tls_upstream(&other).await;
    let proxy = Proxy::start(&tls_upstream_config(addr, |u| u.set("ca", &other.cert))).await;
    assert_eq!(get(&proxy.url("/tls")).await.status, 502);
    // And another certificate than the bundle's is refused.
    let (addr, _) = tls_upstream(&other).await;
    let proxy = Proxy::start(&tls_upstream_config(addr, |u| u.set("ca", &backend.cert))).await;
    assert_eq!(get(&proxy.url("/tls")).await.status, 502);
}

#[tokio::test]
async fn upstream_tls_with_an_untrusted_certificate_is_502() {
    let pki = Pki::new("backend CA");
    let stranger = Pki::new("some other CA");
    let issued = pki.issue("backend", &["127.0.0.1"]);
    let (backend, seen) = tls_upstream(&issued).await;
    let wrong_ca = |u: Upstream| u.set("ca", &stranger.ca_path());

    let proxy = Proxy::start(&tls_upstream_config(backend, wrong_ca)).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502);
    // The system roots do not know the test CA either.
    let proxy = Proxy::start(&tls_upstream_config(backend, |u| u)).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502);
    // A name the certificate does not carry.
    let ca = |u: Upstream| {
        u.set("ca", &pki.ca_path())
            .set("server_name", "elsewhere.test")
    };
    let proxy = Proxy::start(&tls_upstream_config(backend, ca)).await;
    assert_eq!(get(&proxy.url("/")).await.status, 502);
    assert!(
        seen.lock().unwrap().is_empty(),
        "a request reached the unverified server"
    );
}

#[test]
fn missing_ca_bundle_fails_check_naming_the_file() {
    let missing = Path::new("/nonexistent/ca.pem");
    let config = tls_upstream_config("127.0.0.1:9".parse().unwrap(), |u| u.set("ca", missing));
    let (ok, _, stderr) = Proxy::check(&config);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}

#[tokio::test]
async fn health_checks_speak_tls_to_a_tls_upstream() {
    let pki = Pki::new("backend CA");
    let issued = pki.issue("backend", &["127.0.0.1"]);
    let (backend, seen) = tls_upstream(&issued).await;
    let options = |u: Upstream| {
        u.set("ca", &pki.ca_path()).table_with("health_check", |h| {
            h.set("path", "/healthz").set("interval", "100ms")
        })
    };
    let proxy = Proxy::start(&tls_upstream_config(backend, options)).await;
    poll_until(WAIT, "a health check arrives over TLS", async || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|h| h.get("user-agent").is_some_and(|v| v == "sluice-health"))
    })
    .await;
    assert_eq!(get(&proxy.url("/")).await.status, 200);
}

/// The certificate a brand-new client (no session to resume) is served.
async fn fresh_cert(pki: &Pki, addr: SocketAddr, sni: &str) -> CertificateDer<'static> {
    let stream = handshake(addr, sni, pki.client(&[b"http/1.1"]))
        .await
        .unwrap_or_else(|e| panic!("handshake for {sni}: {e}"));
    served_cert(&stream)
}

/// Overwrites a file and waits until the watcher's reload of it is rejected
/// with a message containing `reason` (a rejection of a half-written
/// renewal earlier on could otherwise be taken for this one).
async fn write_rejected(proxy: &Proxy, path: &Path, contents: &str, reason: &str) {
    // The reason follows the place in the config of the key naming the file.
    let rejections = || {
        proxy
            .stderr()
            .lines()
            .filter(|l| {
                l.contains("reload rejected, still serving the previous config: ")
                    && l.contains(reason)
            })
            .count()
    };
    let before = rejections();
    std::fs::write(path, contents).unwrap();
    poll_until(
        WAIT,
        &format!("the reload is rejected: {reason}"),
        async || rejections() > before,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_renewed_on_disk_are_reloaded_by_the_watcher() {
    let pki = Pki::new("sluice test CA");
    let first = pki.issue("site", &["site.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let config = proxy_config(&upstream, |l| tls(l, &first)).global("watch", true);
    let mut proxy = Proxy::start(&config.toml()).await;
    let pid = proxy.pid();
    assert!(fresh_cert(&pki, proxy.addr(), "site.test").await == first.der);
    let old = handshake(proxy.addr(), "site.test", pki.client(&[b"http/1.1"]))
        .await
        .unwrap();
    let mut old = h1(old).await;
    assert_eq!(h1_get(&mut old, "site.test", "/").await.0, StatusCode::OK);

    // Renewal: new files at the same paths, the config untouched.
    let second = pki.issue("site", &["site.test"]);
    assert!(second.der != first.der);
    poll_until(
        WAIT,
        "new handshakes get the renewed certificate",
        async || fresh_cert(&pki, proxy.addr(), "site.test").await == second.der,
    )
    .await;
    assert!(proxy.try_exit().is_none(), "the proxy exited");
    assert_eq!(proxy.pid(), pid);
    // The log is read by another thread: it may lag the handshake.
    poll_until(WAIT, "the reload is logged", async || {
        proxy.stderr().contains("config reloaded")
    })
    .await;
    // The connection made before the swap goes on, on its old certificate.
    assert_eq!(
        h1_get(&mut old, "site.test", "/after").await.0,
        StatusCode::OK
    );

    // A broken certificate over the good one: rejected, naming the file,
    // and the renewed certificate stays.
    write_rejected(
        &proxy,
        &second.cert,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        &format!("cannot read certificate file {}", second.cert.display()),
    )
    .await;
    assert!(fresh_cert(&pki, proxy.addr(), "site.test").await == second.der);

    // A valid certificate that does not belong to the key on disk: one
    // write, so no reload can see a matching pair in between.
    let stray = pki.issue("stray", &["site.test"]);
    let stray_pem = std::fs::read_to_string(&stray.cert).unwrap();
    write_rejected(
        &proxy,
        &second.cert,
        &stray_pem,
        &format!(
            "private key file {} does not match certificate file {}",
            second.key.display(),
            second.cert.display()
        ),
    )
    .await;
    assert!(
        fresh_cert(&pki, proxy.addr(), "site.test").await == second.der,
        "a rejected certificate was served"
    );
    assert_eq!(
        h1_get(&mut old, "site.test", "/still").await.0,
        StatusCode::OK
    );

    // Fixed files apply again.
    let fourth = pki.issue("site", &["site.test"]);
    poll_until(WAIT, "the fixed certificate is served", async || {
        fresh_cert(&pki, proxy.addr(), "site.test").await == fourth.der
    })
    .await;
    assert!(proxy.try_exit().is_none());
    assert_eq!(upstream.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reload_applies_renewed_certificates_and_is_422_for_a_missing_one() {
    let pki = Pki::new("sluice test CA");
    let upstream = MockUpstream::named("a").start().await;
    let (listen, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    // The same listener and admin API each time, serving `cert` and `key`.
    let config = |cert: &Path, key: &Path| {
        proxy_config(&upstream, |l| {
            l.set("listen", &listen)
                .table("tls", "cert", cert)
                .table("tls", "key", key)
        })
        .global("watch", false)
        .set("admin", "listen", &admin)
        .toml()
    };
    let first = pki.issue("site", &["site.test"]);
    let proxy = Proxy::start(&config(&first.cert, &first.key)).await;
    assert!(fresh_cert(&pki, proxy.addr(), "site.test").await == first.der);

    // Renewed files, same config text: a reload still applies them.
    let good = pki.issue("site", &["site.test"]);
    let resp = request(Method::POST, &proxy.admin_url("/api/reload"), &[], "").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        fresh_cert(&pki, proxy.addr(), "site.test").await == good.der,
        "an API reload did not apply the renewed certificate"
    );

    let missing = pki.path("missing.pem");
    proxy.write_config(&config(&missing, &good.key));
    let resp = request(Method::POST, &proxy.admin_url("/api/reload"), &[], "").await;
    assert_eq!(resp.status, 422, "{}", resp.body);
    let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    let missing = missing.display().to_string();
    // Placed at the key that names the file, like every config problem.
    let diagnostic = &body["diagnostics"][0];
    assert!(
        diagnostic["file"]
            .as_str()
            .is_some_and(|f| f.ends_with(".toml"))
            && diagnostic["line"].as_u64().is_some()
            && diagnostic["message"]
                .as_str()
                .is_some_and(|m| m.contains(&missing)),
        "{body}"
    );
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains(&missing)),
        "{body}"
    );
    // The log is read by another thread: it may lag the response.
    poll_until(
        WAIT,
        "the rejection is logged naming the file",
        async || proxy.stderr().contains(&missing),
    )
    .await;
    // Still serving the old certificate, over TLS.
    let stream = handshake(proxy.addr(), "site.test", pki.client(&[b"http/1.1"]))
        .await
        .unwrap();
    assert!(served_cert(&stream) == good.der);
    let mut sender = h1(stream).await;
    assert_eq!(
        h1_get(&mut sender, "site.test", "/").await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_added_by_a_reload_speaks_tls_from_its_first_connection() {
    let pki = Pki::new("sluice test CA");
    let site = pki.issue("site", &["site.test"]);
    let upstream = MockUpstream::named("a").start().await;
    let secure = free_port();
    // The plaintext listener and the admin API stay on their ports.
    let plain = proxy_config(&upstream, |l| l)
        .global("watch", false)
        .admin();
    let proxy = Proxy::start(&plain.toml()).await;

    let added = plain.clone().listener_with(|l| {
        let l = l.set("listen", format!("127.0.0.1:{secure}"));
        tls(l.set("upstream", "web"), &site)
    });
    proxy.write_config(&added.toml());
    let resp = request(Method::POST, &proxy.admin_url("/api/reload"), &[], "").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let body: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(
        body["listeners"]["added"],
        serde_json::json!([format!("127.0.0.1:{secure}")])
    );
    let addr: SocketAddr = format!("127.0.0.1:{secure}").parse().unwrap();
    let stream = handshake(addr, "site.test", pki.client(&[b"http/1.1"]))
        .await
        .expect("the first connection to the new listener does TLS");
    assert!(served_cert(&stream) == site.der);
    let mut sender = h1(stream).await;
    assert_eq!(
        h1_get(&mut sender, "site.test", "/").await.0,
        StatusCode::OK
    );
    // The plaintext listener stays plaintext.
    assert_eq!(get(&proxy.url("/")).await.status, 200);

    // Removed again: the port closes.
    proxy.write_config(&plain.toml());
    let resp = request(Method::POST, &proxy.admin_url("/api/reload"), &[], "").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    poll_until(
        WAIT,
        "the removed TLS listener refuses connections",
        async || TcpStream::connect(addr).await.is_err(),
    )
    .await;
    assert_eq!(get(&proxy.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_only_renews_certificates_says_so() {
    let pki = Pki::new("sluice test CA");
    let upstream = MockUpstream::named("a").start().await;
    let port = free_port();
    let first = pki.issue("site", &["site.test"]);
    let config = proxy_config(&upstream, |l| {
        tls(l.set("listen", format!("127.0.0.1:{port}")), &first)
    });
    let proxy = Proxy::start(&config.global("watch", false).admin().toml()).await;
    let reload = async || {
        let resp = request(Method::POST, &proxy.admin_url("/api/reload"), &[], "").await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        serde_json::from_str::<serde_json::Value>(&resp.body).expect("a JSON report")
    };

    let unchanged = reload().await;
    assert_eq!(unchanged["certificates_renewed"], serde_json::json!([]));
    pki.issue("site", &["site.test"]);
    let renewed = reload().await;
    assert_eq!(
        renewed["certificates_renewed"],
        serde_json::json!([format!("127.0.0.1:{port}")])
    );
    poll_until(WAIT, "the log names the renewal", async || {
        proxy
            .stderr()
            .contains(&format!("certificates renewed on [127.0.0.1:{port}]"))
    })
    .await;
}
