//! The auth request's headers: which of the client's headers go to the auth service, and
//! the `X-Forwarded-*` headers that tell it what the client asked for.

use http::header::{
    CONNECTION, CONTENT_LENGTH, EXPECT, FORWARDED, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION,
    TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::filter::RequestContext;
use crate::proxy::X_REQUEST_ID;
use crate::proxy::headers::{
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, forwarded_for, remove_hop_by_hop,
};

/// `X-Forwarded-Method`: the client's request method.
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
/// `X-Forwarded-Uri`: the client's path and query.
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// Never sent to the auth service, even when named in `forwardHeaders`: hop-by-hop headers
/// and those that describe the client's own message (its target host and body framing).
const NEVER_SENT: [HeaderName; 12] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    HOST,
    CONTENT_LENGTH,
    EXPECT,
];

/// The `forwardHeaders` list as sent: without [`NEVER_SENT`] names and duplicates.
pub(super) fn sendable(names: &[HeaderName]) -> Box<[HeaderName]> {
    let mut out: Vec<HeaderName> = Vec::with_capacity(names.len());
    for name in names {
        if !NEVER_SENT.contains(name) && !out.contains(name) {
            out.push(name.clone());
        }
    }
    out.into()
}

/// Whether the client sent this header about forwarding, which only weir sets towards
/// the auth service.
fn is_forwarding(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-forwarded-") || *name == FORWARDED
}

/// The headers of the auth request for `request`: the selected client headers (`forward`,
/// or every end-to-end header when `None`), then `X-Forwarded-Method`, `-Proto`, `-Host`,
/// `-Uri`, `-For` and `X-Request-ID`. `Host` is set by the transport.
pub(super) fn headers(
    forward: Option<&[HeaderName]>,
    request: &http::request::Parts,
    ctx: &RequestContext<'_>,
) -> HeaderMap {
    let mut out = match forward {
        Some(names) => {
            let mut out = HeaderMap::with_capacity(names.len() + 6);
            for name in names {
                for value in request.headers.get_all(name) {
                    out.append(name.clone(), value.clone());
                }
            }
            out
        }
        None => {
            let mut out = request.headers.clone();
            remove_hop_by_hop(&mut out);
            for name in &NEVER_SENT {
                out.remove(name);
            }
            if out.keys().any(is_forwarding) {
                let names: Vec<HeaderName> =
                    out.keys().filter(|n| is_forwarding(n)).cloned().collect();
                for name in names {
                    out.remove(name);
                }
            }
            out
        }
    };
    if let Ok(method) = HeaderValue::from_str(request.method.as_str()) {
        out.insert(X_FORWARDED_METHOD, method);
    }
    let scheme = if ctx.scheme.is_empty() { "http" } else { ctx.scheme };
    out.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    let host = crate::proxy::original_host(request);
    if host.is_empty() {
        out.remove(X_FORWARDED_HOST);
    } else {
        out.insert(X_FORWARDED_HOST, host);
    }
    let uri = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    if let Ok(uri) = HeaderValue::from_str(uri) {
        out.insert(X_FORWARDED_URI, uri);
    }
    match ctx.client_ip.or_else(|| ctx.client.map(|c| c.ip())) {
        Some(ip) => {
            out.insert(X_FORWARDED_FOR, forwarded_for(ip));
        }
        None => {
            out.remove(X_FORWARDED_FOR);
        }
    }
    if !ctx.request_id.is_empty() {
        out.insert(X_REQUEST_ID, ctx.request_id.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::post(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn ctx() -> RequestContext<'static> {
        RequestContext {
            client_ip: Some("10.1.2.3".parse().unwrap()),
            request_id: HeaderValue::from_static("rid-1"),
            scheme: "https",
            ..RequestContext::default()
        }
    }

    const CLIENT: [(&str, &str); 14] = [
        ("host", "shop.test"),
        ("authorization", "Bearer t"),
        ("cookie", "session=abc"),
        ("accept", "text/html"),
        ("content-length", "5"),
        ("transfer-encoding", "chunked"),
        ("expect", "100-continue"),
        ("connection", "keep-alive, x-nominated"),
        ("x-nominated", "1"),
        ("te", "trailers"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic cHJveHk="),
        ("x-forwarded-uri", "/forged"),
        ("x-forwarded-for", "6.6.6.6"),
    ];

    #[test]
    fn every_end_to_end_header_goes_when_no_list_is_configured() {
        let request = parts("/orders/7?x=1", &CLIENT);
        let h = headers(None, &request, &ctx());
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "authorization",
                "cookie",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-method",
                "x-forwarded-proto",
                "x-forwarded-uri",
                "x-request-id",
            ]
        );
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h[X_FORWARDED_METHOD], "POST");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "shop.test");
        assert_eq!(h[X_FORWARDED_URI], "/orders/7?x=1", "the client's own value is replaced");
        assert_eq!(h[X_FORWARDED_FOR], "10.1.2.3", "the client's own value is replaced");
        assert_eq!(h[X_REQUEST_ID], "rid-1");
    }

    #[test]
    fn a_configured_list_selects_and_never_sends_framing_or_hop_by_hop_headers() {
        let list = [
            HeaderName::from_static("cookie"),
            HeaderName::from_static("transfer-encoding"),
            HeaderName::from_static("host"),
            HeaderName::from_static("cookie"),
            HeaderName::from_static("x-absent"),
        ];
        let list = sendable(&list);
        assert_eq!(
            &*list,
            [HeaderName::from_static("cookie"), HeaderName::from_static("x-absent")]
        );
        let mut request = parts("http://api.test:8080/p", &CLIENT);
        request.headers.append("cookie", HeaderValue::from_static("second=2"));
        let h = headers(Some(&list), &request, &RequestContext::default());
        let cookies: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["session=abc", "second=2"]);
        assert!(!h.contains_key("authorization") && !h.contains_key("transfer-encoding"));
        // The absolute-form authority is the host asked for; no client address, no id.
        assert_eq!(h[X_FORWARDED_HOST], "api.test:8080");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_URI], "/p");
        assert!(!h.contains_key(X_FORWARDED_FOR) && !h.contains_key(X_REQUEST_ID));
        assert_eq!(h.keys_len(), 5, "{h:?}");
    }
}
