//! `cors`: cross-origin resource sharing, decided by the gateway.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is routed as
//!   the request it announces (the proxy looks the rule up with the announced method) and
//!   answered 204 here, before authentication: it never reaches the upstream.
//! - An allowed origin gets `Access-Control-Allow-Origin` (the origin itself, or `*` when
//!   any origin is allowed without credentials), `Access-Control-Allow-Credentials` with
//!   `allowCredentials`, and on actual requests `Access-Control-Expose-Headers` — on every
//!   response, the gateway's own errors included, so a browser can read a 401.
//! - A disallowed origin gets no CORS headers at all (an upstream's own are removed), and
//!   a preflight whose method or headers are not allowed gets none either.
//! - Every response of a CORS rule carries `Vary: Origin`, so caches keep one copy per
//!   origin.
//!
//! Origins are `*`, an exact origin (`https://app.example.com`, `http://localhost:3000`),
//! or a wildcard subdomain (`https://*.example.com` matches `https://a.example.com` and
//! `https://a.b.example.com`, never `https://example.com`), compared case-insensitively.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, CONTENT_LENGTH, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use super::{Flow, RequestContext};
use crate::proxy::ProxyBody;

/// One entry of `allowOrigins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: any origin.
    Any,
    /// An exact origin, lower-case (`https://app.example.com`, or `null`).
    Exact(Box<str>),
    /// `scheme://*.suffix[:port]`: `prefix` is `scheme://`, `suffix` is `.suffix[:port]`.
    Subdomain {
        /// `https://`.
        prefix: Box<str>,
        /// `.example.com` or `.example.com:8443`.
        suffix: Box<str>,
    },
}

fn valid_host_chars(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Parses one `allowOrigins` entry.
pub fn parse_origin(s: &str) -> Result<OriginPattern, String> {
    if s == "*" {
        return Ok(OriginPattern::Any);
    }
    if s == "null" {
        return Ok(OriginPattern::Exact("null".into()));
    }
    let lower = s.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return Err(format!(
            "{s:?} is not an origin (scheme://host[:port], e.g. https://app.example.com)"
        ));
    };
    if scheme.is_empty()
        || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(format!("{s:?}: invalid scheme"));
    }
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(format!("{s:?}: an origin has no path (no trailing slash either)"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
                return Err(format!("{s:?}: invalid port"));
            }
            (h, Some(p))
        }
        _ => (rest, None),
    };
    let port_suffix = port.map(|p| format!(":{p}")).unwrap_or_default();
    if let Some(domain) = host.strip_prefix("*.") {
        if !valid_host_chars(domain) || domain.starts_with('.') || domain.contains('*') {
            return Err(format!("{s:?}: invalid wildcard origin (use scheme://*.example.com)"));
        }
        return Ok(OriginPattern::Subdomain {
            prefix: format!("{scheme}://").into(),
            suffix: format!(".{domain}{port_suffix}").into(),
        });
    }
    let bracketed_v6 = host.starts_with('[') && host.ends_with(']');
    if host.contains('*') || !(bracketed_v6 || valid_host_chars(host)) {
        return Err(format!("{s:?}: invalid host"));
    }
    Ok(OriginPattern::Exact(lower.into()))
}

impl OriginPattern {
    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomain { prefix, suffix } => {
                origin.len() > prefix.len() + suffix.len()
                    && origin.is_char_boundary(prefix.len())
                    && origin.is_char_boundary(origin.len() - suffix.len())
                    && origin[..prefix.len()].eq_ignore_ascii_case(prefix)
                    && origin[origin.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && valid_host_chars(&origin[prefix.len()..origin.len() - suffix.len()])
            }
        }
    }
}

/// A compiled `cors` plugin.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Box<[OriginPattern]>,
    any_origin: bool,
    /// Allowed methods; empty = the announced method (the rule matched it).
    methods: Box<[Method]>,
    allow_methods: Option<HeaderValue>,
    /// Allowed request headers, lower-case; empty (or `*`) = the announced headers.
    headers: Box<[HeaderName]>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    allow_credentials: bool,
    max_age: Option<HeaderValue>,
}

/// What the CORS filter decided about a request, for the response phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsState {
    /// No CORS filter on the rule.
    #[default]
    NotApplied,
    /// A CORS rule, and the request has no `Origin`: only `Vary: Origin`.
    NoOrigin,
    /// The origin is allowed: the `Access-Control-Allow-Origin` value.
    Allowed(HeaderValue),
    /// The origin is not allowed: no CORS headers.
    Denied,
    /// A preflight answered by the filter itself (its headers are already set).
    Preflight,
}

fn join<T: AsRef<str>>(items: &[T]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    let joined: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    HeaderValue::from_str(&joined.join(", ")).ok()
}

