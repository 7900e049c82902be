//! TLS on both sides of the proxy.
//!
//! Listeners: each TLS listener has one [`TlsListener`] whose rustls config is
//! built once; the certificates it serves live behind an `ArcSwap` in its SNI
//! resolver, so a reload swaps them ([`TlsListener::update`]) without
//! rebuilding the listener or forgetting the session cache. [`load`] reads and
//! checks every certificate of a config up front, so a reload can refuse a
//! bad file before anything changes.
//!
//! Upstreams: [`UpstreamTls`] holds one client config per upstream, built
//! with its snapshot, verifying servers against the system roots or `ca`.

mod client;
mod pinned;
mod resolver;
mod validity;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::ServerSessionMemoryCache;
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{self, Config, UnknownSni};
pub use client::{ServerTls, UpstreamClients, UpstreamTls};
use resolver::Resolver;

/// ALPN identifiers offered to clients, preferred first.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// TLS sessions remembered for resumption, per listener. A resumed handshake
/// skips the certificate and key exchange; at a few hundred bytes each this
/// bounds the cache to a few MiB.
const SESSION_CACHE_SIZE: usize = 8192;

/// Why certificates or keys could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {source}")]
    ReadCert {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("certificate file {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("certificate file {path}: {source}")]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot read private key file {path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("private key file {path} holds no usable key: {source}")]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("private key file {key} does not match certificate file {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("upstream {upstream}: cannot read CA bundle {path}: {source}")]
    ReadCa {
        upstream: String,
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("upstream {upstream}: CA bundle {path} holds no usable certificate")]
    EmptyCa { upstream: String, path: PathBuf },
    #[error("upstream {upstream}: no system root certificates could be loaded; set `ca`")]
    NoSystemRoots { upstream: String },
    #[error("upstream {upstream}: {name:?} is not a valid TLS server name")]
    ServerName { upstream: String, name: String },
    #[error("upstream {upstream}: its TLS client was not built with its config")]
    NotLoaded { upstream: String },
    #[error("cannot set up TLS: {0}")]
    Setup(#[source] rustls::Error),
}

impl TlsError {
    /// The file at fault, if one is.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::ReadCert { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::BadCertificate { path, .. }
            | TlsError::ReadKey { path, .. }
            | TlsError::BadKey { path, .. }
            | TlsError::ReadCa { path, .. }
            | TlsError::EmptyCa { path, .. } => Some(path),
            TlsError::KeyMismatch { key, .. } => Some(key),
            TlsError::NoSystemRoots { .. }
            | TlsError::ServerName { .. }
            | TlsError::NotLoaded { .. }
            | TlsError::Setup(_) => None,
        }
    }
}

impl TlsError {
    /// This error as a diagnostic at the key of config `text` (read from
    /// `config`) that names its file, when one does.
    pub fn placed(&self, text: &str, config: &Path) -> Option<config::Diagnostic> {
        // A key is placed in the table that pairs it with its certificate.
        let paired = match self {
            TlsError::KeyMismatch { cert, .. } => Some(cert.as_path()),
            _ => None,
        };
        config::place(text, config, self.path()?, paired, self.to_string())
    }
}

/// Something worth a warning that does not stop the certificate being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertWarning {
    Expired {
        path: PathBuf,
        not_after: validity::UtcTime,
    },
    NotYetValid {
        path: PathBuf,
        not_before: validity::UtcTime,
    },
}

impl fmt::Display for CertWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertWarning::Expired { path, not_after } => write!(
                f,
                "certificate {} expired on {not_after}; clients will reject it",
                path.display()
            ),
            CertWarning::NotYetValid { path, not_before } => write!(
                f,
                "certificate {} is not valid before {not_before}; clients will reject it",
                path.display()
            ),
        }
    }
}

/// One listener's certificates, loaded and checked: what a [`TlsListener`]
/// serves, and what [`TlsListener::update`] swaps in.
#[derive(Debug)]
pub struct ListenerCerts {
    default: Arc<CertifiedKey>,
    /// Lower-case exact names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.org` stored as `example.org`: matches one more label, as a
    /// wildcard certificate does.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    unknown_sni: UnknownSni,
    handshake_timeout: Duration,
    warnings: Vec<CertWarning>,
}

impl ListenerCerts {
    /// Expired or not-yet-valid certificates, to be logged by the caller.
    pub fn warnings(&self) -> &[CertWarning] {
        &self.warnings
    }

    /// Whether both serve the same chains for the same names. A key cannot
    /// change without its certificate, so comparing chains is enough.
    fn same_certificates(&self, other: &ListenerCerts) -> bool {
        let same = |a: &Arc<CertifiedKey>, b: &Arc<CertifiedKey>| a.cert == b.cert;
        let same_map = |a: &HashMap<String, Arc<CertifiedKey>>,
                        b: &HashMap<String, Arc<CertifiedKey>>| {
            a.len() == b.len()
                && a.iter()
                    .all(|(name, key)| b.get(name).is_some_and(|other| same(key, other)))
        };
        same(&self.default, &other.default)
            && same_map(&self.exact, &other.exact)
            && same_map(&self.wildcard, &other.wildcard)
    }
}

