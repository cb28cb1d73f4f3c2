//! The subject of a verified client certificate, as text for `X-Client-Cert-Subject` and
//! `${client_cert_subject}`.
//!
//! Minimal version on the listener branch (the TLS branch owns the final one).

use rustls::pki_types::CertificateDer;

/// The subject distinguished name of `cert` as RFC 4514-style text (`CN=alice, O=Partners`),
/// or `None` when the certificate cannot be parsed or its subject is empty.
pub fn subject_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject().to_string();
    (!subject.is_empty()).then_some(subject)
}