impl Cors {
    /// A CORS policy from validated parts (see [`parse_origin`]). `max_age` in seconds.
    pub fn new(
        origins: Vec<OriginPattern>,
        methods: Vec<Method>,
        headers: Vec<HeaderName>,
        expose: Vec<HeaderName>,
        allow_credentials: bool,
        max_age: Option<u64>,
    ) -> Self {
        let any_origin = origins.contains(&OriginPattern::Any);
        let allow_methods = join(&methods.iter().map(Method::as_str).collect::<Vec<_>>());
        let allow_headers = join(&headers.iter().map(HeaderName::as_str).collect::<Vec<_>>());
        Cors {
            origins: origins.into(),
            any_origin,
            methods: methods.into(),
            allow_methods,
            headers: headers.into(),
            allow_headers,
            expose_headers: join(&expose.iter().map(HeaderName::as_str).collect::<Vec<_>>()),
            allow_credentials,
            max_age: max_age.map(HeaderValue::from),
        }
    }

    /// The verdict on the request's `Origin` (run before any filter of the chain).
    pub fn evaluate(&self, headers: &HeaderMap) -> CorsState {
        let Some(origin) = headers.get(ORIGIN) else { return CorsState::NoOrigin };
        let text = origin.to_str().unwrap_or("");
        if self.any_origin && !self.allow_credentials {
            return CorsState::Allowed(HeaderValue::from_static("*"));
        }
        if !text.is_empty() && self.origins.iter().any(|o| o.matches(text)) {
            CorsState::Allowed(origin.clone())
        } else {
            CorsState::Denied
        }
    }

