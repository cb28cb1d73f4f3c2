//! TLS at the edge: server certificates parsed and validated when the snapshot is compiled,
//! one rustls [`ServerConfig`] per served certificate, and selection by SNI.
//!
//! The listener (`crate::listener`) reads the ClientHello, asks the live snapshot's
//! [`TlsTable::select`] for the host's [`HostTls`] and finishes the handshake with its
//! config: nothing is parsed or looked up by name at handshake time. Every config shares
//! one session-ticket key and one session cache, so resumption survives reloads.

pub mod certs;
pub mod subject;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::SingleCertAndKey;

pub use certs::LeafInfo;
pub use subject::subject_of;

use crate::snapshot::HostMatch;

/// ALPN protocols offered to clients, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate or key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CertError(pub String);

/// One certificate the HTTPS listener can present, with its ready server config.
#[derive(Debug)]
pub struct HostTls {
    /// Stable identity of this certificate choice across reloads and rotations (the Secret
    /// `namespace/name`, plus the client CA's when mTLS is on). A request on a TLS
    /// connection whose `Host` selects a different identity than its SNI did is misdirected.
    pub name: Arc<str>,
    /// The server config for handshakes that select this certificate (ALPN, versions,
    /// resumption and client-certificate verification included).
    pub config: Arc<ServerConfig>,
    /// Whether clients must (`Some(true)`) or may (`Some(false)`) present a certificate
    /// signed by the configured client CA; `None` = no client certificates requested.
    pub client_auth: Option<bool>,
    /// What was checked of the leaf certificate (names, dates, subject).
    pub leaf: LeafInfo,
}

impl HostTls {
    /// Parses and checks a PEM certificate chain (leaf first) and private key at time
    /// `now` (see [`certs`] for every check; `now` is explicit so the compiler stays a pure
    /// function), and builds the server config. `client_ca` = (PEM CA bundle, required)
    /// turns on client-certificate verification; with `required` false, clients without a
    /// certificate are let through (a presented one must still verify).
    ///
    /// Only the compiler calls this: nothing is parsed at handshake time.
    pub fn from_pem(
        name: Arc<str>,
        cert_chain: &[u8],
        key: &[u8],
        client_ca: Option<(&[u8], bool)>,
        now: SystemTime,
    ) -> Result<Self, CertError> {
        let provider = provider();
        let checked = certs::check_server_cert(&provider, cert_chain, key, now)?;
        let verifier = match client_ca {
            Some((ca, required)) => {
                Some((certs::client_verifier(&provider, ca, !required)?, !required))
            }
            None => None,
        };
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| CertError(e.to_string()))?;
        let (builder, client_auth) = match verifier {
            Some((verifier, optional)) => {
                (builder.with_client_cert_verifier(verifier), Some(!optional))
            }
            None => (builder.with_no_client_auth(), None),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(checked.key)));
        finish(&mut config);
        Ok(HostTls { name, config: Arc::new(config), client_auth, leaf: checked.leaf })
    }

    /// Whether the certificate is (still) within its validity dates at `now`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        let now = match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(_) => 0,
        };
        (self.leaf.not_before..=self.leaf.not_after).contains(&now)
    }
}

/// The one crypto provider: aws-lc-rs.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// ALPN, shared ticket key and shared session cache on a server config.
fn finish(config: &mut ServerConfig) {
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    if let Some(ticketer) = ticketer() {
        config.ticketer = ticketer;
    }
    config.session_storage = session_cache();
}

/// One rotating ticket key for every config of the process (`None` if it cannot be made,
/// then resumption falls back to the session cache).
fn ticketer() -> Option<Arc<dyn ProducesTickets>> {
    static TICKETER: OnceLock<Option<Arc<dyn ProducesTickets>>> = OnceLock::new();
    TICKETER.get_or_init(|| rustls::crypto::aws_lc_rs::Ticketer::new().ok()).clone()
}

fn session_cache() -> Arc<dyn StoresServerSessions> {
    static CACHE: OnceLock<Arc<dyn StoresServerSessions>> = OnceLock::new();
    Arc::clone(CACHE.get_or_init(|| ServerSessionMemoryCache::new(16 * 1024)))
}

