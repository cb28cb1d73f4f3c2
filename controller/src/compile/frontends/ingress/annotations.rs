//! The annotations an Ingress can carry: weir's `weir.dev/*` settings (parsed into
//! [`Options`]) and ingress-nginx's (tuning knobs ignored, everything else rejected by name
//! with the weir equivalent). See docs/ingress.md.

use k8s_openapi::api::networking::v1::Ingress;
use weir_crds::Timeouts;

/// The `weir.dev/*` annotations weir reads on an Ingress.
pub const ANNOTATIONS: &[&str] = &[
    "weir.dev/plugins",
    "weir.dev/skip-global-plugins",
    "weir.dev/request-timeout",
    "weir.dev/connect-timeout",
    "weir.dev/idle-timeout",
    "weir.dev/retries",
    "weir.dev/rewrite-target",
    "weir.dev/upstream-host",
    "weir.dev/ssl-redirect",
];

/// ingress-nginx annotations that only tune nginx itself (buffers, logging, keep-alive):
/// ignored. Every other `nginx.ingress.kubernetes.io/*` annotation changes what is served
/// or who may reach it, so it makes the Ingress `Accepted=False` ([`NGINX_EQUIVALENTS`]).
const NGINX_IGNORED: &[&str] = &[
    "proxy-buffering",
    "proxy-buffer-size",
    "proxy-buffers-number",
    "proxy-max-temp-file-size",
    "proxy-request-buffering",
    "client-body-buffer-size",
    "proxy-send-timeout",
    "proxy-http-version",
    "upstream-keepalive-connections",
    "upstream-keepalive-timeout",
    "upstream-keepalive-requests",
    "enable-access-log",
    "enable-rewrite-log",
    "enable-opentracing",
    "enable-opentelemetry",
    "opentelemetry-trust-incoming-span",
    "proxy-next-upstream-tries",
    "load-balance",
    "service-upstream",
    "ssl-prefer-server-ciphers",
];

/// The weir equivalent of common ingress-nginx annotations, named in the rejection.
const NGINX_EQUIVALENTS: &[(&str, &str)] = &[
    ("auth-url", "an extAuth Plugin named in weir.dev/plugins"),
    ("auth-type", "a keyAuth, jwt or extAuth Plugin named in weir.dev/plugins"),
    ("auth-secret", "a keyAuth or jwt Plugin and Consumers"),
    ("auth-tls-secret", "a Route with tls.clientCA"),
    ("auth-tls-verify-client", "a Route with tls.clientCA"),
    ("whitelist-source-range", "an ipRestriction Plugin named in weir.dev/plugins"),
    ("allowlist-source-range", "an ipRestriction Plugin named in weir.dev/plugins"),
    ("denylist-source-range", "an ipRestriction Plugin named in weir.dev/plugins"),
    ("limit-rps", "a rateLimit Plugin named in weir.dev/plugins"),
    ("limit-rpm", "a rateLimit Plugin named in weir.dev/plugins"),
    ("limit-connections", "a rateLimit Plugin named in weir.dev/plugins"),
    ("enable-cors", "a cors Plugin named in weir.dev/plugins"),
    ("proxy-body-size", "a requestSize Plugin named in weir.dev/plugins"),
    ("rewrite-target", "weir.dev/rewrite-target"),
    ("ssl-redirect", "weir.dev/ssl-redirect"),
    ("force-ssl-redirect", "weir.dev/ssl-redirect"),
    ("proxy-read-timeout", "weir.dev/request-timeout"),
    ("proxy-connect-timeout", "weir.dev/connect-timeout"),
    ("upstream-vhost", "weir.dev/upstream-host"),
    ("backend-protocol", "the Service port's appProtocol"),
    ("canary", "a weir Route with weighted backends"),
    ("canary-weight", "a weir Route with weighted backends"),
    ("canary-by-header", "a weir Route with a header match"),
    ("affinity", "a BackendPolicy with loadBalancer type ConsistentHash (Cookie)"),
    ("session-cookie-name", "a BackendPolicy with consistentHash cookie name"),
];

