//! Path captures (`{name}` segments of an Exact or Prefix path) and a rule's `aggregate`:
//! validated here, each error naming its field, and built into the data plane's
//! [`Aggregate`] once the part backends are interned.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use regex::Regex;
use weir_crds::RouteRule;
use weir_dataplane::aggregate::{
    Aggregate, DEFAULT_MAX_BODY_SIZE, DEFAULT_TIMEOUT, Part, PathTemplate,
    template::valid_capture_name,
};
use weir_dataplane::{BackendKey, RequestMatch};

use super::At;
use crate::compile::backends::BackendInterner;

/// The regex of an Exact or Prefix path with `{name}` segments, `None` without any `{`.
/// Each `{name}` becomes `(?P<name>[^/]+)`, the literal text is escaped; Exact is anchored
/// at both ends, Prefix matches on a segment boundary (`(?:/.*)?` after it).
pub(crate) fn capture_regex(value: &str, exact: bool) -> Result<Option<Regex>, String> {
    if !value.contains('{') {
        return Ok(None);
    }
    let trimmed = if exact { value } else { value.trim_end_matches('/') };
    let mut pattern = String::from("^");
    let mut names: Vec<&str> = Vec::new();
    for (i, segment) in trimmed.split('/').enumerate() {
        if i > 0 {
            pattern.push('/');
        }
        let name = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        match name {
            Some(name) => {
                if !valid_capture_name(name) {
                    return Err(format!(
                        "capture {{{name}}}: a capture name is a letter or '_' followed by letters, digits or '_'"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!("capture {{{name}}} appears twice"));
                }
                names.push(name);
                pattern.push_str(&format!("(?P<{name}>[^/]+)"));
            }
            None if segment.contains(['{', '}']) => {
                return Err(format!(
                    "segment {segment:?}: a capture is a whole segment {{name}} (a '{{' or '}}' elsewhere is not allowed)"
                ));
            }
            None => pattern.push_str(&regex::escape(segment)),
        }
    }
    pattern.push_str(if exact { "$" } else { "(?:/.*)?$" });
    Regex::new(&pattern).map(Some).map_err(|e| format!("path {value:?}: {e}"))
}

/// A validated part whose backend is not yet interned.
#[derive(Debug)]
struct ValidPart {
    key: String,
    backend: BackendKey,
    host: HeaderValue,
    path: PathTemplate,
    optional: bool,
    timeout: Option<Duration>,
    max_body_size: u64,
}

/// A validated `aggregate`.
#[derive(Debug)]
pub(crate) struct ValidAggregate {
    timeout: Duration,
    parts: Vec<ValidPart>,
    variables: Vec<Box<str>>,
}

impl ValidAggregate {
    /// The data plane's aggregate, with the part backends interned (so they are in the
    /// backend table like `backends`: endpoints, policies, health and breakers apply).
    pub(crate) fn build(
        self,
        matches: &[RequestMatch],
        interner: &mut BackendInterner,
    ) -> Option<Arc<Aggregate>> {
        let parts = self
            .parts
            .into_iter()
            .map(|p| {
                Part::new(
                    &p.key,
                    interner.intern(p.backend),
                    p.host,
                    p.path,
                    p.optional,
                    p.timeout.unwrap_or(self.timeout),
                    p.max_body_size,
                )
            })
            .collect();
        // Validation checked every capture against every match: this cannot fail.
        Aggregate::new(self.timeout, parts, self.variables, matches).ok().map(Arc::new)
    }
}

/// The backend keys of a rule's aggregate parts, with their field paths.
pub(crate) fn part_backends<'r>(
    namespace: &'r str,
    rule: &'r RouteRule,
) -> impl Iterator<Item = (usize, BackendKey)> + 'r {
    let parts = rule.aggregate.iter().flat_map(|a| a.parts.iter()).enumerate();
    parts.filter(|(_, p)| !p.service.is_empty()).map(move |(j, p)| {
        let key = BackendKey {
            namespace: namespace.into(),
            service: p.service.as_str().into(),
            port: p.port.unwrap_or(0),
        };
        (j, key)
    })
}

