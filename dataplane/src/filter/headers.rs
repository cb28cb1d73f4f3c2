//! `requestHeaders` / `responseHeaders`: set, add and remove headers, with values that may
//! use `${request_id}`, `${consumer}`, `${client_ip}`, `${route}`, `${uuid}` and
//! `${client_cert_subject}`.
//!
//! Templates are parsed once at compile time ([`Template::parse`]); a template without
//! variables is a ready-made header value, and one with variables is rendered per request
//! from the [`RequestContext`]. A value that renders empty (`${consumer}` on an anonymous
//! request) sets nothing. Order per transform: remove, then set (replacing), then add
//! (appending).
//!
//! What may be written is checked at compile time ([`check_target`]): hop-by-hop headers
//! and message framing (`Content-Length`, `Transfer-Encoding`, `Host`) are never set from a
//! Plugin, and identity headers (`X-Consumer-*`, a jwt plugin's claim headers) are never set
//! from a value the client controls (`${request_id}` is the client's own `X-Request-ID`
//! when valid).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::RequestContext;

/// A variable of a header value template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `${request_id}`: the request id (the client's valid `X-Request-ID`, else minted).
    RequestId,
    /// `${consumer}`: the authenticated Consumer's username, else empty.
    Consumer,
    /// `${client_ip}`: the client address (trusted proxies applied).
    ClientIp,
    /// `${route}`: `namespace/name` of the matched Route.
    Route,
    /// `${uuid}`: a fresh UUID v4.
    Uuid,
    /// `${client_cert_subject}`: the verified client certificate's subject (TLS with client
    /// certificates), else empty.
    ClientCertSubject,
}

impl Var {
    /// Every variable with its name.
    pub const ALL: [(&'static str, Var); 6] = [
        ("request_id", Var::RequestId),
        ("consumer", Var::Consumer),
        ("client_ip", Var::ClientIp),
        ("route", Var::Route),
        ("uuid", Var::Uuid),
        ("client_cert_subject", Var::ClientCertSubject),
    ];

    /// Whether the client chooses the value.
    pub fn client_controlled(self) -> bool {
        matches!(self, Var::RequestId)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<str>),
    Var(Var),
}

/// A parsed header value template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Box<[Part]>,
    /// The value when the template has no variable.
    literal: Option<HeaderValue>,
}

impl Template {
    /// Parses `text`: literal text and `${name}` variables.
    pub fn parse(text: &str) -> Result<Template, String> {
        if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err("contains control characters".to_owned());
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].into()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!("unterminated \"${{\" in {text:?}"));
            };
            let name = &after[..end];
            let Some((_, var)) = Var::ALL.iter().find(|(n, _)| *n == name) else {
                let names: Vec<String> =
                    Var::ALL.iter().map(|(n, _)| format!("${{{n}}}")).collect();
                return Err(format!(
                    "unknown variable \"${{{name}}}\" (one of {})",
                    names.join(", ")
                ));
            };
            parts.push(Part::Var(*var));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.into()));
        }
        let literal = match parts.as_slice() {
            [] => Some(HeaderValue::from_static("")),
            [Part::Literal(l)] => Some(
                HeaderValue::from_str(l)
                    .map_err(|_| format!("{text:?} is not a valid header value"))?,
            ),
            _ => None,
        };
        Ok(Template { parts: parts.into(), literal })
    }

    /// Whether a variable of the template is chosen by the client.
    pub fn client_controlled(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Var(v) if v.client_controlled()))
    }

    /// Whether the template uses no variable.
    pub fn is_literal(&self) -> bool {
        self.literal.is_some()
    }

    /// Whether the template uses `${route}`.
    pub fn uses_route(&self) -> bool {
        self.parts.contains(&Part::Var(Var::Route))
    }

    /// The template for rules of one Route: `${route}` replaced by its `namespace/name`,
    /// so a rule's chain renders it without work per request (a template without other
    /// variables becomes a ready-made value).
    pub fn with_route(&self, route: &crate::snapshot::ObjectKey) -> Template {
        let mut text = String::new();
        for part in &*self.parts {
            match part {
                Part::Literal(l) => text.push_str(l),
                Part::Var(Var::Route) => {
                    text.push_str(&route.namespace);
                    text.push('/');
                    text.push_str(&route.name);
                }
                Part::Var(v) => {
                    let name = Var::ALL.iter().find(|(_, var)| var == v).map_or("", |(n, _)| n);
                    text.push_str("${");
                    text.push_str(name);
                    text.push('}');
                }
            }
        }
        Template::parse(&text).unwrap_or_else(|_| self.clone())
    }

    /// The value for one request; `None` when it renders empty (or, never in practice,
    /// invalid).
    pub fn render(&self, ctx: &RequestContext<'_>) -> Option<HeaderValue> {
        if let Some(v) = &self.literal {
            return (!v.is_empty()).then(|| v.clone());
        }
        let mut out = String::new();
        for part in &*self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(Var::RequestId) => out.push_str(ctx.request_id.to_str().unwrap_or("")),
                Part::Var(Var::Consumer) => {
                    if let Some(c) = &ctx.consumer {
                        out.push_str(&c.username);
                    }
                }
                Part::Var(Var::ClientIp) => {
                    if let Some(ip) = ctx.client_ip {
                        out.push_str(&ip.to_string());
                    }
                }
                Part::Var(Var::Route) => {
                    if let Some(route) = ctx.route {
                        out.push_str(&route.namespace);
                        out.push('/');
                        out.push_str(&route.name);
                    }
                }
                Part::Var(Var::ClientCertSubject) => {
                    if let Some(subject) = &ctx.client_cert_subject {
                        out.push_str(subject.to_str().unwrap_or(""));
                    }
                }
                Part::Var(Var::Uuid) => {
                    out.push_str(
                        uuid::Uuid::new_v4()
                            .hyphenated()
                            .encode_lower(&mut uuid::Uuid::encode_buffer()),
                    );
                }
            }
        }
        if out.is_empty() {
            return None;
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
    }
}

