//! Answers made by the gateway itself: `redirect` and `directResponse`. Both answer every
//! request of their rule (after the phases before them: correlation id, IP restriction,
//! CORS preflight); the response phase (CORS headers, response headers…) still runs on
//! them.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Response, StatusCode};

use super::RequestContext;
use crate::proxy::ProxyBody;
use crate::rewrite::rewrite_path;
use crate::snapshot::Rewrite;

/// A compiled `redirect` plugin.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// New scheme (`http`/`https`), else the request's.
    pub scheme: Option<Box<str>>,
    /// New host, else the request's.
    pub host: Option<Box<str>>,
    /// New port; else the scheme's well-known port when `scheme` is set, else the
    /// request's.
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
    /// Path change (`replace_prefix` / `replace_full_path`), as a rewrite.
    pub path: Option<Rewrite>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]` (also `[v6]:port`) into host and port.
fn split_host(authority: &str) -> (&str, Option<u16>) {
    if let Some(end) = authority.rfind(']') {
        let port = authority[end + 1..].strip_prefix(':').and_then(|p| p.parse().ok());
        return (&authority[..=end], port);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (authority, None),
        },
        None => (authority, None),
    }
}

impl Redirect {
    /// The `Location` for a request.
    pub fn location(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> String {
        let request_scheme = if ctx.scheme.is_empty() { "http" } else { ctx.scheme };
        let scheme = self.scheme.as_deref().unwrap_or(request_scheme);
        let original = crate::proxy::original_host(request);
        let (request_host, request_port) = split_host(original.to_str().unwrap_or(""));
        let host = self.host.as_deref().unwrap_or(request_host);
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => request_port,
        };
        let port = port.filter(|p| default_port(scheme) != Some(*p));
        let path = request.uri.path();
        let query = request.uri.query();
        let rewritten = match (&self.path, ctx.matched) {
            (Some(rw), Some(matched)) => rewrite_path(rw, matched, path, query),
            (Some(rw), None) => rw.replace_full_path.as_ref().map(|p| match query {
                Some(q) => format!("{p}?{q}"),
                None => p.to_string(),
            }),
            (None, _) => None,
        };
        let mut out = String::with_capacity(scheme.len() + host.len() + path.len() + 16);
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(host);
        if let Some(p) = port {
            out.push(':');
            out.push_str(&p.to_string());
        }
        match rewritten {
            Some(pq) => out.push_str(&pq),
            None => {
                out.push_str(path);
                if let Some(q) = query {
                    out.push('?');
                    out.push_str(q);
                }
            }
        }
        out
    }

    /// The redirect response.
    pub fn respond(
        &self,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
    ) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::empty());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Ok(location) = HeaderValue::from_str(&self.location(request, ctx)) {
            headers.insert(LOCATION, location);
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        response
    }
}

/// A compiled `directResponse` plugin.
#[derive(Debug, Clone)]
pub struct DirectResponse {
    /// Status.
    pub status: StatusCode,
    /// Body (may be empty).
    pub body: Bytes,
    /// `Content-Type`, when there is a body.
    pub content_type: Option<HeaderValue>,
}

impl DirectResponse {
    /// The fixed response.
    pub fn respond(&self) -> Response<ProxyBody> {
        let mut response = Response::new(if self.body.is_empty() {
            ProxyBody::empty()
        } else {
            ProxyBody::full(self.body.clone())
        });
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some(ct) = &self.content_type {
            headers.insert(CONTENT_TYPE, ct.clone());
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::snapshot::{PathMatch, RequestMatch};

    fn redirect(
        scheme: Option<&str>,
        host: Option<&str>,
        port: Option<u16>,
        path: Option<Rewrite>,
    ) -> Redirect {
        Redirect {
            scheme: scheme.map(Into::into),
            host: host.map(Into::into),
            port,
            status: StatusCode::MOVED_PERMANENTLY,
            path,
        }
    }

    fn loc(r: &Redirect, host: &str, target: &str, matched: Option<&RequestMatch>) -> String {
        let (parts, ()) =
            http::Request::get(target).header("host", host).body(()).unwrap().into_parts();
        let ctx = RequestContext { matched, ..Default::default() };
        r.location(&parts, &ctx)
    }

    #[test]
    fn locations_follow_the_gateway_api_port_rules() {
        let to_https = redirect(Some("https"), None, None, None);
        assert_eq!(loc(&to_https, "shop.test:8080", "/a?b=1", None), "https://shop.test/a?b=1");
        let keep = redirect(None, Some("new.test"), None, None);
        assert_eq!(loc(&keep, "old.test:8080", "/x", None), "http://new.test:8080/x");
        let port = redirect(Some("https"), Some("new.test"), Some(8443), None);
        assert_eq!(loc(&port, "old.test", "/", None), "https://new.test:8443/");
        let default_port = redirect(Some("https"), None, Some(443), None);
        assert_eq!(loc(&default_port, "a.test", "/", None), "https://a.test/");
        assert_eq!(loc(&keep, "[::1]:9000", "/", None), "http://new.test:9000/");
        let v6 = redirect(Some("https"), None, None, None);
        assert_eq!(loc(&v6, "[::1]:9000", "/", None), "https://[::1]/");
    }

    #[test]
    fn paths_are_replaced_like_rewrites_and_keep_the_query() {
        let prefix =
            Rewrite { replace_prefix: Some("/v2".into()), replace_full_path: None, host: None };
        let m = RequestMatch::path(PathMatch::Prefix("/v1".into()));
        let r = redirect(None, None, None, Some(prefix));
        assert_eq!(loc(&r, "a.test", "/v1/users?x=1", Some(&m)), "http://a.test/v2/users?x=1");
        let full =
            Rewrite { replace_prefix: None, replace_full_path: Some("/moved".into()), host: None };
        let r = redirect(None, None, None, Some(full));
        assert_eq!(loc(&r, "a.test", "/v1/users?x=1", Some(&m)), "http://a.test/moved?x=1");
    }

    #[test]
    fn direct_responses_are_fixed() {
        let d = DirectResponse {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: Bytes::from_static(b"{\"maintenance\":true}"),
            content_type: Some(HeaderValue::from_static("application/json")),
        };
        let r = d.respond();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()[CONTENT_LENGTH], "20");
    }
}
