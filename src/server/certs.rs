//! Which listeners terminate TLS, and with which certificates.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::Server;
use crate::tls::{Certs, TlsError, TlsListener};

impl Server {
    /// Serves `certs` from now on: listeners already terminating TLS swap
    /// their certificates (their session caches and open connections stay),
    /// new TLS listeners get a rustls config, and addresses missing from
    /// `certs` stop doing TLS. A reload calls this with [`tls::load`]'s
    /// result before swapping the snapshot. Returns the running TLS
    /// listeners whose certificates changed, in address order.
    pub fn apply_tls(&self, certs: Certs) -> Result<Vec<SocketAddr>, TlsError> {
        for warning in certs.warnings() {
            tracing::warn!("{warning}");
        }
        // Reloads apply one at a time: no other writer can come in between.
        let mut current = HashMap::clone(&self.tls.load());
        current.retain(|addr, _| certs.listeners.contains_key(addr));
        let mut renewed = Vec::new();
        for (addr, listener_certs) in certs.listeners {
            match current.get(&addr) {
                Some(running) => {
                    if running.update(listener_certs) {
                        renewed.push(addr);
                    }
                }
                None => {
                    current.insert(addr, Arc::new(TlsListener::new(listener_certs)?));
                }
            }
        }
        self.tls.store(Arc::new(current));
        renewed.sort_unstable();
        Ok(renewed)
    }

    /// The TLS side of the listener on `addr`, if it terminates TLS.
    pub fn tls_listener(&self, addr: SocketAddr) -> Option<Arc<TlsListener>> {
        self.tls.load().get(&addr).cloned()
    }
}
