use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, KeyPair};

use super::*;
use crate::config::{ListenerTls, SniCert};

/// Writes a self-signed certificate for `names` and its key as `NAME.pem`
/// and `NAME.key` in `dir`.
fn write_cert(
    dir: &Path,
    file: &str,
    names: &[&str],
    key: &KeyPair,
    edit: impl FnOnce(&mut CertificateParams),
) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    edit(&mut params);
    let cert = params.self_signed(key).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn listener(
    cert: PathBuf,
    key: PathBuf,
    unknown_sni: UnknownSni,
    sni: Vec<SniCert>,
) -> config::Listener {
    let text = "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"web\"\n[[upstream.web.server]]\naddress = \"127.0.0.1:2\"\n";
    let mut config = config::parse(text, Path::new("test.toml")).unwrap();
    let mut listener = config.listeners.remove(0);
    listener.tls = Some(ListenerTls {
        cert,
        key,
        handshake_timeout: Duration::from_secs(10),
        unknown_sni,
        sni,
    });
    listener
}

fn load_one(cert: PathBuf, key: PathBuf) -> Result<ListenerCerts, TlsError> {
    load_listener_certs(&listener(cert, key, UnknownSni::Default, Vec::new())).map(Option::unwrap)
}

#[test]
fn ecdsa_and_ed25519_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    for (file, alg) in [
        ("ecdsa", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("ed25519", &rcgen::PKCS_ED25519),
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let (cert, key) = write_cert(dir.path(), file, &["site.test"], &key, |_| {});
        let loaded = load_one(cert, key).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(loaded.warnings().is_empty());
    }
}

#[test]
fn rsa_keys_load() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("rsa.key");
    let generated = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key_path)
        .output();
    if !generated.is_ok_and(|out| out.status.success()) {
        eprintln!("openssl cannot generate an RSA key here: skipping");
        return;
    }
    let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
    let (cert, key) = write_cert(dir.path(), "rsa", &["site.test"], &key, |_| {});
    load_one(cert, key).unwrap();
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = write_cert(
        dir.path(),
        "a",
        &["a.test"],
        &KeyPair::generate().unwrap(),
        |_| {},
    );
    let (_, other_key) = write_cert(
        dir.path(),
        "b",
        &["b.test"],
        &KeyPair::generate().unwrap(),
        |_| {},
    );
    let err = load_one(cert.clone(), other_key.clone()).unwrap_err();
    assert!(
        matches!(&err, TlsError::KeyMismatch { cert: c, key: k } if *c == cert && *k == other_key),
        "{err}"
    );
}

#[test]
fn unreadable_or_empty_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(
        dir.path(),
        "a",
        &["a.test"],
        &KeyPair::generate().unwrap(),
        |_| {},
    );
    let missing = dir.path().join("missing.pem");
    let err = load_one(missing.clone(), key.clone()).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    // A key where the certificate should be, and the other way round.
    let err = load_one(key.clone(), key.clone()).unwrap_err();
    assert!(
        matches!(&err, TlsError::NoCertificate { path } if *path == key),
        "{err}"
    );
    let err = load_one(cert.clone(), cert.clone()).unwrap_err();
    assert!(
        matches!(&err, TlsError::ReadKey { path, .. } if *path == cert),
        "{err}"
    );
}

#[test]
fn an_expired_certificate_loads_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(
        dir.path(),
        "old",
        &["old.test"],
        &KeyPair::generate().unwrap(),
        |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 2, 3);
        },
    );
    let loaded = load_one(cert.clone(), key).unwrap();
    let [warning] = loaded.warnings() else {
        panic!("expected one warning: {:?}", loaded.warnings());
    };
    assert!(matches!(warning, CertWarning::Expired { path, .. } if *path == cert));
    assert!(
        warning
            .to_string()
            .contains("expired on 2001-02-03 00:00:00 UTC"),
        "{warning}"
    );
}

#[test]
fn names_pick_exact_then_one_label_wildcard_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let (default_cert, default_key) =
        write_cert(dir.path(), "default", &["site.test"], &key, |_| {});
    let (api_cert, api_key) = write_cert(
        dir.path(),
        "api",
        &["api.test", "*.wild.test"],
        &key,
        |_| {},
    );
    let sni = vec![SniCert {
        names: vec!["api.test".into(), "*.wild.test".into()],
        cert: api_cert,
        key: api_key,
    }];
    let lookup = |unknown_sni| {
        load_listener_certs(&listener(
            default_cert.clone(),
            default_key.clone(),
            unknown_sni,
            sni.clone(),
        ))
        .unwrap()
        .unwrap()
    };
    let certs = lookup(UnknownSni::Default);
    let is = |sni: Option<&str>, expected: &Arc<CertifiedKey>| {
        certs
            .choose(sni)
            .is_some_and(|chosen| Arc::ptr_eq(&chosen, expected))
    };
    let api = &certs.exact["api.test"];
    assert!(is(Some("api.test"), api));
    assert!(is(Some("API.Test"), api));
    assert!(is(Some("x.wild.test"), api));
    // A wildcard covers one label, as the certificate does.
    assert!(is(Some("a.b.wild.test"), &certs.default));
    assert!(is(Some("wild.test"), &certs.default));
    assert!(is(Some("unknown.test"), &certs.default));
    assert!(is(None, &certs.default));

    let certs = lookup(UnknownSni::Refuse);
    assert!(certs.choose(Some("unknown.test")).is_none());
    assert!(certs.choose(None).is_none());
    assert!(
        certs.choose(Some("site.test")).is_some(),
        "the default certificate's own name"
    );
    assert!(certs.choose(Some("x.wild.test")).is_some());
}

#[test]
fn listeners_offer_h2_then_http11() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(
        dir.path(),
        "a",
        &["a.test"],
        &KeyPair::generate().unwrap(),
        |_| {},
    );
    let listener = TlsListener::new(load_one(cert, key).unwrap()).unwrap();
    assert_eq!(
        listener.server_config().alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn upstream_clients_read_the_ca_at_load_and_never_fall_back_to_cleartext() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let (ca, _) = write_cert(dir.path(), "ca", &["backend.test"], &key, |_| {});
    let text = format!(
        "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"web\"\n[upstream.web]\ntls = true\nca = \"{}\"\n[[upstream.web.server]]\naddress = \"127.0.0.1:2\"\n",
        ca.display()
    );
    let config = config::parse(&text, Path::new("test.toml")).unwrap();
    let upstream = &config.upstreams[0];
    let clients = UpstreamClients::load(&config).unwrap();

    // What was loaded no longer needs the file: a snapshot built later
    // (a runtime weight) does not read it again.
    std::fs::remove_file(&ca).unwrap();
    let loaded = clients.get(upstream).expect("a TLS upstream");
    assert!(format!("{loaded:?}").contains("ready: true"), "{loaded:?}");
    assert!(matches!(
        UpstreamClients::load(&config),
        Err(TlsError::ReadCa { .. })
    ));

    // Not built with its config: still TLS, failing every connection.
    let missing = UpstreamClients::default().get(upstream).expect("still TLS");
    assert!(
        format!("{missing:?}").contains("ready: false"),
        "{missing:?}"
    );
}
