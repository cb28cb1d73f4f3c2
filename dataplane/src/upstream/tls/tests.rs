//! `UpstreamTls::new` with rcgen-made material: what it accepts, the errors it gives (which
//! never quote key material), ALPN, and the identity used to key pooled connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::upstream::pool::testing::{Ca, Leaf};

fn build(
    ca: &str,
    hostname: &str,
    client: Option<&Leaf>,
    protocol: UpstreamProtocol,
) -> Result<UpstreamTls, String> {
    let client = client.map(|leaf| ClientIdentity {
        chain: leaf.cert_pem.as_bytes(),
        key: leaf.key_pem.as_bytes(),
    });
    UpstreamTls::new(TlsRoots::Pem(ca.as_bytes()), hostname, client, protocol)
}

fn err(result: Result<UpstreamTls, String>) -> String {
    match result {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    }
}

#[test]
fn a_ca_and_a_hostname_make_a_configuration_with_alpn_by_protocol() {
    let ca = Ca::new("upstream ca");
    let tls = build(&ca.pem(), "orders.internal", None, UpstreamProtocol::Http1).unwrap();
    assert_eq!(tls.config().alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert_eq!(tls.server_name().to_str(), "orders.internal");
    assert!(!tls.offers_h2());
    assert!(!tls.config().client_auth_cert_resolver.has_certs());

    let h2 = build(&ca.pem(), "orders.internal", None, UpstreamProtocol::H2).unwrap();
    assert_eq!(h2.config().alpn_protocols, vec![b"h2".to_vec()]);
    assert!(h2.offers_h2());

    // An IP address is a valid name (verified against the certificate's IP SANs).
    let ip = build(&ca.pem(), "127.0.0.1", None, UpstreamProtocol::Http1).unwrap();
    assert_eq!(ip.server_name().to_str(), "127.0.0.1");
}

#[test]
fn system_roots_need_no_pem() {
    let tls =
        UpstreamTls::new(TlsRoots::System, "example.com", None, UpstreamProtocol::Http1).unwrap();
    assert_eq!(tls.server_name().to_str(), "example.com");
    assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
}

#[test]
fn a_client_certificate_is_presented_when_its_key_matches() {
    let ca = Ca::new("upstream ca");
    let client = Ca::new("client ca").leaf(&["gateway.weir"]);
    let tls = build(&ca.pem(), "orders.internal", Some(&client), UpstreamProtocol::Http1).unwrap();
    assert!(tls.config().client_auth_cert_resolver.has_certs());
}

#[test]
fn bad_ca_pem_is_refused_with_the_reason() {
    let e = err(build("", "orders.internal", None, UpstreamProtocol::Http1));
    assert_eq!(e, "CA certificates (ca.crt): no PEM certificate found");
    let e = err(build("not a certificate", "orders.internal", None, UpstreamProtocol::Http1));
    assert_eq!(e, "CA certificates (ca.crt): no PEM certificate found");
    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    let e = err(build(broken, "orders.internal", None, UpstreamProtocol::Http1));
    assert!(e.starts_with("CA certificates (ca.crt): invalid PEM: "), "{e}");
    // Well-formed PEM around bytes that are no certificate.
    let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let e = err(build(junk, "orders.internal", None, UpstreamProtocol::Http1));
    assert!(e.starts_with("CA certificates (ca.crt): certificate 1 is not a usable CA"), "{e}");
}

#[test]
fn a_bad_hostname_is_refused_naming_it() {
    let ca = Ca::new("upstream ca");
    for bad in ["", "bad host", "orders..internal", "-x.example.com."] {
        let e = err(build(&ca.pem(), bad, None, UpstreamProtocol::Http1));
        assert!(e.starts_with(&format!("hostname {bad:?}: ")), "{e}");
        assert!(e.contains("expected a DNS name or an IP address"), "{e}");
    }
}

#[test]
fn a_client_key_that_does_not_match_is_refused_without_quoting_it() {
    let ca = Ca::new("upstream ca");
    let clients = Ca::new("client ca");
    let (a, b) = (clients.leaf(&["a.weir"]), clients.leaf(&["b.weir"]));
    let mismatched = Leaf { cert_pem: a.cert_pem.clone(), key_pem: b.key_pem.clone() };
    let e = err(build(&ca.pem(), "orders.internal", Some(&mismatched), UpstreamProtocol::Http1));
    assert!(e.starts_with("client key (tls.key) does not match the client certificate"), "{e}");

    let no_key = Leaf { cert_pem: a.cert_pem.clone(), key_pem: a.cert_pem.clone() };
    let e = err(build(&ca.pem(), "orders.internal", Some(&no_key), UpstreamProtocol::Http1));
    assert!(e.starts_with("client key (tls.key): no PEM private key found"), "{e}");

    // A damaged key: the error says so, and quotes none of it.
    let body: String = b.key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let damaged = b.key_pem.replace(&body[..8], "!!!!!!!!");
    let bad_key = Leaf { cert_pem: b.cert_pem.clone(), key_pem: damaged };
    let e = err(build(&ca.pem(), "orders.internal", Some(&bad_key), UpstreamProtocol::Http1));
    assert_eq!(e, "client key (tls.key): invalid PEM");
    for line in b.key_pem.lines().filter(|l| l.len() > 8 && !l.starts_with("-----")) {
        assert!(!e.contains(&line[..8]));
    }

    let no_cert = Leaf { cert_pem: String::new(), key_pem: a.key_pem.clone() };
    let e = err(build(&ca.pem(), "orders.internal", Some(&no_cert), UpstreamProtocol::Http1));
    assert_eq!(e, "client certificate (tls.crt): no PEM certificate found");
}

#[test]
fn the_identity_is_stable_and_changes_with_every_input() {
    let (ca, other_ca) = (Ca::new("a"), Ca::new("b"));
    let client = Ca::new("client ca").leaf(&["gateway.weir"]);
    let id = |ca: &Ca, host: &str, client: Option<&Leaf>, protocol| {
        build(&ca.pem(), host, client, protocol).unwrap().id()
    };
    let base = id(&ca, "orders.internal", None, UpstreamProtocol::Http1);
    assert_ne!(base, 0);
    assert_eq!(base, id(&ca, "orders.internal", None, UpstreamProtocol::Http1));
    // H2c offers http/1.1 as Http1 does: the same configuration.
    assert_eq!(base, id(&ca, "orders.internal", None, UpstreamProtocol::H2c));
    let others = [
        id(&other_ca, "orders.internal", None, UpstreamProtocol::Http1),
        id(&ca, "orders.internal.", None, UpstreamProtocol::Http1),
        id(&ca, "orders.internal", Some(&client), UpstreamProtocol::Http1),
        id(&ca, "orders.internal", None, UpstreamProtocol::H2),
        UpstreamTls::new(TlsRoots::System, "orders.internal", None, UpstreamProtocol::Http1)
            .unwrap()
            .id(),
    ];
    for (i, other) in others.iter().enumerate() {
        assert_ne!(*other, base, "input {i}");
    }
}

#[test]
fn debug_output_never_shows_the_client_key() {
    let leaf = Ca::new("client ca").leaf(&["gateway.weir"]);
    let identity = ClientIdentity { chain: leaf.cert_pem.as_bytes(), key: leaf.key_pem.as_bytes() };
    let shown = format!("{identity:?}");
    assert!(!shown.contains("PRIVATE"), "{shown}");
    assert!(shown.starts_with("ClientIdentity"), "{shown}");
}
