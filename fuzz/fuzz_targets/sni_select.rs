//! SNI selection: `TlsTable::select` over arbitrary SNI strings, with a table of exact,
//! wildcard and (or not) default certificates, compared with a plain model of the rules:
//! the SNI (one trailing dot removed per dot, ASCII case ignored) picks an exact host, else
//! the longest wildcard suffix with at least one character in front of it (so
//! `*.example.com` never serves `example.com`), else the default. Also: the same SNI in
//! another case gives the same certificate, and every certificate offers ALPN h2 then
//! http/1.1.
//!
//! Input: the first byte's bit 0 = the table has a default certificate, bit 1 = an SNI is
//! sent; the rest (UTF-8) is the SNI, at most 255 bytes (a DNS name is at most 253; longer
//! inputs would only spend the run on hashing ever more suffixes).
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use weir_dataplane::HostMatch;
use weir_dataplane::tls::{ALPN, HostTls, TlsTable};

struct Input<'a> {
    sni: Option<&'a str>,
    with_default: bool,
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        let (&flags, rest) = data.split_first()?;
        if rest.len() > 255 {
            return None;
        }
        let sni = std::str::from_utf8(rest).ok()?;
        Some(Input { sni: (flags & 2 != 0).then_some(sni), with_default: flags & 1 != 0 })
    }
}

const EXACT: [&str; 3] = ["api.example.com", "example.com", "x.eu.example.com"];
const WILDCARD: [&str; 3] = [".example.com", ".eu.example.com", ".other.test"];

struct Tables {
    with_default: TlsTable,
    without_default: TlsTable,
    /// (host as in the table, its certificate), exact and wildcard.
    exact: Vec<(&'static str, Arc<HostTls>)>,
    wildcard: Vec<(&'static str, Arc<HostTls>)>,
    default: Arc<HostTls>,
}

/// One self-signed certificate (made once per process) under several names.
static TABLES: LazyLock<Tables> = LazyLock::new(|| {
    let cert = rcgen::generate_simple_self_signed(vec!["example.com".to_owned()])
        .unwrap_or_else(|e| panic!("rcgen: {e}"));
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let tls = |name: &str| {
        Arc::new(
            HostTls::from_pem(
                name.into(),
                cert_pem.as_bytes(),
                key_pem.as_bytes(),
                None,
                std::time::SystemTime::now(),
            )
            .unwrap_or_else(|e| panic!("from_pem: {e}")),
        )
    };
    let exact: Vec<_> = EXACT.iter().map(|h| (*h, tls(h))).collect();
    let wildcard: Vec<_> = WILDCARD.iter().map(|s| (*s, tls(&format!("*{s}")))).collect();
    let default = tls("default");
    let hosts = || {
        let e = exact.iter().map(|(h, t)| (HostMatch::Exact((*h).into()), Arc::clone(t)));
        let w = wildcard.iter().map(|(s, t)| (HostMatch::Wildcard((*s).into()), Arc::clone(t)));
        e.chain(w).collect::<Vec<_>>()
    };
    Tables {
        with_default: TlsTable::new(hosts(), Some(Arc::clone(&default))),
        without_default: TlsTable::new(hosts(), None),
        exact,
        wildcard,
        default,
    }
});

/// What the rules say `select` must return.
fn expected<'t>(t: &'t Tables, sni: Option<&str>, with_default: bool) -> Option<&'t Arc<HostTls>> {
    let default = with_default.then_some(&t.default);
    let Some(sni) = sni else { return default };
    let name = sni.trim_end_matches('.').to_ascii_lowercase();
    if let Some((_, tls)) = t.exact.iter().find(|(h, _)| *h == name) {
        return Some(tls);
    }
    t.wildcard
        .iter()
        .filter(|(s, _)| name.len() > s.len() && name.ends_with(*s))
        .max_by_key(|(s, _)| s.len())
        .map(|(_, tls)| tls)
        .or(default)
}

fn name(tls: Option<&Arc<HostTls>>) -> Option<&str> {
    tls.map(|t| &*t.name)
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let t = &*TABLES;
    let table = if input.with_default { &t.with_default } else { &t.without_default };
    let got = table.select(input.sni);
    let want = expected(t, input.sni, input.with_default);
    assert!(
        got.map(Arc::as_ptr) == want.map(Arc::as_ptr),
        "SNI {:?} (default: {}): selected {:?}, expected {:?}",
        input.sni,
        input.with_default,
        name(got),
        name(want)
    );
    if let Some(sni) = input.sni {
        for other in [sni.to_ascii_uppercase(), sni.to_ascii_lowercase()] {
            assert!(
                table.select(Some(&other)).map(Arc::as_ptr) == got.map(Arc::as_ptr),
                "SNI {sni:?} and {other:?} select different certificates"
            );
        }
    }
    if let Some(tls) = got {
        let alpn: Vec<&[u8]> = tls.config.alpn_protocols.iter().map(|p| p.as_slice()).collect();
        assert_eq!(alpn, ALPN, "ALPN of {}", tls.name);
    }
});
