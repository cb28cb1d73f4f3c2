//! Certificate validation with rcgen-made material (and the `openssl` CLI for PKCS#1 and
//! SEC1 keys), and real rustls handshakes in memory against the configs built.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConnection};

use super::*;

fn name(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn params(cn: &str, sans: &[&str]) -> CertificateParams {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = params(cn, &[]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    p
}

/// A CA: its PEM and an issuer to sign with.
struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let p = ca_params(cn);
    let cert = p.self_signed(&key).unwrap();
    Ca { pem: cert.pem(), der: cert.der().clone(), issuer: Issuer::new(p, key) }
}

/// A leaf for `sans` signed by `ca` with a key of `alg`: (cert PEM, key PEM (PKCS#8)).
fn leaf(ca: &Ca, sans: &[&str], alg: &'static SignatureAlgorithm) -> (String, String) {
    let key = KeyPair::generate_for(alg).unwrap();
    let cert = params(sans[0], sans).signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn build(cert: &str, key: &str) -> Result<HostTls, CertError> {
    HostTls::from_pem(name("ns/tls"), cert.as_bytes(), key.as_bytes(), None, now())
}

fn err(r: Result<HostTls, CertError>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.0,
    }
}

/// Runs a TLS handshake in memory; returns the server side once both are done.
fn handshake(
    server: Arc<ServerConfig>,
    client: ClientConfig,
    sni: &str,
) -> Result<ServerConnection, rustls::Error> {
    let mut s = ServerConnection::new(server)?;
    let mut c =
        ClientConnection::new(Arc::new(client), ServerName::try_from(sni.to_owned()).unwrap())?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        s.read_tls(&mut buf.as_slice()).unwrap();
        s.process_new_packets()?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        c.read_tls(&mut buf.as_slice()).unwrap();
        c.process_new_packets()?;
        if !s.is_handshaking() && !c.is_handshaking() {
            return Ok(s);
        }
    }
    panic!("handshake did not finish in 20 rounds")
}

fn client_config(
    root: &CertificateDer<'static>,
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
}

#[test]
fn ecdsa_ed25519_and_rsa_keys_are_accepted_and_serve_a_handshake() {
    let ca = ca("Test CA");
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
        &rcgen::PKCS_RSA_SHA256,
    ] {
        let (cert, key) = leaf(&ca, &["shop.example.com"], alg);
        let tls = build(&cert, &key).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(tls.client_auth, None);
        assert_eq!(&*tls.leaf.dns_names, &[Box::<str>::from("shop.example.com")]);
        assert_eq!(tls.leaf.subject, "CN=shop.example.com");
        assert!(tls.valid_at(now()));
        let mut client = client_config(&ca.der).with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        let server = handshake(Arc::clone(&tls.config), client, "shop.example.com").unwrap();
        assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
    }
}

