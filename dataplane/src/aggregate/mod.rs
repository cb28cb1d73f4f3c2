//! API composition: a Route rule with `aggregate` answers one JSON object made of the JSON
//! answers of several parts, each a `GET` to a backend, fetched in parallel.
//!
//! The compiler builds an [`Aggregate`] per rule: the parts with their backend ids (in the
//! same [`BackendTable`](crate::snapshot::BackendTable) as `backends`, so balancing,
//! timeouts, retries, health and the circuit breaker apply to parts too), their path
//! templates parsed once ([`PathTemplate`]), and, for every match entry of the rule, the
//! capture group of each `${path.NAME}` variable. Per request, [`respond`] renders each
//! part's path, sends the parts through [`crate::proxy::forward::send`] concurrently in the
//! request's task, reads and validates each body as JSON within its size cap and deadline,
//! and concatenates the validated texts under their keys (no re-serialization).
//!
//! A rule without `aggregate` pays one `Option` check in the proxy.

mod respond;
pub mod template;

use std::time::Duration;

use http::HeaderValue;

pub(crate) use respond::respond;
pub use template::{PathTemplate, TemplateError};

use crate::snapshot::{BackendId, PathMatch, RequestMatch};

/// `aggregate.timeout` when unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// A part's `maxBodySize` when unset: 1 MiB.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1 << 20;
/// The answer's header that says whether every part is in it.
pub const X_WEIR_COMPLETED: http::HeaderName = http::HeaderName::from_static("x-weir-completed");

/// A rule's composed answer, compiled.
#[derive(Debug)]
pub struct Aggregate {
    /// Deadline for the whole answer, from the moment the fan-out starts.
    pub timeout: Duration,
    /// The parts, in their declared order (the order of the answer's keys).
    pub parts: Box<[Part]>,
    /// The `${path.NAME}` variables used by any part, by slot.
    variables: Box<[Box<str>]>,
    /// For each match entry of the rule (in the rule's order): the capture group index of
    /// each variable slot in that entry's path regex.
    groups: Box<[Box<[usize]>]>,
}

/// One part of a composed answer.
#[derive(Debug)]
pub struct Part {
    /// The key in the answer.
    pub key: Box<str>,
    /// The key as a JSON string (with quotes), written as is into the answer.
    key_json: Box<str>,
    /// The backend fetched.
    pub backend: BackendId,
    /// `Host` sent to the part: `<service>.<namespace>.svc` (with `:port` unless 80).
    pub host: HeaderValue,
    /// The path and query template.
    pub path: PathTemplate,
    /// A failed optional part is `null`; a failed required part fails the answer.
    pub optional: bool,
    /// The part's own deadline (at most the aggregate's).
    pub timeout: Duration,
    /// The largest body read.
    pub max_body_size: u64,
}

impl Part {
    /// A part; `timeout` is capped by the aggregate's when the [`Aggregate`] is built.
    pub fn new(
        key: &str,
        backend: BackendId,
        host: HeaderValue,
        path: PathTemplate,
        optional: bool,
        timeout: Duration,
        max_body_size: u64,
    ) -> Self {
        let key_json = serde_json::Value::from(key).to_string().into_boxed_str();
        Part { key: key.into(), key_json, backend, host, path, optional, timeout, max_body_size }
    }
}

/// A `${path.NAME}` variable that a match entry of the rule does not capture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "${{path.{name}}} is not captured by matches[{match_index}] (its path has no {{{name}}} segment)"
)]
pub struct MissingCapture {
    /// The variable.
    pub name: Box<str>,
    /// The match entry without it.
    pub match_index: usize,
}

/// The capture names of a path condition (`{name}` segments compiled into a regex).
pub fn capture_names(path: &PathMatch) -> impl Iterator<Item = &str> {
    let names = match path {
        PathMatch::Regex(re) => Some(re.capture_names().flatten()),
        _ => None,
    };
    names.into_iter().flatten()
}

impl Aggregate {
    /// Binds the parts' path variables (collected by [`PathTemplate::parse`] into
    /// `variables`) to the capture groups of every match entry of the rule.
    pub fn new(
        timeout: Duration,
        parts: Vec<Part>,
        variables: Vec<Box<str>>,
        matches: &[RequestMatch],
    ) -> Result<Self, MissingCapture> {
        let mut groups = Vec::with_capacity(matches.len());
        for (match_index, m) in matches.iter().enumerate() {
            let mut slots = Vec::with_capacity(variables.len());
            for name in &variables {
                let group = match &m.path {
                    PathMatch::Regex(re) => re.capture_names().position(|n| n == Some(&**name)),
                    _ => None,
                };
                match group {
                    Some(g) => slots.push(g),
                    None => return Err(MissingCapture { name: name.clone(), match_index }),
                }
            }
            groups.push(slots.into_boxed_slice());
        }
        let parts =
            parts.into_iter().map(|p| Part { timeout: p.timeout.min(timeout), ..p }).collect();
        Ok(Aggregate {
            timeout,
            parts,
            variables: variables.into_boxed_slice(),
            groups: groups.into_boxed_slice(),
        })
    }

    /// The path variables, by slot.
    pub fn variables(&self) -> &[Box<str>] {
        &self.variables
    }

    /// The captured segments of `path` (as received) by variable slot, for the match entry
    /// `matched` of `matches`; `None` when the entry's regex does not match (it matched
    /// when the router chose it, so only on a table inconsistency).
    pub(crate) fn captures<'p>(
        &self,
        matches: &[RequestMatch],
        matched: &RequestMatch,
        path: &'p str,
    ) -> Option<Vec<&'p str>> {
        if self.variables.is_empty() {
            return Some(Vec::new());
        }
        let index = matches.iter().position(|m| std::ptr::eq(m, matched))?;
        let groups = self.groups.get(index)?;
        let PathMatch::Regex(re) = &matched.path else {
            return None;
        };
        let caps = re.captures(path)?;
        groups.iter().map(|g| caps.get(*g).map(|m| m.as_str())).collect()
    }

    /// The answer's body: `{"key": part, ...}` in the parts' order, `null` for a missing
    /// part. Every part is JSON text already validated.
    pub fn merge(&self, results: &[Option<bytes::Bytes>]) -> bytes::Bytes {
        let size: usize = self
            .parts
            .iter()
            .zip(results)
            .map(|(p, r)| p.key_json.len() + 2 + r.as_ref().map_or(4, bytes::Bytes::len))
            .sum();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'{');
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(part.key_json.as_bytes());
            out.push(b':');
            match results.get(i).and_then(Option::as_ref) {
                Some(json) => out.extend_from_slice(json),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'}');
        bytes::Bytes::from(out)
    }
}

#[cfg(test)]
mod tests;
