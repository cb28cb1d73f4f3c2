//! What the proxy does because of how the client connected: redirects from plain HTTP to
//! HTTPS, misdirected requests on TLS connections, and the verified client certificate's
//! subject. Plain-HTTP requests of rules without `httpRedirect` pay one branch for all of it.

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use super::error::ProxyError;
use crate::snapshot::Snapshot;
use crate::tls::TlsInfo;

/// `X-Client-Cert-Subject`: the verified client certificate's subject, set by the gateway
/// on TLS connections and removed from every client request.
pub const X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");

/// `host` without its port (`[::1]:8443` → `[::1]`).
fn host_name(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.find("]:") {
            Some(i) => (&host[..=i], Some(&host[i + 2..])),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    }
}

/// Whether a request for `host` on a TLS connection described by `tls` must be refused:
/// the snapshot's certificate for `host` is not the one the handshake chose.
pub(crate) fn misdirected(snapshot: &Snapshot, tls: &TlsInfo, host: &HeaderValue) -> bool {
    let Some(certificate) = &tls.certificate else { return false };
    let (name, _) = host_name(host.to_str().unwrap_or(""));
    if name.is_empty() {
        return false;
    }
    snapshot.tls.select(Some(name)).is_none_or(|chosen| chosen.name != *certificate)
}

/// The 301 to the same host, path and query over HTTPS. A client that named a port
/// (`Host: shop.example.com:8080`) talks to weir's ports directly and is sent to the HTTPS
/// listener's port; one that did not (port 80 in front of weir) is sent to 443.
pub(crate) fn https_redirect(
    host: &HeaderValue,
    path_and_query: &str,
    https_port: u16,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (name, port) = host_name(host.to_str().unwrap_or(""));
    if name.is_empty() {
        return Err(ProxyError::BadRequest { reason: "missing Host header" });
    }
    let mut location = String::with_capacity(name.len() + path_and_query.len() + 16);
    location.push_str("https://");
    location.push_str(name);
    if port.is_some() && https_port != 443 {
        let _ = write!(location, ":{https_port}");
    }
    location.push_str(if path_and_query.is_empty() { "/" } else { path_and_query });
    let location = HeaderValue::from_maybe_shared(Bytes::from(location))
        .map_err(|_| ProxyError::BadRequest { reason: "invalid Host header" })?;
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn location(host: &'static str, pq: &str, port: u16) -> String {
        let r = https_redirect(&HeaderValue::from_static(host), pq, port).unwrap();
        assert_eq!(r.status(), 301);
        r.headers()[LOCATION].to_str().unwrap().to_owned()
    }

    #[test]
    fn redirects_keep_host_path_and_query_and_name_the_port_only_when_needed() {
        assert_eq!(location("shop.example.com", "/a?b=1", 8443), "https://shop.example.com/a?b=1");
        assert_eq!(
            location("shop.example.com:8080", "/a?b=1", 8443),
            "https://shop.example.com:8443/a?b=1"
        );
        assert_eq!(location("shop.example.com:80", "/", 443), "https://shop.example.com/");
        assert_eq!(location("[::1]:8080", "/x", 8443), "https://[::1]:8443/x");
        assert!(https_redirect(&HeaderValue::from_static(""), "/", 443).is_err());
    }

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("a.example:1"), ("a.example", Some("1")));
        assert_eq!(host_name("a.example"), ("a.example", None));
        assert_eq!(host_name("[::1]"), ("[::1]", None));
    }
}