const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The parsed `weir.dev/*` annotations.
#[derive(Debug, Default)]
pub(super) struct Options {
    pub(super) plugins: Vec<String>,
    pub(super) skip_global_plugins: Vec<String>,
    pub(super) timeouts: Option<Timeouts>,
    pub(super) retries: Option<u32>,
    pub(super) rewrite_target: Option<String>,
    pub(super) upstream_host: Option<String>,
    pub(super) ssl_redirect: bool,
}

fn list(value: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).collect();
    if items.iter().any(String::is_empty) {
        return Err(format!("{value:?} is not a comma-separated list of names"));
    }
    Ok(items)
}

fn duration(value: &str) -> Result<String, String> {
    weir_crds::duration::parse_duration(value)
        .map(|_| value.to_owned())
        .map_err(|e| format!("{value:?} is not a duration ({e})"))
}

/// Parses the annotations: the options, errors (`Accepted=False` reason `Invalid`) and
/// unsupported ones (reason `Unsupported`).
pub(super) fn options(ingress: &Ingress) -> (Options, Vec<String>, Vec<String>) {
    let mut out = Options { ssl_redirect: true, ..Options::default() };
    let mut errors = Vec::new();
    let mut unsupported = Vec::new();
    let Some(annotations) = ingress.metadata.annotations.as_ref() else {
        return (out, errors, unsupported);
    };
    let mut timeouts = Timeouts::default();
    for (name, value) in annotations {
        if let Some(nginx) = name.strip_prefix(NGINX_PREFIX) {
            if NGINX_IGNORED.contains(&nginx) {
                continue;
            }
            let hint = NGINX_EQUIVALENTS
                .iter()
                .find(|(n, _)| *n == nginx)
                .map_or("see docs/ingress.md (migration from ingress-nginx)", |(_, w)| w);
            unsupported.push(format!(
                "annotation {name} is not supported by weir (use {hint}); remove it"
            ));
            continue;
        }
        if !name.starts_with("weir.dev/") {
            continue;
        }
        let result: Result<(), String> = match name.as_str() {
            "weir.dev/plugins" => list(value).map(|l| out.plugins = l),
            "weir.dev/skip-global-plugins" => list(value).map(|l| out.skip_global_plugins = l),
            "weir.dev/request-timeout" => duration(value).map(|d| timeouts.request = Some(d)),
            "weir.dev/connect-timeout" => duration(value).map(|d| timeouts.connect = Some(d)),
            "weir.dev/idle-timeout" => duration(value).map(|d| timeouts.idle = Some(d)),
            "weir.dev/retries" => value
                .trim()
                .parse::<u32>()
                .map(|n| out.retries = Some(n))
                .map_err(|_| format!("{value:?} is not a whole number of retries")),
            "weir.dev/rewrite-target" => {
                if value.starts_with('/') {
                    out.rewrite_target = Some(value.clone());
                    Ok(())
                } else {
                    Err(format!("{value:?} must start with '/'"))
                }
            }
            "weir.dev/upstream-host" => {
                if !value.is_empty() && http::HeaderValue::from_str(value).is_ok() {
                    out.upstream_host = Some(value.clone());
                    Ok(())
                } else {
                    Err(format!("{value:?} is not a valid Host header value"))
                }
            }
            "weir.dev/ssl-redirect" => match value.as_str() {
                "true" => {
                    out.ssl_redirect = true;
                    Ok(())
                }
                "false" => {
                    out.ssl_redirect = false;
                    Ok(())
                }
                _ => Err(format!("{value:?} must be \"true\" or \"false\"")),
            },
            _ => Err(format!("unknown annotation (weir reads {})", ANNOTATIONS.join(", "))),
        };
        if let Err(e) = result {
            errors.push(format!("annotation {name}: {e}"));
        }
    }
    if timeouts != Timeouts::default() {
        out.timeouts = Some(timeouts);
    }
    (out, errors, unsupported)
}
