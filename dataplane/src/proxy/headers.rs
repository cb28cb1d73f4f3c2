//! Header handling between client and upstream: hop-by-hop removal and `X-Forwarded-*`.

use std::net::{IpAddr, Ipv4Addr};

use http::HeaderMap;
use http::header::{
    CONNECTION, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): every header named in `Connection`, then
/// `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE` (unless it is exactly `trailers`,
/// which may be forwarded), `Trailer`, `Transfer-Encoding`, `Upgrade`,
/// `Proxy-Authenticate` and `Proxy-Authorization`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    const HOP: [HeaderName; 7] = [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ];
    // One scan over the names; remove only what is present (usually just `Connection`).
    let (mut connection, mut te, mut present) = (false, false, 0u8);
    for name in headers.keys() {
        if *name == CONNECTION {
            connection = true;
        } else if *name == TE {
            te = true;
        } else if let Some(i) = HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if connection {
        // `keep-alive` (the usual token) names a header of the fixed list below, so it costs
        // no map lookup; other tokens are collected only when they name a header that is
        // present (a lookup by `&str` does not allocate).
        let tokens = || {
            headers
                .get_all(CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|name| !name.is_empty() && !name.eq_ignore_ascii_case("keep-alive"))
        };
        if tokens().any(|name| headers.contains_key(name)) {
            let named: Vec<HeaderName> = tokens()
                .filter(|name| headers.contains_key(*name))
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect();
            for name in named {
                headers.remove(name);
            }
        }
        headers.remove(CONNECTION);
    }
    for (i, name) in HOP.into_iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if te && let Some(v) = headers.get(TE) {
        let only_trailers = headers.get_all(TE).iter().count() == 1
            && v.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("trailers"));
        if !only_trailers {
            headers.remove(TE);
        }
    }
}

/// Removes every `X-Consumer-*` header and `X-Client-Cert-Subject` a client sent: only
/// the gateway sets identity headers. Allocates only when such a header is present.
pub fn remove_identity_headers(headers: &mut HeaderMap, configured: &[HeaderName]) {
    fn is_identity(name: &HeaderName) -> bool {
        let name = name.as_str();
        name.starts_with("x-c")
            && (name.starts_with("x-consumer-") || name == "x-client-cert-subject")
    }
    for name in configured {
        headers.remove(name);
    }
    if !headers.keys().any(is_identity) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| is_identity(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// The client's address as `X-Forwarded-For` text (an IPv4-mapped IPv6 address as plain
/// IPv4): made once per client connection, shared by its requests.
pub fn forwarded_for(client: IpAddr) -> HeaderValue {
    let ip = match client.to_canonical() {
        IpAddr::V4(v4) => ipv4_text(v4),
        other => other.to_string(),
    };
    HeaderValue::from_maybe_shared(bytes::Bytes::from(ip))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Sets `X-Forwarded-For` (the client's address, from [`forwarded_for`], appended to any
/// incoming list), `X-Forwarded-Proto` and `X-Forwarded-Host` (the host the client asked
/// for).
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &'static str,
    host: &HeaderValue,
) {
    let xff = match headers.get(X_FORWARDED_FOR) {
        None => Some(client.clone()),
        Some(_) => {
            let mut joined = String::new();
            for v in headers.get_all(X_FORWARDED_FOR) {
                if let Ok(s) = v.to_str() {
                    let s = s.trim();
                    if !s.is_empty() {
                        joined.push_str(s);
                        joined.push_str(", ");
                    }
                }
            }
            joined.push_str(client.to_str().unwrap_or("unknown"));
            HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
        }
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR, xff);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if !host.is_empty() {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// Dotted-quad text of an IPv4 address without `core::fmt` (the common client address:
/// formatting it through `Display` was about 3% of weir's instructions per request).
fn ipv4_text(v4: Ipv4Addr) -> String {
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (k, octet) in v4.octets().into_iter().enumerate() {
        if k > 0 {
            buf[n] = b'.';
            n += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for d in &digits[skip..] {
            buf[n] = b'0' + d;
            n += 1;
        }
    }
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        h.insert(TE, HeaderValue::from_static("gzip"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");

        let mut h = HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("trailers"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h[TE], "trailers");
    }

    #[test]
    fn identity_headers_from_clients_go() {
        let mut h = HeaderMap::new();
        h.insert("x-consumer-username", HeaderValue::from_static("admin"));
        h.insert("x-consumer-id", HeaderValue::from_static("1"));
        h.insert("x-consumerish", HeaderValue::from_static("kept"));
        h.insert("x-user-id", HeaderValue::from_static("forged"));
        remove_identity_headers(&mut h, &[HeaderName::from_static("x-user-id")]);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-consumerish"));
    }

    #[test]
    fn ipv4_text_matches_display() {
        for octet in [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 249, 250, 255] {
            for ip in [
                Ipv4Addr::new(octet, octet, octet, octet),
                Ipv4Addr::new(octet, 0, 255, 7),
                Ipv4Addr::new(127, 0, 0, octet),
            ] {
                assert_eq!(ipv4_text(ip), ip.to_string());
            }
        }
    }

    #[test]
    fn only_hop_by_hop_headers_go_and_te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(PROXY_AUTHENTICATE, HeaderValue::from_static("Basic"));
        h.insert(TRAILER, HeaderValue::from_static("x-checksum"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert(TE, HeaderValue::from_static(" Trailers "));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3, "{h:?}");
        assert!(
            h.contains_key(http::header::AUTHORIZATION) && h.contains_key(http::header::ACCEPT)
        );
        assert_eq!(h[TE], " Trailers ");

        let mut h = HeaderMap::new();
        h.append(CONNECTION, HeaderValue::from_static("close, , X-Other"));
        h.append(CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));

        let mut h = HeaderMap::new();
        h.append(TE, HeaderValue::from_static("trailers"));
        h.append(TE, HeaderValue::from_static("trailers"));
        remove_hop_by_hop(&mut h);
        assert!(h.is_empty(), "two TE values are not exactly `trailers`: {h:?}");
    }

    #[test]
    fn forwarded_headers_append_the_client() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        let host = HeaderValue::from_static("api.example.com");
        set_forwarded(&mut h, &forwarded_for("10.0.0.1".parse().unwrap()), "http", &host);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "api.example.com");

        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &forwarded_for("::ffff:10.0.0.2".parse().unwrap()), "http", &host);
        assert_eq!(h[X_FORWARDED_FOR], "10.0.0.2");
    }
}