/// Converts a PKCS#8 key to its traditional form (PKCS#1 for RSA, SEC1 for EC) with the
/// `openssl` CLI.
fn traditional(pkcs8: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["pkey", "-traditional"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl CLI (apt-get install openssl)");
    child.stdin.take().unwrap().write_all(pkcs8.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn pkcs1_rsa_and_sec1_ec_keys_are_accepted() {
    let ca = ca("Test CA");
    let (cert, key) = leaf(&ca, &["a.example.com"], &rcgen::PKCS_RSA_SHA256);
    let pkcs1 = traditional(&key);
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{}", &pkcs1[..40]);
    build(&cert, &pkcs1).unwrap();
    let (cert, key) = leaf(&ca, &["a.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let sec1 = traditional(&key);
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{}", &sec1[..40]);
    build(&cert, &sec1).unwrap();
}

#[test]
fn an_expired_or_not_yet_valid_leaf_is_rejected_with_its_dates() {
    let ca = ca("Test CA");
    let key = KeyPair::generate().unwrap();
    let mut p = params("old.example.com", &["old.example.com"]);
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2025, 1, 1);
    let cert = p.signed_by(&key, &ca.issuer).unwrap().pem();
    let e = err(build(&cert, &key.serialize_pem()));
    assert_eq!(e, "tls.crt: certificate expired at 2025-01-01T00:00:00Z");
    // The same certificate at a time inside its validity is fine: `now` is explicit.
    let inside = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let tls =
        HostTls::from_pem(name("x"), cert.as_bytes(), key.serialize_pem().as_bytes(), None, inside)
            .unwrap();
    assert!(tls.valid_at(inside) && !tls.valid_at(now()));

    p.not_before = date_time_ymd(2999, 6, 30);
    p.not_after = date_time_ymd(3000, 1, 1);
    let cert = p.signed_by(&key, &ca.issuer).unwrap().pem();
    let e = err(build(&cert, &key.serialize_pem()));
    assert_eq!(e, "tls.crt: certificate is not valid before 2999-06-30T00:00:00Z");
}

#[test]
fn a_key_that_does_not_match_the_leaf_is_rejected() {
    let ca = ca("Test CA");
    let (cert, _) = leaf(&ca, &["shop.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let (_, other_key) = leaf(&ca, &["shop.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let e = err(build(&cert, &other_key));
    assert!(e.starts_with("tls.key does not match the certificate in tls.crt"), "{e}");
    assert!(e.contains("CN=shop.example.com"), "{e}");
    assert!(!e.contains("PRIVATE"), "{e}");
}

#[test]
fn the_chain_must_go_from_the_leaf_to_each_issuer() {
    let root = ca("Root CA");
    let inter_key = KeyPair::generate().unwrap();
    let inter_params = ca_params("Intermediate CA");
    let inter = inter_params.signed_by(&inter_key, &root.issuer).unwrap();
    let inter = Ca {
        pem: inter.pem(),
        der: inter.der().clone(),
        issuer: Issuer::new(inter_params, inter_key),
    };
    let (cert, key) = leaf(&inter, &["shop.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);

    // Leaf, then its issuer: served, and a client trusting only the root verifies it.
    let tls = build(&format!("{cert}{}", inter.pem), &key).unwrap();
    handshake(
        Arc::clone(&tls.config),
        client_config(&root.der).with_no_client_auth(),
        "shop.example.com",
    )
    .unwrap();
    // Leaf, intermediate, root is fine too.
    build(&format!("{cert}{}{}", inter.pem, root.pem), &key).unwrap();

    // Issuer first.
    let e = err(build(&format!("{}{cert}", inter.pem), &key));
    assert_eq!(
        e,
        "tls.crt: the chain is in the wrong order: certificate 2 (CN=shop.example.com) was \
         issued by certificate 1 (CN=Intermediate CA); list the leaf first, then each issuer"
    );
    // A certificate that is not the leaf's issuer.
    let e = err(build(&format!("{cert}{}", root.pem), &key));
    assert!(
        e.starts_with("tls.crt: certificate 2 (CN=Root CA) is not the issuer of certificate 1"),
        "{e}"
    );
    // Same name, different key: the signature does not verify.
    let impostor = ca("Intermediate CA");
    let e = err(build(&format!("{cert}{}", impostor.pem), &key));
    assert!(e.contains("is not signed by certificate 2 (same name, different key)"), "{e}");
}

#[test]
fn garbage_pem_is_rejected_with_the_entry_named() {
    let ca = ca("Test CA");
    let (cert, key) = leaf(&ca, &["shop.example.com"], &rcgen::PKCS_ED25519);
    assert_eq!(err(build("hello", &key)), "tls.crt: no PEM certificate found");
    assert_eq!(err(build("", &key)), "tls.crt: no PEM certificate found");
    let e = err(build("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", &key));
    assert!(e.starts_with("tls.crt: certificate 1 is not a valid X.509 certificate"), "{e}");
    let e = err(build("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n", &key));
    assert!(e.starts_with("tls.crt: invalid PEM"), "{e}");
    let e = err(build(&cert, "not a key"));
    assert!(e.starts_with("tls.key: no PEM private key found"), "{e}");
    // A key in the certificate entry and vice versa.
    assert_eq!(err(build(&key, &cert)), "tls.crt: no PEM certificate found");
    let e = err(build(&cert, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"));
    assert!(e.starts_with("tls.key: not a usable private key"), "{e}");
}

#[test]
fn client_certificates_are_verified_against_the_client_ca() {
    let server_ca = ca("Server CA");
    let (cert, key) = leaf(&server_ca, &["partners.example.com"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let client_ca = ca("Partners CA");
    let client_key = KeyPair::generate().unwrap();
    let mut p = params("client", &[]);
    // Encoded as O=Partners, CN=client: RFC 4514 text lists the last RDN first.
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Partners");
    dn.push(DnType::CommonName, "client");
    p.distinguished_name = dn;
    let client_cert = p.signed_by(&client_key, &client_ca.issuer).unwrap();
    let chain = vec![client_cert.der().clone()];
    let client_key_der = PrivateKeyDer::try_from(client_key.serialize_der()).unwrap();

    for optional in [false, true] {
        let tls = HostTls::from_pem(
            name("ns/tls+ns/ca"),
            cert.as_bytes(),
            key.as_bytes(),
            Some((client_ca.pem.as_bytes(), !optional)),
            now(),
        )
        .unwrap();
        assert_eq!(tls.client_auth, Some(!optional));
        let with_cert = client_config(&server_ca.der)
            .with_client_auth_cert(chain.clone(), client_key_der.clone_key())
            .unwrap();
        let server = handshake(Arc::clone(&tls.config), with_cert, "partners.example.com").unwrap();
        let peer = server.peer_certificates().unwrap();
        assert_eq!(subject_of(&peer[0]).unwrap(), "CN=client,O=Partners");

        let without = client_config(&server_ca.der).with_no_client_auth();
        let result = handshake(Arc::clone(&tls.config), without, "partners.example.com");
        assert_eq!(result.is_ok(), optional, "optional={optional}");
        if let Ok(server) = result {
            assert!(server.peer_certificates().is_none());
        }
    }
    // A client certificate from another CA never verifies.
    let tls = HostTls::from_pem(
        name("x"),
        cert.as_bytes(),
        key.as_bytes(),
        Some((client_ca.pem.as_bytes(), false)),
        now(),
    )
    .unwrap();
    let stranger = ca("Someone Else");
    let stranger_key = KeyPair::generate().unwrap();
    let stranger_cert = params("intruder", &[]).signed_by(&stranger_key, &stranger.issuer).unwrap();
    let client = client_config(&server_ca.der)
        .with_client_auth_cert(
            vec![stranger_cert.der().clone()],
            PrivateKeyDer::try_from(stranger_key.serialize_der()).unwrap(),
        )
        .unwrap();
    assert!(handshake(Arc::clone(&tls.config), client, "partners.example.com").is_err());

    let e =
        HostTls::from_pem(name("x"), cert.as_bytes(), key.as_bytes(), Some((b"junk", true)), now())
            .err()
            .unwrap();
    assert_eq!(e.0, "ca.crt: no PEM certificate found");
}

#[test]
fn names_cover_exact_hosts_and_wildcards_one_label_deep() {
    let info = LeafInfo {
        dns_names: vec!["shop.example.com".into(), "*.api.example.com".into()].into(),
        ..LeafInfo::default()
    };
    let exact = |h: &str| HostMatch::Exact(h.into());
    let wild = |s: &str| HostMatch::Wildcard(s.into());
    assert!(info.covers(&exact("shop.example.com")));
    assert!(info.covers(&exact("v1.api.example.com")));
    assert!(!info.covers(&exact("a.v1.api.example.com")));
    assert!(!info.covers(&exact("api.example.com")));
    assert!(!info.covers(&exact("example.com")));
    assert!(info.covers(&wild(".api.example.com")));
    assert!(!info.covers(&wild(".example.com")));
}

#[test]
fn rfc3339_dates() {
    assert_eq!(certs::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(certs::rfc3339(1_735_689_600), "2025-01-01T00:00:00Z");
    assert_eq!(certs::rfc3339(951_825_599), "2000-02-29T11:59:59Z");
    assert_eq!(certs::rfc3339(-1), "1969-12-31T23:59:59Z");
}

#[test]
fn the_table_describes_hosts_and_certificates_without_key_material() {
    let ca = ca("Test CA");
    let (cert, key) = leaf(&ca, &["shop.example.com", "*.shop.example.com"], &rcgen::PKCS_ED25519);
    let tls = Arc::new(build(&cert, &key).unwrap());
    let table = TlsTable::new(
        vec![
            (HostMatch::Wildcard(".shop.example.com".into()), Arc::clone(&tls)),
            (HostMatch::Exact("shop.example.com".into()), Arc::clone(&tls)),
        ],
        Some(Arc::clone(&tls)),
    );
    let v = table.describe();
    assert_eq!(v["hosts"][0]["host"], "*.shop.example.com");
    assert_eq!(v["hosts"][1]["host"], "shop.example.com");
    assert_eq!(v["hosts"][1]["certificate"], "ns/tls");
    assert_eq!(v["hosts"][1]["clientCertificates"], "none");
    assert_eq!(v["default"]["subject"], "CN=shop.example.com");
    let text = v.to_string();
    assert!(!text.contains("PRIVATE") && !text.contains("BEGIN"), "{text}");
}

/// A self-signed certificate and key made by the `openssl` CLI with `newkey` (e.g.
/// `rsa:1024`, or `ec` with `-pkeyopt ec_paramgen_curve:P-521`).
fn openssl_self_signed(newkey: &[&str]) -> (String, String) {
    let dir = std::env::temp_dir().join(format!(
        "weir-tls-openssl-{}-{}",
        std::process::id(),
        newkey.join("-").replace([':', '/'], "_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("k.pem"), dir.join("c.pem"));
    let mut args = vec!["req", "-x509", "-nodes", "-days", "3", "-subj", "/CN=a.test"];
    args.extend(["-addext", "subjectAltName=DNS:a.test", "-newkey"]);
    args.extend(newkey);
    let status = std::process::Command::new("openssl")
        .args(args)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl CLI (apt-get install openssl)");
    assert!(status.success());
    let out = (std::fs::read_to_string(&cert).unwrap(), std::fs::read_to_string(&key).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn weak_or_unsupported_keys_are_rejected_with_what_is_supported() {
    let (cert, key) = openssl_self_signed(&["rsa:1024"]);
    let e = err(build(&cert, &key));
    assert!(
        e.starts_with("tls.key: not a usable private key") && e.contains("RSA (2048 bits or more)"),
        "{e}"
    );
    for newkey in [&["rsa:2048"][..], &["ec", "-pkeyopt", "ec_paramgen_curve:P-521"]] {
        let (cert, key) = openssl_self_signed(newkey);
        build(&cert, &key).unwrap_or_else(|e| panic!("{newkey:?}: {e}"));
    }
}
