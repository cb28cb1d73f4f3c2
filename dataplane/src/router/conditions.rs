//! Method, header and query-parameter conditions of a match entry, checked per request
//! without allocation (except for percent-encoded query parameters).

use std::borrow::Cow;

use http::HeaderMap;

use super::RequestView;
use crate::snapshot::{HeaderMatcher, QueryMatcher, RequestMatch, ValueMatch};

/// True when the method, every header condition and every query condition hold.
#[inline]
pub(crate) fn hold(m: &RequestMatch, req: &RequestView<'_>) -> bool {
    let methods = m.methods();
    (methods.is_empty() || methods.iter().any(|x| x == req.method))
        && m.headers().iter().all(|h| header_holds(h, req.headers))
        && m.query().iter().all(|q| query_holds(q, req.query))
}

/// Checks a value condition against raw bytes. Exact compares bytes (case-sensitive, as the
/// Gateway API says); a regex needs valid UTF-8.
#[inline]
fn value_holds(cond: &ValueMatch, value: &[u8]) -> bool {
    match cond {
        ValueMatch::Present => true,
        ValueMatch::Exact(want) => want.as_bytes() == value,
        ValueMatch::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
    }
}

/// A header condition holds when any of the header's values satisfies it.
fn header_holds(h: &HeaderMatcher, headers: &HeaderMap) -> bool {
    headers.get_all(&h.name).iter().any(|v| value_holds(&h.value, v.as_bytes()))
}

/// A query condition is checked against the first occurrence of the parameter (the Gateway
/// API's recommendation for repeated parameters). Names and values are percent-decoded
/// only when they contain `%`; `+` is taken literally.
fn query_holds(q: &QueryMatcher, query: Option<&str>) -> bool {
    let Some(query) = query else {
        return false;
    };
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if *decode(name) != *q.name.as_bytes() {
            continue;
        }
        return value_holds(&q.value, &decode(value));
    }
    false
}

/// Percent-decodes `s`, borrowing when there is nothing to decode. Malformed escapes are
/// kept as they are.
pub(crate) fn decode(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('%') {
        return Cow::Borrowed(s.as_bytes());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let (Some(h), Some(l)) =
                (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes_only() {
        assert_eq!(&*decode("a%20b"), b"a b");
        assert_eq!(&*decode("a+b"), b"a+b");
        assert_eq!(&*decode("100%"), b"100%");
        assert_eq!(&*decode("%zz%2F"), b"%zz/");
        assert!(matches!(decode("plain"), Cow::Borrowed(_)));
    }
}