/// Headers a Plugin never writes: hop-by-hop headers and the message's framing.
pub const NEVER_WRITTEN: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
    "host",
];

/// Request headers the gateway itself sets after the request phase (API.md: upstreams
/// receive them): a request transform could not set them, so it may not try.
pub const SET_BY_GATEWAY: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// Whether `name` (lower-case) is an identity header: one only authentication sets.
pub fn is_identity_header(name: &str, claim_headers: &[HeaderName]) -> bool {
    name.starts_with("x-consumer-")
        || name == "x-client-cert-subject"
        || claim_headers.iter().any(|h| h.as_str() == name)
}

/// Checks that a transform may write `name` with `template` (see the module docs).
pub fn check_target(
    name: &HeaderName,
    template: &Template,
    request: bool,
    claim_headers: &[HeaderName],
) -> Result<(), String> {
    if NEVER_WRITTEN.contains(&name.as_str()) {
        let hint = if name == "host" && request { " (use the rule's rewrite.host)" } else { "" };
        return Err(format!("{name:?} is a hop-by-hop or framing header and cannot be set{hint}"));
    }
    if request && SET_BY_GATEWAY.contains(&name.as_str()) {
        return Err(format!(
            "{name:?} is set by the gateway for every upstream request and cannot be set"
        ));
    }
    if request && template.client_controlled() && is_identity_header(name.as_str(), claim_headers) {
        return Err(format!(
            "{name:?} is an identity header and cannot be set from a value the client controls (${{request_id}})"
        ));
    }
    Ok(())
}

/// A compiled `requestHeaders` or `responseHeaders` plugin.
#[derive(Debug, Clone, Default)]
pub struct HeaderTransform {
    /// Headers set (replacing every value).
    pub set: Box<[(HeaderName, Template)]>,
    /// Headers appended.
    pub add: Box<[(HeaderName, Template)]>,
    /// Headers removed.
    pub remove: Box<[HeaderName]>,
}

impl HeaderTransform {
    /// Whether a template of the transform uses `${route}`.
    pub fn uses_route(&self) -> bool {
        self.set.iter().chain(self.add.iter()).any(|(_, t)| t.uses_route())
    }

    /// The transform for rules of one Route (see [`Template::with_route`]).
    pub fn for_route(&self, route: &crate::snapshot::ObjectKey) -> HeaderTransform {
        let bind = |list: &[(HeaderName, Template)]| -> Box<[(HeaderName, Template)]> {
            list.iter().map(|(n, t)| (n.clone(), t.with_route(route))).collect()
        };
        HeaderTransform { set: bind(&self.set), add: bind(&self.add), remove: self.remove.clone() }
    }

