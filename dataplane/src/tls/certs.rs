//! Validation of a certificate Secret's material when the snapshot is compiled: PEM
//! parsing, the chain's order and signatures, validity dates against an explicit `now`,
//! the private key (RSA, ECDSA P-256/P-384/P-521, Ed25519 in PKCS#8, PKCS#1 or SEC1) matching the
//! leaf, and the client CA bundle of mTLS. Every error says which entry (`tls.crt`,
//! `tls.key`, `ca.crt`) is wrong and how; none contains key material.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::CertError;
use super::subject::name_to_string;
use crate::snapshot::HostMatch;

/// What the compiler checked of a leaf certificate, kept for host-name checks and views.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafInfo {
    /// The subject, RFC 4514 text (`CN=shop.example.com,O=Shop`).
    pub subject: String,
    /// The DNS names of the subjectAltName extension, lower-case (`*.example.com` kept as is).
    pub dns_names: Box<[Box<str>]>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl LeafInfo {
    /// True when a client connecting to `host` accepts this certificate's names: an exact
    /// host needs the same DNS name or a wildcard one label up (`*.example.com` covers
    /// `a.example.com`); a wildcard host needs the same wildcard name.
    pub fn covers(&self, host: &HostMatch) -> bool {
        match host {
            HostMatch::Exact(h) => self.dns_names.iter().any(|n| {
                **n == **h
                    || n.strip_prefix('*').is_some_and(|suffix| {
                        h.find('.').is_some_and(|dot| dot > 0 && &h[dot..] == suffix)
                    })
            }),
            HostMatch::Wildcard(suffix) => {
                self.dns_names.iter().any(|n| n.strip_prefix('*') == Some(&**suffix))
            }
        }
    }
}

/// The parsed, checked server certificate: the rustls key pair and what was learnt.
pub(super) struct Checked {
    pub(super) key: Arc<CertifiedKey>,
    pub(super) leaf: LeafInfo,
}

/// Parses and checks a PEM chain (leaf first) and its private key at time `now`.
pub(super) fn check_server_cert(
    provider: &CryptoProvider,
    cert_chain: &[u8],
    key: &[u8],
    now: SystemTime,
) -> Result<Checked, CertError> {
    let chain = pem_certs("tls.crt", cert_chain)?;
    let parsed = parse_all("tls.crt", &chain)?;
    check_order(&parsed)?;
    let now = unix_seconds(now);
    for (i, cert) in parsed.iter().enumerate() {
        check_dates(i, cert, now)?;
    }
    let Some(leaf) = parsed.first() else {
        return Err(CertError("tls.crt: no PEM certificate found".into()));
    };
    let leaf_info = LeafInfo {
        subject: name_to_string(leaf.subject()),
        dns_names: dns_names(leaf),
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
    };
    drop(parsed);

    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => CertError(
            "tls.key: no PEM private key found (expected a PKCS#8 `PRIVATE KEY`, PKCS#1 \
             `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY` block)"
                .into(),
        ),
        e => CertError(format!("tls.key: invalid PEM: {e}")),
    })?;
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        CertError(format!(
            "tls.key: not a usable private key ({e}); supported: RSA (2048 bits or more), \
             ECDSA P-256/P-384/P-521, Ed25519"
        ))
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertError(format!(
                "tls.key does not match the certificate in tls.crt (the first certificate, \
                 subject {:?}, must be the one whose private key is tls.key)",
                leaf_info.subject
            )));
        }
        Err(e) => {
            return Err(CertError(format!("tls.key: cannot check that it matches tls.crt: {e}")));
        }
    }
    Ok(Checked { key: Arc::new(certified), leaf: leaf_info })
}

/// The client-certificate verifier for a PEM CA bundle (`ca.crt`); `optional` lets clients
/// without a certificate through.
pub(super) fn client_verifier(
    provider: &Arc<CryptoProvider>,
    ca: &[u8],
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, CertError> {
    let certs = pem_certs("ca.crt", ca)?;
    parse_all("ca.crt", &certs)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            CertError(format!("ca.crt: certificate {}: not a usable CA: {e}", i + 1))
        })?;
    }
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let builder = if optional { builder.allow_unauthenticated() } else { builder };
    builder.build().map_err(|e| CertError(format!("ca.crt: {e}")))
}

fn pem_certs(entry: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError(format!("{entry}: invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CertError(format!("{entry}: no PEM certificate found")));
    }
    Ok(certs)
}

fn parse_all<'a>(
    entry: &str,
    certs: &'a [CertificateDer<'static>],
) -> Result<Vec<X509Certificate<'a>>, CertError> {
    certs
        .iter()
        .enumerate()
        .map(|(i, der)| match X509Certificate::from_der(der) {
            Ok((_, cert)) => Ok(cert),
            Err(e) => Err(CertError(format!(
                "{entry}: certificate {} is not a valid X.509 certificate: {e}",
                i + 1
            ))),
        })
        .collect()
}

/// Each certificate must be issued (named and signed) by the next one.
fn check_order(chain: &[X509Certificate<'_>]) -> Result<(), CertError> {
    for (i, pair) in chain.windows(2).enumerate() {
        let [cert, next] = pair else { continue };
        let (n, m) = (i + 1, i + 2);
        if cert.issuer().as_raw() != next.subject().as_raw() {
            if next.issuer().as_raw() == cert.subject().as_raw() {
                return Err(CertError(format!(
                    "tls.crt: the chain is in the wrong order: certificate {m} ({}) was \
                     issued by certificate {n} ({}); list the leaf first, then each issuer",
                    name_to_string(next.subject()),
                    name_to_string(cert.subject()),
                )));
            }
            return Err(CertError(format!(
                "tls.crt: certificate {m} ({}) is not the issuer of certificate {n} (issued by \
                 {}); list the leaf first, then each issuer",
                name_to_string(next.subject()),
                name_to_string(cert.issuer()),
            )));
        }
        match cert.verify_signature(Some(next.public_key())) {
            Ok(()) | Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => {}
            Err(_) => {
                return Err(CertError(format!(
                    "tls.crt: certificate {n} ({}) is not signed by certificate {m} (same \
                     name, different key)",
                    name_to_string(cert.subject()),
                )));
            }
        }
    }
    Ok(())
}

fn check_dates(i: usize, cert: &X509Certificate<'_>, now: i64) -> Result<(), CertError> {
    let which = if i == 0 {
        "certificate".to_owned()
    } else {
        format!("certificate {} ({})", i + 1, name_to_string(cert.subject()))
    };
    let (not_before, not_after) =
        (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
    if now > not_after {
        return Err(CertError(format!("tls.crt: {which} expired at {}", rfc3339(not_after))));
    }
    if now < not_before {
        return Err(CertError(format!(
            "tls.crt: {which} is not valid before {}",
            rfc3339(not_before)
        )));
    }
    Ok(())
}

fn dns_names(cert: &X509Certificate<'_>) -> Box<[Box<str>]> {
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Box::default() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => {
                Some(name.trim_end_matches('.').to_ascii_lowercase().into())
            }
            _ => None,
        })
        .collect()
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Seconds since the Unix epoch as RFC 3339 UTC, e.g. `2025-01-01T00:00:00Z`.
pub fn rfc3339(seconds: i64) -> String {
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
