//! TLS to upstream servers: one client config per upstream, built when the
//! config is loaded, and each server's name made with the snapshot, so
//! connections only run the handshake.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::pinned::PinnedOrWebPki;
use super::{ALPN_HTTP11, TlsError, provider};
use crate::config;

/// How an upstream with `tls = true` speaks TLS to its servers: built when
/// the config is loaded (its CA bundle read once, there) and shared by every
/// snapshot of that config.
#[derive(Clone)]
pub struct UpstreamTls {
    /// An error only for an upstream the config's load did not build:
    /// every connection then fails (502) rather than falling back to
    /// cleartext.
    connector: Result<TlsConnector, Arc<TlsError>>,
    /// `server_name`, else each server's host.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ready", &self.connector.is_ok())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl UpstreamTls {
    /// Builds the client side of `upstream`, checking that every server has
    /// a valid name to verify. Blocking: it reads `ca`, or the system roots
    /// the first time.
    fn new(upstream: &config::Upstream) -> Result<UpstreamTls, TlsError> {
        let connector = connector(upstream)?;
        let server_name = match &upstream.server_name {
            Some(name) => Some(server_name(&upstream.name, name)?),
            None => {
                for server in &upstream.servers {
                    server_name(&upstream.name, server.tls_name())?;
                }
                None
            }
        };
        Ok(UpstreamTls {
            connector: Ok(connector),
            server_name,
        })
    }

    /// The client side for one of the upstream's servers, with the name its
    /// certificate must carry made once, not per connection.
    pub fn server(&self, upstream: &str, server: &config::Server) -> ServerTls {
        let name = match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => server_name(upstream, server.tls_name()).map_err(Arc::new),
        };
        ServerTls {
            handshake: self.connector.clone().and_then(|c| name.map(|n| (c, n))),
        }
    }
}

/// The client side of every TLS upstream of one config, by upstream name.
#[derive(Debug, Clone, Default)]
pub struct UpstreamClients(HashMap<String, UpstreamTls>);

impl UpstreamClients {
    /// Builds the client side of every upstream of `config` with `tls = true`.
    pub fn load(config: &config::Config) -> Result<UpstreamClients, TlsError> {
        let mut clients = HashMap::new();
        for upstream in config.upstreams.iter().filter(|u| u.tls) {
            clients.insert(upstream.name.clone(), UpstreamTls::new(upstream)?);
        }
        Ok(UpstreamClients(clients))
    }

    /// The client side of `upstream` when it has `tls = true`. One that was
    /// not loaded with its config fails every connection.
    pub fn get(&self, upstream: &config::Upstream) -> Option<UpstreamTls> {
        if !upstream.tls {
            return None;
        }
        Some(self.0.get(&upstream.name).cloned().unwrap_or_else(|| {
            let error = TlsError::NotLoaded {
                upstream: upstream.name.clone(),
            };
            tracing::error!(%error, "upstream TLS is unusable; its requests will fail");
            UpstreamTls {
                connector: Err(Arc::new(error)),
                server_name: None,
            }
        }))
    }
}

/// How sluice speaks TLS to one server.
#[derive(Clone)]
pub struct ServerTls {
    /// An error when the upstream's TLS was unusable when the snapshot was
    /// built: connections then fail rather than fall back to cleartext.
    handshake: Result<(TlsConnector, ServerName<'static>), Arc<TlsError>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.handshake.as_ref().ok().map(|(_, name)| name);
        f.debug_struct("ServerTls").field("name", &name).finish()
    }
}

impl ServerTls {
    /// Runs the client handshake with a connected server.
    pub async fn connect(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let (connector, name) = self
            .handshake
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))?;
        connector.connect(name.clone(), stream).await
    }
}

fn connector(upstream: &config::Upstream) -> Result<TlsConnector, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let builder = match &upstream.ca {
        Some(path) => {
            let read = |source| TlsError::ReadCa {
                upstream: upstream.name.clone(),
                path: path.clone(),
                source,
            };
            let mut roots = RootCertStore::empty();
            let mut certs = Vec::new();
            for cert in CertificateDer::pem_file_iter(path).map_err(read)? {
                let cert = cert.map_err(read)?;
                // A bundle may carry certificates webpki cannot use as
                // anchors; skip them as the system store does.
                let _ = roots.add(cert.clone());
                certs.push(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::EmptyCa {
                    upstream: upstream.name.clone(),
                    path: path.clone(),
                });
            }
            // A server may present one of these as its own certificate.
            let verifier = PinnedOrWebPki::new(Arc::new(roots), certs)
                .map_err(|e| TlsError::Setup(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
        None => builder.with_root_certificates(system_roots().ok_or_else(|| {
            TlsError::NoSystemRoots {
                upstream: upstream.name.clone(),
            }
        })?),
    };
    let mut config = builder.with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The platform's trusted roots, read once per process: reading them takes
/// milliseconds and they change with OS updates, not with sluice's config.
fn system_roots() -> Option<Arc<RootCertStore>> {
    static ROOTS: OnceLock<Option<Arc<RootCertStore>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(%error, "reading a system root certificate failed");
            }
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            (added > 0).then(|| Arc::new(roots))
        })
        .clone()
}

fn server_name(upstream: &str, name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName {
        upstream: upstream.to_owned(),
        name: name.to_owned(),
    })
}
