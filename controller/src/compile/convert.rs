//! Plugin configurations that need nothing but themselves → data-plane filters.
//!
//! One function per kind turns the CRD config into its filter or into errors that name the
//! field (`spec.cors.allowOrigins[1]: ...`). Validation and building are the same code:
//! [`super::plugins::validate_plugin`] keeps the errors, the filter builder keeps the
//! filter, so what is accepted is exactly what runs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use weir_crds::{
    CompressionConfig, CompressionType, CorrelationIdConfig, CorsConfig, DirectResponseConfig,
    HeaderTransform as HeaderTransformConfig, IpRestrictionConfig, RedirectConfig,
    RequestSizeConfig,
};
use weir_dataplane::Filter;
use weir_dataplane::filter::answer::{DirectResponse, Redirect};
use weir_dataplane::filter::compression::{Coding, Compression};
use weir_dataplane::filter::correlation::{CorrelationId, DEFAULT_HEADER};
use weir_dataplane::filter::cors::{Cors, parse_origin};
use weir_dataplane::filter::headers::{HeaderTransform, NEVER_WRITTEN, Template, check_target};
use weir_dataplane::filter::ip::{IpRestriction, NetSet, parse_net};
use weir_dataplane::filter::size::RequestSize;
use weir_dataplane::snapshot::Rewrite;

/// Errors of one conversion, each naming its field.
pub(crate) type Errors = Vec<String>;

