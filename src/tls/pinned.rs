//! Server certificates verified against an upstream's `ca` bundle, as webpki
//! does, plus one case webpki refuses: a server whose certificate is itself
//! in the bundle. `openssl req -x509` makes self-signed certificates marked
//! as CAs (`CA:TRUE`), and webpki will not take a CA certificate as a
//! server's own; nginx (`proxy_ssl_trusted_certificate`) and curl
//! (`--cacert`) accept it. Such a certificate is trusted as pinned, byte for
//! byte; its name and validity period are still checked.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{provider, validity};

#[derive(Debug)]
pub struct PinnedOrWebPki {
    webpki: Arc<WebPkiServerVerifier>,
    /// The bundle's certificates, each trusted as a server's own.
    pinned: Vec<CertificateDer<'static>>,
}

impl PinnedOrWebPki {
    pub fn new(
        roots: Arc<RootCertStore>,
        pinned: Vec<CertificateDer<'static>>,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider()).build()?;
        Ok(PinnedOrWebPki { webpki, pinned })
    }
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => return Ok(verified),
            Err(refused) => refused,
        };
        if !self.pinned.iter().any(|pinned| pinned == end_entity) {
            return Err(refused);
        }
        verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
        let Some((not_before, not_after)) = validity::parse(end_entity) else {
            return Err(refused);
        };
        let now = now.as_secs() as i64;
        if now < not_before.unix() {
            return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
        }
        if now > not_after.unix() {
            return Err(Error::InvalidCertificate(CertificateError::Expired));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