/// The certificates of the HTTPS listener by host name: exact names, wildcard suffixes, and
/// the default certificate for unknown or absent SNI.
#[derive(Debug, Default)]
pub struct TlsTable {
    exact: HashMap<Box<str>, Arc<HostTls>>,
    /// Keyed by the suffix with its leading dot (`.example.com` for `*.example.com`).
    wildcard: HashMap<Box<str>, Arc<HostTls>>,
    default: Option<Arc<HostTls>>,
}

impl TlsTable {
    /// A table of `hosts` (the first entry for a host wins) and the default certificate.
    pub fn new(hosts: Vec<(HostMatch, Arc<HostTls>)>, default: Option<Arc<HostTls>>) -> Self {
        let mut table = TlsTable { default, ..TlsTable::default() };
        for (host, tls) in hosts {
            match host {
                HostMatch::Exact(h) => table.exact.entry(h).or_insert(tls),
                HostMatch::Wildcard(s) => table.wildcard.entry(s).or_insert(tls),
            };
        }
        table
    }

    /// The table as JSON for `/debug/snapshot`: each host with its certificate's identity,
    /// subject, DNS names, validity and client-certificate mode. No key material.
    pub fn describe(&self) -> serde_json::Value {
        fn cert(tls: &HostTls) -> serde_json::Value {
            serde_json::json!({
                "certificate": &*tls.name,
                "subject": tls.leaf.subject,
                "dnsNames": tls.leaf.dns_names,
                "notBefore": certs::rfc3339(tls.leaf.not_before),
                "notAfter": certs::rfc3339(tls.leaf.not_after),
                "clientCertificates": match tls.client_auth {
                    None => "none",
                    Some(true) => "required",
                    Some(false) => "optional",
                },
            })
        }
        let mut hosts: Vec<(String, &Arc<HostTls>)> = self
            .exact
            .iter()
            .map(|(h, t)| (h.to_string(), t))
            .chain(self.wildcard.iter().map(|(s, t)| (format!("*{s}"), t)))
            .collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
        let hosts: Vec<serde_json::Value> = hosts
            .into_iter()
            .map(|(host, tls)| {
                let mut v = cert(tls);
                v["host"] = host.into();
                v
            })
            .collect();
        serde_json::json!({
            "hosts": hosts,
            "default": self.default.as_deref().map(cert),
        })
    }

    /// True when there is no certificate at all (the HTTPS listener is not needed).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }

    /// The certificate for a ClientHello's SNI: exact host, else the most specific
    /// wildcard, else the default; `None` = fail the handshake.
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<HostTls>> {
        let Some(sni) = sni else { return self.default.as_ref() };
        let sni = sni.trim_end_matches('.');
        let lower;
        let sni = if sni.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = sni.to_ascii_lowercase();
            lower.as_str()
        } else {
            sni
        };
        if let Some(tls) = self.exact.get(sni) {
            return Some(tls);
        }
        // Longest suffix first: `a.b.example.com` tries `.b.example.com`, then `.example.com`…
        // Each leaves at least one character in front, as in the router: `*.example.com`
        // never serves `.example.com` (found by fuzz/fuzz_targets/sni_select.rs).
        let mut rest = sni;
        while let Some(dot) = rest.find('.') {
            let suffix = &rest[dot..];
            if suffix.len() > 1
                && suffix.len() < sni.len()
                && let Some(tls) = self.wildcard.get(suffix)
            {
                return Some(tls);
            }
            rest = &rest[dot + 1..];
        }
        self.default.as_ref()
    }
}

/// What the TLS layer learnt about a client connection, for every request on it.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// [`HostTls::name`] of the certificate the handshake selected.
    pub certificate: Option<Arc<str>>,
    /// The SNI the client sent, lower-case.
    pub sni: Option<Box<str>>,
    /// The subject of the verified client certificate (RFC 4514 text), only when one was
    /// presented and verified.
    pub client_cert_subject: Option<http::HeaderValue>,
}

#[cfg(test)]
mod tests;