/// Largest `directResponse` body.
pub const MAX_DIRECT_BODY: usize = 64 * 1024;
/// Default `compression.minLength`.
pub const DEFAULT_MIN_LENGTH: u64 = 1024;
/// Default `compression.contentTypes`.
pub const DEFAULT_CONTENT_TYPES: [&str; 7] = [
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/*+json",
    "application/*+xml",
    "image/svg+xml",
];

pub(crate) fn duration(
    errs: &mut Errors,
    at: &str,
    value: Option<&str>,
    positive: bool,
) -> Option<Duration> {
    let v = value?;
    match weir_crds::parse_duration(v) {
        Ok(d) if positive && d.is_zero() => {
            errs.push(format!("{at}: must be positive"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(format!("{at}: {e}"));
            None
        }
    }
}

pub(crate) fn header_name(errs: &mut Errors, at: &str, name: &str) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            errs.push(format!("{at}: {name:?} is not a valid header name"));
            None
        }
    }
}

fn finish(errs: Errors, filter: Filter) -> Result<Filter, Errors> {
    if errs.is_empty() { Ok(filter) } else { Err(errs) }
}

/// `correlationId`.
pub(crate) fn correlation_id(c: &CorrelationIdConfig) -> Result<Filter, Errors> {
    let mut errs = Vec::new();
    let header = match &c.header {
        None => Some(DEFAULT_HEADER),
        Some(h) => header_name(&mut errs, "spec.correlationId.header", h),
    };
    if let Some(h) = &header
        && NEVER_WRITTEN.contains(&h.as_str())
    {
        errs.push(format!("spec.correlationId.header: {h:?} is a hop-by-hop or framing header"));
    }
    let header = header.unwrap_or(DEFAULT_HEADER);
    finish(
        errs,
        Filter::CorrelationId(Arc::new(CorrelationId { header, echo: c.echo.unwrap_or(true) })),
    )
}

/// `ipRestriction`.
pub(crate) fn ip_restriction(c: &IpRestrictionConfig) -> Result<Filter, Errors> {
    let mut errs = Vec::new();
    let mut list = |name: &str, items: &[String]| {
        let mut nets = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match parse_net(item) {
                Ok(n) => nets.push(n),
                Err(e) => errs.push(format!("spec.ipRestriction.{name}[{i}]: {e}")),
            }
        }
        NetSet::new(nets)
    };
    let allow = list("allow", &c.allow);
    let deny = list("deny", &c.deny);
    if c.allow.is_empty() && c.deny.is_empty() {
        errs.push(
            "spec.ipRestriction: at least one of allow or deny must list an address".to_owned(),
        );
    }
    finish(errs, Filter::IpRestriction(Arc::new(IpRestriction { allow, deny })))
}

/// `cors`.
pub(crate) fn cors(c: &CorsConfig) -> Result<Filter, Errors> {
    let mut errs = Vec::new();
    let mut origins = Vec::new();
    for (i, o) in c.allow_origins.iter().enumerate() {
        match parse_origin(o) {
            Ok(p) => origins.push(p),
            Err(e) => errs.push(format!("spec.cors.allowOrigins[{i}]: {e}")),
        }
    }
    if c.allow_origins.is_empty() {
        errs.push("spec.cors.allowOrigins: at least one origin (or \"*\") is required".to_owned());
    }
    if c.allow_credentials && c.allow_origins.iter().any(|o| o == "*") {
        errs.push("spec.cors.allowOrigins: \"*\" cannot be used with allowCredentials".to_owned());
    }
    let mut methods = Vec::new();
    for (i, m) in c.allow_methods.iter().enumerate() {
        if m == "*" {
            continue;
        }
        match crate::compile::routes::parse_method(m) {
            Ok(m) => methods.push(m),
            Err(e) => errs.push(format!("spec.cors.allowMethods[{i}]: {e}")),
        }
    }
    if c.allow_methods.iter().any(|m| m == "*") {
        // `*`: whatever the rule accepts (the announced method).
        methods.clear();
    }
    let mut names = |field: &str, items: &[String], star: bool| {
        let mut out = Vec::new();
        for (i, h) in items.iter().enumerate() {
            if star && h == "*" {
                continue;
            }
            if let Some(n) = header_name(&mut errs, &format!("spec.cors.{field}[{i}]"), h) {
                out.push(n);
            }
        }
        if star && items.iter().any(|h| h == "*") {
            out.clear();
        }
        out
    };
    let headers = names("allowHeaders", &c.allow_headers, true);
    let expose = names("exposeHeaders", &c.expose_headers, false);
    let max_age = duration(&mut errs, "spec.cors.maxAge", c.max_age.as_deref(), false);
    let cors = Cors::new(
        origins,
        methods,
        headers,
        expose,
        c.allow_credentials,
        max_age.map(|d| d.as_secs()),
    );
    finish(errs, Filter::Cors(Arc::new(cors)))
}

fn rewrite_of(
    errs: &mut Errors,
    prefix: Option<&str>,
    full: Option<&str>,
    at: &str,
) -> Option<Rewrite> {
    for (field, value) in [("replacePrefix", prefix), ("replaceFullPath", full)] {
        if let Some(v) = value
            && (!v.starts_with('/')
                || v.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#'))
        {
            errs.push(format!("{at}.{field}: {v:?} must be an absolute path (no query)"));
        }
    }
    match (prefix, full) {
        (Some(_), Some(_)) => {
            errs.push(format!("{at}: replacePrefix and replaceFullPath are mutually exclusive"));
            None
        }
        (None, None) => {
            errs.push(format!("{at}: one of replacePrefix or replaceFullPath is required"));
            None
        }
        (p, f) => Some(Rewrite {
            replace_prefix: p.map(Into::into),
            replace_full_path: f.map(Into::into),
            host: None,
        }),
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `redirect`.
pub(crate) fn redirect(c: &RedirectConfig) -> Result<Filter, Errors> {
    let mut errs = Vec::new();
    if let Some(s) = &c.scheme
        && s != "http"
        && s != "https"
    {
        errs.push(format!("spec.redirect.scheme: {s:?} must be http or https"));
    }
    if let Some(h) = &c.host
        && !valid_hostname(h)
    {
        errs.push(format!("spec.redirect.host: {h:?} is not a host name"));
    }
    if c.port == Some(0) {
        errs.push("spec.redirect.port: must be between 1 and 65535".to_owned());
    }
    let status = c.status_code.unwrap_or(302);
    if ![301, 302, 303, 307, 308].contains(&status) {
        errs.push(format!(
            "spec.redirect.statusCode: {status} is not one of 301, 302, 303, 307, 308"
        ));
    }
    let path = c.path.as_ref().and_then(|p| {
        rewrite_of(
            &mut errs,
            p.replace_prefix.as_deref(),
            p.replace_full_path.as_deref(),
            "spec.redirect.path",
        )
    });
    if c.scheme.is_none() && c.host.is_none() && c.port.is_none() && c.path.is_none() {
        errs.push(
            "spec.redirect: at least one of scheme, host, port or path must be set (else it redirects to itself)"
                .to_owned(),
        );
    }
    let redirect = Redirect {
        scheme: c.scheme.as_deref().map(|s| s.to_ascii_lowercase().into()),
        host: c.host.as_deref().map(|h| h.to_ascii_lowercase().into()),
        port: c.port,
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
        path,
    };
    finish(errs, Filter::Redirect(Arc::new(redirect)))
}

/// `directResponse`.
pub(crate) fn direct_response(c: &DirectResponseConfig) -> Result<Filter, Errors> {
    let mut errs = Vec::new();
    if !(200..=599).contains(&c.status) {
        errs.push(format!("spec.directResponse.status: {} must be between 200 and 599", c.status));
    }
    let body = c.body.clone().unwrap_or_default();
    if body.len() > MAX_DIRECT_BODY {
        errs.push(format!(
            "spec.directResponse.body: {} bytes, at most {MAX_DIRECT_BODY} are allowed",
            body.len()
        ));
    }
    let content_type = match (&c.content_type, body.is_empty()) {
        (Some(ct), _) => match HeaderValue::from_str(ct) {
            Ok(v) if !ct.is_empty() => Some(v),
            _ => {
                errs.push(format!(
                    "spec.directResponse.contentType: {ct:?} is not a valid header value"
                ));
                None
            }
        },
        (None, false) => Some(HeaderValue::from_static("text/plain; charset=utf-8")),
        (None, true) => None,
    };
    let direct = DirectResponse {
        status: StatusCode::from_u16(c.status).unwrap_or(StatusCode::OK),
        body: Bytes::from(body),
        content_type,
    };
    finish(errs, Filter::DirectResponse(Arc::new(direct)))
}

/// `requestSize`.
pub(crate) fn request_size(c: &RequestSizeConfig) -> Result<Filter, Errors> {
    let mut errs = Vec::new();
    let max_body = match c.max_body.bytes() {
        Ok(0) => {
            errs.push("spec.requestSize.maxBody: must be positive".to_owned());
            0
        }
        Ok(n) => n,
        Err(e) => {
            errs.push(format!("spec.requestSize.maxBody: {e}"));
            0
        }
    };
    finish(errs, Filter::RequestSize(Arc::new(RequestSize { max_body })))
}

/// `requestHeaders` (`request`) or `responseHeaders`. `claim_headers`: every jwt plugin's
/// claim headers (identity headers a request transform must not forge).
pub(crate) fn header_transform(
    t: &HeaderTransformConfig,
    request: bool,
    claim_headers: &[HeaderName],
) -> Result<Filter, Errors> {
    let field = if request { "requestHeaders" } else { "responseHeaders" };
    let mut errs = Vec::new();
    let mut entries = |list: &str, items: &[weir_crds::HeaderValue]| {
        let mut out = Vec::new();
        for (i, h) in items.iter().enumerate() {
            let at = format!("spec.{field}.{list}[{i}]");
            let name = header_name(&mut errs, &format!("{at}.name"), &h.name);
            let template =
                Template::parse(&h.value).map_err(|e| errs.push(format!("{at}.value: {e}"))).ok();
            if let (Some(name), Some(template)) = (name, template) {
                match check_target(&name, &template, request, claim_headers) {
                    Ok(()) => out.push((name, template)),
                    Err(e) => errs.push(format!("{at}.name: {e}")),
                }
            }
        }
        out
    };
    let set = entries("set", &t.set);
    let add = entries("add", &t.add);
    let mut remove = Vec::new();
    for (i, h) in t.remove.iter().enumerate() {
        if let Some(n) = header_name(&mut errs, &format!("spec.{field}.remove[{i}]"), h) {
            remove.push(n);
        }
    }
    if t.set.is_empty() && t.add.is_empty() && t.remove.is_empty() {
        errs.push(format!("spec.{field}: at least one of set, add or remove must list a header"));
    }
    let transform =
        Arc::new(HeaderTransform { set: set.into(), add: add.into(), remove: remove.into() });
    finish(
        errs,
        if request {
            Filter::RequestHeaders(transform)
        } else {
            Filter::ResponseHeaders(transform)
        },
    )
}

fn media_range_ok(s: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match s.split_once('/') {
        Some((t, "*")) => token(t),
        Some((t, sub)) => token(t) && (token(sub) || sub.strip_prefix("*+").is_some_and(token)),
        None => false,
    }
}

/// `compression`.
pub(crate) fn compression(c: &CompressionConfig) -> Result<Filter, Errors> {
    let mut errs = Vec::new();
    let mut codings: Vec<Coding> = Vec::new();
    let types = if c.types.is_empty() {
        &[CompressionType::Zstd, CompressionType::Brotli, CompressionType::Gzip][..]
    } else {
        &c.types[..]
    };
    for t in types {
        let coding = match t {
            CompressionType::Gzip => Coding::Gzip,
            CompressionType::Brotli => Coding::Brotli,
            CompressionType::Zstd => Coding::Zstd,
        };
        if !codings.contains(&coding) {
            codings.push(coding);
        }
    }
    let min_length = match &c.min_length {
        None => DEFAULT_MIN_LENGTH,
        Some(q) => q.bytes().unwrap_or_else(|e| {
            errs.push(format!("spec.compression.minLength: {e}"));
            0
        }),
    };
    let mut content_types: Vec<Box<str>> = Vec::new();
    if c.content_types.is_empty() {
        content_types.extend(DEFAULT_CONTENT_TYPES.iter().map(|t| Box::from(*t)));
    }
    for (i, t) in c.content_types.iter().enumerate() {
        let lower = t.trim().to_ascii_lowercase();
        if !media_range_ok(&lower) {
            errs.push(format!("spec.compression.contentTypes[{i}]: {t:?} is not a media type (type/subtype, type/* or type/*+suffix)"));
        } else if lower == "text/event-stream" || lower.starts_with("application/grpc") {
            errs.push(format!(
                "spec.compression.contentTypes[{i}]: {t:?} is never compressed (streams)"
            ));
        } else {
            content_types.push(lower.into());
        }
    }
    let compression =
        Compression { codings: codings.into(), min_length, content_types: content_types.into() };
    finish(errs, Filter::Compression(Arc::new(compression)))
}

/// The filter of a kind that needs nothing but its config, `None` for the kinds the filter
/// builder makes with more context (jwt, keyAuth, extAuth, rateLimit) or cannot make.
pub(crate) fn standalone_filter(
    config: weir_crds::PluginConfig<'_>,
    claim_headers: &[HeaderName],
) -> Option<Result<Filter, Errors>> {
    use weir_crds::PluginConfig as C;
    Some(match config {
        C::CorrelationId(c) => correlation_id(c),
        C::IpRestriction(c) => ip_restriction(c),
        C::Cors(c) => cors(c),
        C::Redirect(c) => redirect(c),
        C::DirectResponse(c) => direct_response(c),
        C::RequestSize(c) => request_size(c),
        C::RequestHeaders(t) => header_transform(t, true, claim_headers),
        C::ResponseHeaders(t) => header_transform(t, false, claim_headers),
        C::Compression(c) => compression(c),
        C::Jwt(_) | C::KeyAuth(_) | C::ExtAuth(_) | C::RateLimit(_) | C::Cache(_) => return None,
    })
}
