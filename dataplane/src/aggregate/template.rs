//! A part's path template, parsed once: literal text, `${path.NAME}` (a segment captured by
//! `{NAME}` in the rule's path match, inserted as received, still percent-encoded) and
//! `${query.NAME}` (the request's query parameter, decoded and re-encoded for a URI
//! component; empty when absent).

use http::uri::PathAndQuery;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};

/// Everything but the RFC 3986 unreserved characters is percent-encoded in a
/// `${query.NAME}` value, so it stays one component wherever the template puts it.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Box<str>),
    /// A `${path.NAME}` variable, by slot.
    Path(usize),
    /// A `${query.NAME}` parameter name.
    Query(Box<str>),
}

/// A parsed part path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pieces: Box<[Piece]>,
    /// Bytes of literal text, to size the rendered path.
    literal_len: usize,
    /// The template as written (for `/debug/snapshot`).
    text: Box<str>,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Not starting with `/`.
    #[error("{0:?} must start with '/'")]
    NotAbsolute(String),
    /// `${` without `}`.
    #[error("unterminated ${{ in {0:?}")]
    Unterminated(String),
    /// `${x}` that is neither `${path.NAME}` nor `${query.NAME}`.
    #[error(
        "unknown variable ${{{0}}}: use ${{path.NAME}} (a {{NAME}} capture of the rule's path) or ${{query.NAME}}"
    )]
    Unknown(String),
    /// A `${path.NAME}` whose name is not an identifier.
    #[error("${{path.{0}}}: a capture name is a letter or '_' followed by letters, digits or '_'")]
    BadName(String),
    /// Literal text that is not valid in a path and query (whitespace, `#`, ...).
    #[error("{0:?} is not a valid path and query")]
    Invalid(String),
}

/// Whether `name` is a valid capture name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_capture_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl PathTemplate {
    /// Parses `text`; each new `${path.NAME}` gets the next slot in `variables` (shared by
    /// the parts of one aggregate).
    pub fn parse(text: &str, variables: &mut Vec<Box<str>>) -> Result<Self, TemplateError> {
        if !text.starts_with('/') {
            return Err(TemplateError::NotAbsolute(text.to_owned()));
        }
        let mut pieces = Vec::new();
        let mut literal_len = 0;
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Literal(rest[..start].into()));
                literal_len += start;
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(TemplateError::Unterminated(text.to_owned()));
            };
            let variable = &after[..end];
            if let Some(name) = variable.strip_prefix("path.") {
                if !valid_capture_name(name) {
                    return Err(TemplateError::BadName(name.to_owned()));
                }
                let slot = match variables.iter().position(|v| &**v == name) {
                    Some(slot) => slot,
                    None => {
                        variables.push(name.into());
                        variables.len() - 1
                    }
                };
                pieces.push(Piece::Path(slot));
            } else if let Some(name) = variable.strip_prefix("query.").filter(|n| !n.is_empty()) {
                pieces.push(Piece::Query(name.into()));
            } else {
                return Err(TemplateError::Unknown(variable.to_owned()));
            }
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.into()));
            literal_len += rest.len();
        }
        let template =
            PathTemplate { pieces: pieces.into_boxed_slice(), literal_len, text: text.into() };
        // Variables render as URI-safe text: the literal text decides validity.
        let sample = template.render(&vec!["x"; variables.len()], None);
        if PathAndQuery::try_from(sample.as_str()).is_err() || sample.contains('#') {
            return Err(TemplateError::Invalid(text.to_owned()));
        }
        Ok(template)
    }

    /// The `${path.NAME}` slots this template uses.
    pub fn path_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Path(slot) => Some(*slot),
            _ => None,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The path and query for one request: `captured` by variable slot, `query` the
    /// request's query string.
    pub fn render(&self, captured: &[&str], query: Option<&str>) -> String {
        let mut out = String::with_capacity(self.literal_len + 16);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Path(slot) => out.push_str(captured.get(*slot).copied().unwrap_or("")),
                Piece::Query(name) => {
                    if let Some(value) = query_param(query, name) {
                        out.extend(percent_encode(&value, COMPONENT));
                    }
                }
            }
        }
        out
    }
}

/// The first value of query parameter `name` (names and values percent-decoded, `+` taken
/// literally, as the router's query conditions do).
fn query_param(query: Option<&str>, name: &str) -> Option<Vec<u8>> {
    for pair in query?.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode_str(k).eq(name.bytes()) {
            return Some(percent_decode_str(v).collect());
        }
    }
    None
}

/// Whether a captured segment is `.` or `..` once decoded (`%2E%2E`): inserted into a part
/// path, the part's server could resolve it as a dot segment and leave the template's path.
pub(crate) fn is_dot_segment(segment: &str) -> bool {
    let decoded: Vec<u8> = percent_decode_str(segment).collect();
    decoded == b"." || decoded == b".."
}