fn duration(at: &dyn std::fmt::Display, raw: &str, errs: &mut Vec<String>) -> Option<Duration> {
    match weir_crds::parse_duration(raw) {
        Ok(d) if d.is_zero() => {
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

/// Validates the `aggregate` of `rule` (compiled matches `matches`), each error naming
/// its field under `at` (`spec.rules[i]`).
pub(crate) fn validate(
    namespace: &str,
    rule: &RouteRule,
    matches: &[RequestMatch],
    at: &At<'_>,
    errs: &mut Vec<String>,
) -> Option<ValidAggregate> {
    let aggregate = rule.aggregate.as_ref()?;
    let rule_at = at;
    let field = At::Field(at, "aggregate");
    let at = &field;
    let before = errs.len();
    if !rule.backends.is_empty() {
        errs.push(format!("{at}: a rule has either backends or aggregate, not both"));
    }
    if rule.rewrite.is_some() {
        errs.push(format!(
            "{at}: a rule with aggregate cannot have rewrite (each part's path is its own)"
        ));
    }
    let timeout = match &aggregate.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => duration(&At::Field(at, "timeout"), t, errs).unwrap_or(DEFAULT_TIMEOUT),
    };
    if aggregate.parts.is_empty() {
        errs.push(format!("{at}.parts: at least one part is required"));
    }
    let mut variables = Vec::new();
    let mut parts = Vec::with_capacity(aggregate.parts.len());
    for (j, p) in aggregate.parts.iter().enumerate() {
        let item = At::Item(at, "parts", j);
        let at = &item;
        if p.key.is_empty() {
            errs.push(format!("{at}.key: must not be empty"));
        }
        if aggregate.parts[..j].iter().any(|q| q.key == p.key) {
            errs.push(format!("{at}.key: duplicate key {:?}", p.key));
        }
        if p.service.is_empty() {
            errs.push(format!("{at}.service: must not be empty"));
        }
        if let Some(port) = p.port.filter(|p| !(1..=65535).contains(p)) {
            errs.push(format!("{at}.port: {port} is not in 1..65535"));
        }
        let path = PathTemplate::parse(&p.path, &mut variables)
            .map_err(|e| errs.push(format!("{at}.path: {e}")))
            .ok();
        // Every `${path.NAME}` of this part must be captured by every match of the rule.
        for slot in path.iter().flat_map(PathTemplate::path_slots) {
            let Some(name) = variables.get(slot) else { continue };
            let missing = matches.iter().position(|m| {
                !weir_dataplane::aggregate::capture_names(&m.path).any(|n| n == &**name)
            });
            if let Some(k) = missing {
                errs.push(format!(
                    "{at}.path: ${{path.{name}}} is not captured by {rule_at}.matches[{k}] (every match of the rule needs a {{{name}}} segment in its Exact or Prefix path)"
                ));
            }
        }
        let part_timeout =
            p.timeout.as_ref().and_then(|t| duration(&At::Field(at, "timeout"), t, errs));
        if let Some(t) = part_timeout.filter(|t| *t > timeout) {
            errs.push(format!(
                "{at}.timeout: {t:?} is longer than the aggregate's timeout ({timeout:?})"
            ));
        }
        let max_body_size = match &p.max_body_size {
            None => DEFAULT_MAX_BODY_SIZE,
            Some(q) => match q.bytes() {
                Ok(0) => {
                    errs.push(format!("{at}.maxBodySize: must be positive"));
                    0
                }
                Ok(n) => n,
                Err(e) => {
                    errs.push(format!("{at}.maxBodySize: {e}"));
                    0
                }
            },
        };
        let port = p.port.unwrap_or(0);
        let host_text = match port {
            0 | 80 => format!("{}.{namespace}.svc", p.service),
            port => format!("{}.{namespace}.svc:{port}", p.service),
        };
        let host = HeaderValue::from_str(&host_text)
            .map_err(|_| errs.push(format!("{at}.service: {:?} is not a valid name", p.service)))
            .ok();
        if let (Some(path), Some(host)) = (path, host) {
            parts.push(ValidPart {
                key: p.key.clone(),
                backend: BackendKey {
                    namespace: namespace.into(),
                    service: p.service.as_str().into(),
                    port,
                },
                host,
                path,
                optional: p.optional,
                timeout: part_timeout,
                max_body_size,
            });
        }
    }
    (errs.len() == before).then_some(ValidAggregate { timeout, parts, variables })
}