    /// Applies the transform to a request's or a response's headers.
    pub fn apply(&self, headers: &mut HeaderMap, ctx: &RequestContext<'_>) {
        for name in &*self.remove {
            headers.remove(name);
        }
        for (name, template) in &*self.set {
            match template.render(ctx) {
                Some(value) => drop(headers.insert(name.clone(), value)),
                None => drop(headers.remove(name)),
            }
        }
        for (name, template) in &*self.add {
            if let Some(value) = template.render(ctx) {
                headers.append(name.clone(), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;

    use super::*;
    use crate::filter::ConsumerEntry;
    use crate::snapshot::ObjectKey;

    #[test]
    fn templates_parse_once_and_render_per_request() {
        let route = ObjectKey::new("shop", "orders");
        let consumer =
            ConsumerEntry::new(ObjectKey::new("shop", "c"), "mobile", None, Arc::from(Vec::new()));
        let ctx = RequestContext {
            request_id: HeaderValue::from_static("rid-1"),
            route: Some(&route),
            consumer: Some(consumer),
            client_ip: Some("2001:db8::7".parse().unwrap()),
            ..Default::default()
        };
        let t = Template::parse("${route} ${consumer}@${client_ip} #${request_id}").unwrap();
        assert!(!t.is_literal() && t.client_controlled());
        assert_eq!(t.render(&ctx).unwrap(), "shop/orders mobile@2001:db8::7 #rid-1");
        let u = Template::parse("${uuid}").unwrap();
        let (a, b) = (u.render(&ctx).unwrap(), u.render(&ctx).unwrap());
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);
        assert!(Template::parse("gateway").unwrap().is_literal());
        assert!(Template::parse("${nope}").is_err());
        assert!(Template::parse("${route").is_err());
        assert!(Template::parse("a\nb").is_err());
        // Anonymous: renders empty, sets nothing.
        let anonymous = RequestContext::default();
        assert!(Template::parse("${consumer}").unwrap().render(&anonymous).is_none());
        // The verified client certificate's subject (TLS with client certificates only).
        let subject = Template::parse("${client_cert_subject}").unwrap();
        assert!(!subject.client_controlled());
        assert!(subject.render(&anonymous).is_none());
        let verified = RequestContext {
            client_cert_subject: Some(HeaderValue::from_static("CN=alice, O=Partners")),
            ..Default::default()
        };
        assert_eq!(subject.render(&verified).unwrap(), "CN=alice, O=Partners");
        // Bound to a Route at compile time: `${route}` is literal, the rest stays dynamic.
        let bound = t.with_route(&ObjectKey::new("shop", "orders"));
        assert!(!bound.uses_route() && t.uses_route());
        assert_eq!(bound.render(&ctx).unwrap(), "shop/orders mobile@2001:db8::7 #rid-1");
        let only = Template::parse("route=${route}").unwrap().with_route(&ObjectKey::new("a", "b"));
        assert!(only.is_literal());
        assert_eq!(only.render(&anonymous).unwrap(), "route=a/b");
    }

    #[test]
    fn framing_and_forged_identity_are_refused() {
        let t = |s| Template::parse(s).unwrap();
        let h = |s: &'static str| HeaderName::from_static(s);
        let claims = [h("x-user-id")];
        assert!(check_target(&h("transfer-encoding"), &t("chunked"), false, &claims).is_err());
        assert!(check_target(&h("connection"), &t("close"), true, &claims).is_err());
        assert!(check_target(&h("host"), &t("x"), true, &claims).is_err());
        assert!(check_target(&h("x-forwarded-proto"), &t("https"), true, &claims).is_err());
        assert!(check_target(&h("x-forwarded-proto"), &t("https"), false, &claims).is_ok());
        assert!(
            check_target(&h("x-consumer-username"), &t("${request_id}"), true, &claims).is_err()
        );
        assert!(check_target(&h("x-user-id"), &t("${request_id}"), true, &claims).is_err());
        assert!(check_target(&h("x-consumer-username"), &t("anonymous"), true, &claims).is_ok());
        assert!(
            check_target(&h("x-client-cert-subject"), &t("${request_id}"), true, &claims).is_err()
        );
        assert!(check_target(&h("x-trace"), &t("${request_id}"), true, &claims).is_ok());
    }

    #[test]
    fn remove_then_set_then_add() {
        let transform = HeaderTransform {
            set: vec![(HeaderName::from_static("x-a"), Template::parse("set").unwrap())].into(),
            add: vec![(HeaderName::from_static("x-a"), Template::parse("added").unwrap())].into(),
            remove: vec![HeaderName::from_static("server")].into(),
        };
        let mut h = HeaderMap::new();
        h.insert("server", HeaderValue::from_static("origin/1.0"));
        h.append("x-a", HeaderValue::from_static("old1"));
        h.append("x-a", HeaderValue::from_static("old2"));
        transform.apply(&mut h, &RequestContext::default());
        assert!(!h.contains_key("server"));
        let values: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(values, ["set", "added"]);
    }
}
