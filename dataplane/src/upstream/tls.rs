//! TLS to upstream endpoints: the rustls client configuration of a BackendPolicy's `tls`.
//!
//! Built once per policy by the controller's compiler (pure: PEM in, configuration out, no
//! I/O), shared by every connection to the backend's endpoints. The server certificate is
//! verified against the policy's CA (`caSecretRef`) or the system roots
//! (`wellKnownCACertificates: System`, Mozilla's roots from `webpki-roots`), for
//! `hostname`, which is also the SNI sent. With `clientCertificateRef` the gateway presents
//! a client certificate (mTLS). ALPN offers `h2` for `protocol: H2`, `http/1.1` otherwise.

use std::sync::Arc;

use rustls::pki_types::ServerName;

use crate::snapshot::UpstreamProtocol;

/// Which certificate authorities verify the upstream's certificate.
#[derive(Debug, Clone, Copy)]
pub enum TlsRoots<'a> {
    /// PEM certificates (a Secret's `ca.crt`), one or more.
    Pem(&'a [u8]),
    /// The well-known public roots (`wellKnownCACertificates: System`).
    System,
}

/// A client certificate and its key, PEM (a `kubernetes.io/tls` Secret's `tls.crt` and
/// `tls.key`).
#[derive(Debug, Clone, Copy)]
pub struct ClientIdentity<'a> {
    /// The certificate chain, leaf first.
    pub chain: &'a [u8],
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: &'a [u8],
}

/// A compiled upstream TLS configuration.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    id: u64,
}

impl UpstreamTls {
    /// Builds the configuration: `roots` verify the server's certificate for `hostname`
    /// (also the SNI; an IP address is verified against the certificate's IP SANs), with
    /// an optional client certificate, offering ALPN for `protocol` (`H2` → `h2`, anything
    /// else → `http/1.1`). The error names what is wrong (no certificate in the CA PEM, a
    /// key that does not match, an invalid hostname…) without any key material.
    pub fn new(
        roots: TlsRoots<'_>,
        hostname: &str,
        client: Option<ClientIdentity<'_>>,
        protocol: UpstreamProtocol,
    ) -> Result<Self, String> {
        let _ = (roots, client, protocol);
        let server_name = ServerName::try_from(hostname.to_owned())
            .map_err(|e| format!("hostname {hostname:?}: {e}"))?;
        let _ = server_name;
        Err("upstream TLS is not built yet".to_owned())
    }

    /// The rustls client configuration.
    pub fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// The SNI sent and the name verified.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// A stable identity of the inputs (roots, hostname, client certificate, ALPN): pooled
    /// connections made with one configuration are never used for another.
    pub fn id(&self) -> u64 {
        self.id
    }
}
