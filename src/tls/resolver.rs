//! Choosing the certificate for a handshake from its SNI name.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;

use super::ListenerCerts;
use crate::config::UnknownSni;

/// The certificates of one listener, swappable while handshakes read them.
#[derive(Debug)]
pub struct Resolver {
    certs: ArcSwap<ListenerCerts>,
}

impl Resolver {
    pub fn new(certs: ListenerCerts) -> Resolver {
        Resolver {
            certs: ArcSwap::from_pointee(certs),
        }
    }

    pub fn current(&self) -> Arc<ListenerCerts> {
        self.certs.load_full()
    }

    pub fn store(&self, certs: ListenerCerts) {
        self.certs.store(Arc::new(certs));
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.certs.load().handshake_timeout
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = self.certs.load().choose(hello.server_name());
        if chosen.is_none() {
            tracing::debug!(sni = ?hello.server_name(), "refusing a handshake for an unknown name");
        }
        chosen
    }
}

impl ListenerCerts {
    /// The certificate for `sni`: an exact name, then a wildcard one label
    /// up, then the default. With `unknown_sni = "refuse"` the default is
    /// served only to names it covers itself, and a handshake without SNI
    /// is refused (`None` aborts it).
    pub(super) fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = sni else {
            return match self.unknown_sni {
                UnknownSni::Default => Some(self.default.clone()),
                UnknownSni::Refuse => None,
            };
        };
        let name = sni.to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        if let Some(key) = name
            .split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
        {
            return Some(key.clone());
        }
        match self.unknown_sni {
            UnknownSni::Default => Some(self.default.clone()),
            UnknownSni::Refuse => covers(&self.default, &name).then(|| self.default.clone()),
        }
    }
}

/// Whether the certificate's own names include `name`: those are known
/// names even though no `sni` entry lists them.
fn covers(key: &CertifiedKey, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    key.end_entity_cert()
        .ok()
        .and_then(|der| ParsedCertificate::try_from(der).ok())
        .is_some_and(|cert| rustls::client::verify_server_name(&cert, &server_name).is_ok())
}