/// Every TLS listener's certificates of a config, keyed by listen address,
/// and the client side of its TLS upstreams.
#[derive(Debug, Default)]
pub struct Certs {
    pub listeners: HashMap<SocketAddr, ListenerCerts>,
    /// The client side of every TLS upstream, for the snapshots of this
    /// config: its CA bundle is read here and nowhere else.
    pub upstreams: UpstreamClients,
}

impl Certs {
    pub fn warnings(&self) -> impl Iterator<Item = &CertWarning> {
        self.listeners.values().flat_map(|l| l.warnings())
    }
}

/// Reads and checks every certificate and key of `config`, and the CA
/// bundles and server names of its TLS upstreams. Blocking (file reads):
/// async callers should use a blocking thread.
pub fn load(config: &Config) -> Result<Certs, TlsError> {
    let mut certs = Certs::default();
    for listener in &config.listeners {
        if let Some(loaded) = load_listener_certs(listener)? {
            certs.listeners.insert(listener.listen, loaded);
        }
    }
    certs.upstreams = UpstreamClients::load(config)?;
    Ok(certs)
}

/// One listener's certificates, or `None` when it has no `[listener.tls]`.
pub fn load_listener_certs(listener: &config::Listener) -> Result<Option<ListenerCerts>, TlsError> {
    let Some(tls) = &listener.tls else {
        return Ok(None);
    };
    let mut warnings = Vec::new();
    let default = certified_key(&tls.cert, &tls.key, &mut warnings)?;
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    for sni in &tls.sni {
        let key = certified_key(&sni.cert, &sni.key, &mut warnings)?;
        for name in &sni.names {
            // The first entry naming a host wins, as the first matching route does.
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.entry(parent.to_owned()),
                None => exact.entry(name.clone()),
            }
            .or_insert_with(|| key.clone());
        }
    }
    Ok(Some(ListenerCerts {
        default,
        exact,
        wildcard,
        unknown_sni: tls.unknown_sni,
        handshake_timeout: tls.handshake_timeout,
        warnings,
    }))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    warnings: &mut Vec<CertWarning>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let read_cert = |source| TlsError::ReadCert {
        path: cert_path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(read_cert)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_cert)?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    };
    check_validity(cert_path, leaf, warnings)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::ReadKey {
        path: key_path.to_owned(),
        source,
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::BadKey {
            path: key_path.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        // ring can derive the public key of every key type it loads, so an
        // unknown answer does not happen; treat it like any other bad certificate.
        Err(source) => Err(TlsError::BadCertificate {
            path: cert_path.to_owned(),
            source,
        }),
    }
}

/// An expired certificate is served (with a warning): refusing to start
/// would turn a renewal slip into an outage for clients that don't check.
fn check_validity(
    path: &Path,
    leaf: &CertificateDer<'_>,
    warnings: &mut Vec<CertWarning>,
) -> Result<(), TlsError> {
    let Some((not_before, not_after)) = validity::parse(leaf) else {
        return Err(TlsError::BadCertificate {
            path: path.to_owned(),
            source: rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding),
        });
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if now > not_after.unix() {
        warnings.push(CertWarning::Expired {
            path: path.to_owned(),
            not_after,
        });
    } else if now < not_before.unix() {
        warnings.push(CertWarning::NotYetValid {
            path: path.to_owned(),
            not_before,
        });
    }
    Ok(())
}

/// Why a client's TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not complete within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Io(#[source] std::io::Error),
}

/// A listener's TLS side: one rustls server config for the listener's life,
/// serving whatever certificates were last swapped in.
pub struct TlsListener {
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    pub fn new(certs: ListenerCerts) -> Result<TlsListener, TlsError> {
        let resolver = Arc::new(Resolver::new(certs));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Setup)?;
        Ok(TlsListener {
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Serves `certs` to new handshakes; established connections keep theirs.
    /// Returns whether any certificate differs from those served so far.
    pub fn update(&self, certs: ListenerCerts) -> bool {
        let renewed = !self.resolver.current().same_certificates(&certs);
        self.resolver.store(certs);
        renewed
    }

    /// The rustls config, for inspection (protocol versions, ALPN).
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        self.acceptor.config()
    }

    /// Runs the server handshake within the listener's `handshake_timeout`.
    pub async fn accept(&self, stream: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let timeout = self.resolver.handshake_timeout();
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(HandshakeError::Io(e)),
            Err(_) => Err(HandshakeError::Timeout(timeout)),
        }
    }
}

#[cfg(test)]
mod tests;