    /// The request phase: a preflight is answered here (204), anything else goes on.
    pub fn request(&self, request: &http::request::Parts, ctx: &mut RequestContext<'_>) -> Flow {
        if request.method != Method::OPTIONS {
            return Flow::Continue;
        }
        let Some(announced) = request.headers.get(ACCESS_CONTROL_REQUEST_METHOD) else {
            return Flow::Continue;
        };
        if !request.headers.contains_key(ORIGIN) {
            return Flow::Continue;
        }
        let mut response = Response::new(ProxyBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        out.append(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        if let CorsState::Allowed(origin) = &ctx.cors
            && let Some(methods) = self.allowed_method(announced)
            && let Some(headers) = self.allowed_headers(&request.headers)
        {
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if self.allow_credentials {
                out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            }
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
            if let Some(headers) = headers {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, headers);
            }
            if let Some(max_age) = &self.max_age {
                out.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
            }
        }
        ctx.cors = CorsState::Preflight;
        Flow::Respond(Box::new(response))
    }

    /// `Access-Control-Allow-Methods` for an announced method, `None` when not allowed.
    fn allowed_method(&self, announced: &HeaderValue) -> Option<HeaderValue> {
        let method = Method::from_bytes(announced.as_bytes()).ok()?;
        if self.methods.is_empty() {
            return Some(announced.clone());
        }
        self.methods.contains(&method).then(|| self.allow_methods.clone()).flatten()
    }

    /// `Some(Access-Control-Allow-Headers)` (`Some(None)`: nothing to send) when every
    /// announced header is allowed, `None` otherwise.
    fn allowed_headers(&self, headers: &HeaderMap) -> Option<Option<HeaderValue>> {
        let mut announced = headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or(",").split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .peekable();
        if announced.peek().is_none() {
            return Some(self.allow_headers.clone());
        }
        if self.headers.is_empty() {
            // Not configured: the announced headers are allowed (Kong's default).
            let echoed: Vec<&str> = announced.collect();
            return Some(HeaderValue::from_str(&echoed.join(", ")).ok());
        }
        let all_allowed =
            announced.all(|h| self.headers.iter().any(|a| a.as_str().eq_ignore_ascii_case(h)));
        all_allowed.then(|| self.allow_headers.clone())
    }

    /// The response phase: CORS headers for an allowed origin, none for another, and
    /// `Vary: Origin` on every response.
    pub fn response(&self, headers: &mut HeaderMap, ctx: &RequestContext<'_>) {
        match &ctx.cors {
            CorsState::NotApplied | CorsState::Preflight => return,
            CorsState::NoOrigin => {}
            CorsState::Allowed(origin) => {
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                if self.allow_credentials {
                    headers
                        .insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
                }
                if let Some(expose) = &self.expose_headers {
                    headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
                }
            }
            CorsState::Denied => {
                for name in [
                    ACCESS_CONTROL_ALLOW_ORIGIN,
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    ACCESS_CONTROL_EXPOSE_HEADERS,
                    ACCESS_CONTROL_ALLOW_METHODS,
                    ACCESS_CONTROL_ALLOW_HEADERS,
                ] {
                    headers.remove(name);
                }
            }
        }
        add_vary(headers, "origin");
    }
}

/// Appends `token` to `Vary` unless it (or `*`) is already listed.
pub fn add_vary(headers: &mut HeaderMap, token: &'static str) {
    let listed = headers.get_all(VARY).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.eq_ignore_ascii_case(token))
    });
    if !listed {
        let value = match token {
            "origin" => HeaderValue::from_static("Origin"),
            "accept-encoding" => HeaderValue::from_static("Accept-Encoding"),
            other => HeaderValue::from_static(other),
        };
        headers.append(VARY, value);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cors(origins: &[&str], methods: &[&str], headers: &[&str], credentials: bool) -> Cors {
        Cors::new(
            origins.iter().map(|o| parse_origin(o).unwrap()).collect(),
            methods.iter().map(|m| m.parse().unwrap()).collect(),
            headers.iter().map(|h| h.parse().unwrap()).collect(),
            vec![HeaderName::from_static("x-total")],
            credentials,
            Some(600),
        )
    }

    fn with_origin(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, origin.parse().unwrap());
        h
    }

    #[test]
    fn origins_parse_and_match() {
        let p = |s| parse_origin(s).unwrap();
        assert!(p("https://*.example.com").matches("https://a.example.com"));
        assert!(p("https://*.example.com").matches("https://A.b.Example.com"));
        assert!(!p("https://*.example.com").matches("https://example.com"));
        assert!(!p("https://*.example.com").matches("http://a.example.com"));
        assert!(!p("https://*.example.com").matches("https://evil.com/.example.com"));
        assert!(!p("https://*.example.com").matches("https://a.example.com.evil.com"));
        assert!(!p("https://*.example.com").matches("https://a.example.com:8443"));
        assert!(p("https://*.example.com:8443").matches("https://a.example.com:8443"));
        assert!(p("http://localhost:3000").matches("http://localhost:3000"));
        assert!(!p("http://localhost:3000").matches("http://localhost:3001"));
        assert!(p("https://App.Example.com").matches("https://app.example.com"));
        for bad in [
            "app.example.com",
            "https://a.com/",
            "https://a.com/x",
            "https://*",
            "ftp//x",
            "https://a.com:x",
            "https://a*b.com",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allowed_denied_and_wildcard_origins() {
        let c = cors(&["https://app.example.com", "https://*.shop.test"], &[], &[], true);
        assert_eq!(
            c.evaluate(&with_origin("https://app.example.com")),
            CorsState::Allowed("https://app.example.com".parse().unwrap())
        );
        assert!(matches!(c.evaluate(&with_origin("https://x.shop.test")), CorsState::Allowed(_)));
        assert_eq!(c.evaluate(&with_origin("https://evil.test")), CorsState::Denied);
        assert_eq!(c.evaluate(&HeaderMap::new()), CorsState::NoOrigin);
        let any = cors(&["*"], &[], &[], false);
        assert_eq!(
            any.evaluate(&with_origin("https://x")),
            CorsState::Allowed("*".parse().unwrap())
        );
    }

    #[test]
    fn response_headers_by_verdict() {
        let c = cors(&["https://app.example.com"], &[], &[], true);
        let mut ctx = RequestContext {
            cors: c.evaluate(&with_origin("https://app.example.com")),
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        h.insert(VARY, "Accept-Encoding".parse().unwrap());
        c.response(&mut h, &ctx);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[ACCESS_CONTROL_EXPOSE_HEADERS], "x-total");
        let vary: Vec<_> = h.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        ctx.cors = CorsState::Denied;
        let mut h = HeaderMap::new();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, "*".parse().unwrap());
        c.response(&mut h, &ctx);
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN), "an upstream's own header goes too");
        assert_eq!(h[VARY], "Origin");
    }

    fn preflight(
        c: &Cors,
        origin: &str,
        method: &str,
        headers: Option<&str>,
    ) -> Response<ProxyBody> {
        let mut b = http::Request::options("/")
            .header(ORIGIN, origin)
            .header(ACCESS_CONTROL_REQUEST_METHOD, method);
        if let Some(h) = headers {
            b = b.header(ACCESS_CONTROL_REQUEST_HEADERS, h);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        let mut ctx = RequestContext { cors: c.evaluate(&parts.headers), ..Default::default() };
        match c.request(&parts, &mut ctx) {
            Flow::Respond(r) => {
                assert_eq!(ctx.cors, CorsState::Preflight);
                *r
            }
            Flow::Continue => panic!("a preflight is answered"),
        }
    }

    #[test]
    fn preflights_are_answered_with_exactly_the_allowed_headers() {
        let c = cors(
            &["https://app.example.com"],
            &["GET", "POST"],
            &["authorization", "content-type"],
            false,
        );
        let r =
            preflight(&c, "https://app.example.com", "POST", Some("Content-Type, authorization"));
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "authorization, content-type");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        assert!(h[VARY].to_str().unwrap().starts_with("Origin"));
        // Method, header or origin not allowed: no CORS headers, still answered.
        for r in [
            preflight(&c, "https://app.example.com", "DELETE", None),
            preflight(&c, "https://app.example.com", "GET", Some("x-secret")),
            preflight(&c, "https://evil.test", "GET", None),
        ] {
            assert_eq!(r.status(), 204);
            assert!(!r.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN), "{:?}", r.headers());
        }
        // Unconfigured methods and headers: the announced ones.
        let open = cors(&["https://app.example.com"], &[], &[], false);
        let r = preflight(&open, "https://app.example.com", "PATCH", Some("x-a, x-b"));
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_METHODS], "PATCH");
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_HEADERS], "x-a, x-b");
    }
}
