//! TLS to upstream endpoints: the rustls client configuration of a BackendPolicy's `tls`.
//!
//! Built once per policy by the controller's compiler (pure: PEM in, configuration out, no
//! I/O), shared by every connection to the backend's endpoints. The server certificate is
//! verified against the policy's CA (`caSecretRef`) or the system roots
//! (`wellKnownCACertificates: System`, Mozilla's roots from `webpki-roots`), for
//! `hostname`, which is also the SNI sent. With `clientCertificateRef` the gateway presents
//! a client certificate (mTLS). ALPN offers `h2` for `protocol: H2`, `http/1.1` otherwise.
//! TLS 1.3 and 1.2 only, with the process's one crypto provider (aws-lc-rs).

use std::sync::Arc;

use aws_lc_rs::digest;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore};

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
#[derive(Clone, Copy)]
pub struct ClientIdentity<'a> {
    /// The certificate chain, leaf first.
    pub chain: &'a [u8],
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: &'a [u8],
}

impl std::fmt::Debug for ClientIdentity<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientIdentity").field("chain_len", &self.chain.len()).finish()
    }
}

/// A compiled upstream TLS configuration.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    id: u64,
}

/// ALPN protocol id of HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
const ALPN_HTTP11: &[u8] = b"http/1.1";

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
        let server_name = ServerName::try_from(hostname.to_owned()).map_err(|e| {
            format!("hostname {hostname:?}: {e} (expected a DNS name or an IP address)")
        })?;
        let alpn = match protocol {
            UpstreamProtocol::H2 => ALPN_H2,
            UpstreamProtocol::Http1 | UpstreamProtocol::H2c => ALPN_HTTP11,
        };

        let mut hash = digest::Context::new(&digest::SHA256);
        let store = match roots {
            TlsRoots::Pem(pem) => {
                hash_part(&mut hash, b"ca", pem);
                ca_store(pem)?
            }
            TlsRoots::System => {
                hash_part(&mut hash, b"system", b"");
                RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
            }
        };
        hash_part(&mut hash, b"hostname", hostname.as_bytes());
        hash_part(&mut hash, b"alpn", alpn);

        let provider = crate::tls::provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(store);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                // The chain identifies the key (the key must match its leaf): the key's
                // bytes never go into the identity.
                hash_part(&mut hash, b"client", identity.chain);
                let certified = client_key(&provider, identity)?;
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
            }
        };
        config.alpn_protocols = vec![alpn.to_vec()];

        let digest = hash.finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        // Never 0: that is the plain transport's key in the pools.
        let id = u64::from_be_bytes(first).max(1);
        Ok(UpstreamTls { config: Arc::new(config), server_name, id })
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
    /// connections made with one configuration are never used for another. Never 0.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// True when the configuration offers HTTP/2 (ALPN `h2`).
    pub fn offers_h2(&self) -> bool {
        self.config.alpn_protocols.iter().any(|p| p == ALPN_H2)
    }
}

/// Feeds one length-prefixed, labelled input to the identity hash (so that moving bytes
/// from one input to the next changes the identity).
fn hash_part(hash: &mut digest::Context, label: &[u8], bytes: &[u8]) {
    hash.update(label);
    hash.update(&(bytes.len() as u64).to_be_bytes());
    hash.update(bytes);
}

/// The certificates of a PEM bundle; `what` names it in errors.
fn pem_certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: invalid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate found"));
    }
    Ok(certs)
}

/// The trust anchors of a CA PEM bundle.
fn ca_store(pem: &[u8]) -> Result<RootCertStore, String> {
    const WHAT: &str = "CA certificates (ca.crt)";
    let mut store = RootCertStore::empty();
    for (i, cert) in pem_certs(WHAT, pem)?.into_iter().enumerate() {
        store
            .add(cert)
            .map_err(|e| format!("{WHAT}: certificate {} is not a usable CA: {e}", i + 1))?;
    }
    Ok(store)
}

/// The client certificate chain and its key, checked to match.
fn client_key(
    provider: &rustls::crypto::CryptoProvider,
    identity: ClientIdentity<'_>,
) -> Result<CertifiedKey, String> {
    let chain = pem_certs("client certificate (tls.crt)", identity.chain)?;
    // The PEM error's details could quote the key file: only its kind is said.
    let key = PrivateKeyDer::from_pem_slice(identity.key).map_err(|e| match e {
        pem::Error::NoItemsFound => "client key (tls.key): no PEM private key found (expected \
                                     a PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 \
                                     `EC PRIVATE KEY` block)"
            .to_owned(),
        _ => "client key (tls.key): invalid PEM".to_owned(),
    })?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        format!(
            "client key (tls.key): not a usable private key ({e}); supported: RSA (2048 bits \
             or more), ECDSA P-256/P-384/P-521, Ed25519"
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err("client key (tls.key) does not match the client certificate (the first \
             certificate of tls.crt must be the one whose private key is tls.key)"
                .to_owned())
        }
        Err(e) => Err(format!("client key (tls.key): cannot check that it matches tls.crt: {e}")),
    }
}

#[cfg(test)]
mod tests;
