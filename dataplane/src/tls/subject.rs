//! The subject of a certificate as RFC 4514 text (`CN=client,O=Partners`): what
//! `X-Client-Cert-Subject` and `${client_cert_subject}` carry for a verified client
//! certificate.

use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::ToDer;
use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

/// The subject of a DER certificate as RFC 4514 text (`CN=client,O=Partners`), or `None`
/// when it does not parse. Call it only for a certificate the TLS handshake verified.
pub fn subject_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    Some(name_to_string(cert.subject()))
}

/// A distinguished name as RFC 4514 text: RDNs from the last to the first, `,` between
/// them, `+` inside a multi-valued RDN; known attributes by short name (`CN`, `O`, `OU`,
/// `C`, `L`, `ST`, `DC`, `UID`…), others by dotted OID with the value as `#` hex DER;
/// special and control characters escaped, so the result is a valid header value.
pub fn name_to_string(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type();
            let short = oid2abbrev(oid, oid_registry()).ok().filter(|s| is_descr(s));
            match (short, attr.as_str()) {
                (Some(short), Ok(value)) => {
                    out.push_str(short);
                    out.push('=');
                    escape_value(value, &mut out);
                }
                _ => {
                    out.push_str(&oid.to_id_string());
                    out.push_str("=#");
                    for b in attr.attr_value().to_der_vec().unwrap_or_default() {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    out
}

/// A `descr` of RFC 4512: a letter, then letters, digits and hyphens.
fn is_descr(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// RFC 4514 section 2.4 escaping, plus control characters as `\XX` so the text is a
/// valid HTTP header value.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    use super::*;

    fn cert_with(dn: DistinguishedName) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn subject_is_rfc4514_text_most_specific_first() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "DE");
        dn.push(DnType::OrganizationName, "Partners");
        dn.push(DnType::CommonName, "client");
        assert_eq!(subject_of(&cert_with(dn)).unwrap(), "CN=client,O=Partners,C=DE");
    }

    #[test]
    fn special_characters_are_escaped_and_the_result_is_a_header_value() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Acme, Inc.");
        dn.push(DnType::CommonName, " #lead+\"x\"\n");
        let subject = subject_of(&cert_with(dn)).unwrap();
        assert_eq!(subject, r#"CN=\ #lead\+\"x\"\0A,O=Acme\, Inc."#);
        assert!(http::HeaderValue::from_str(&subject).is_ok());
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(subject_of(&CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff])), None);
    }
}
