//! Which responses may be compressed: the media type against the configured ranges, and
//! the header rules (`Content-Encoding`, `Cache-Control: no-transform`, `Content-Length`).

use http::HeaderMap;
use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};

/// The media type of `Content-Type` (`type/subtype`, parameters and whitespace dropped),
/// when there is a readable one.
pub(super) fn media_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or("").trim();
    (!essence.is_empty()).then_some(essence)
}

/// Streams that must reach the client as they are produced, and gRPC (its own
/// per-message compression): never compressed, whatever the configured list says.
fn never_compressed(media_type: &str) -> bool {
    media_type.eq_ignore_ascii_case("text/event-stream")
        || media_type.get(..16).is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
}

/// Whether `media_type` matches the media range `pattern` (lower-case, as the controller
/// writes it): `type/subtype` exactly, `type/*`, `type/*+suffix` (`application/*+json`
/// matches `application/problem+json`), or `*/*`. Case-insensitive.
pub(super) fn matches(pattern: &str, media_type: &str) -> bool {
    let (Some((p_type, p_sub)), Some((m_type, m_sub))) =
        (pattern.split_once('/'), media_type.split_once('/'))
    else {
        return false;
    };
    if p_type == "*" {
        return p_sub == "*";
    }
    if !p_type.eq_ignore_ascii_case(m_type) {
        return false;
    }
    match p_sub {
        "*" => true,
        _ => match p_sub.strip_prefix("*+") {
            Some(suffix) => m_sub
                .rsplit_once('+')
                .is_some_and(|(head, tail)| !head.is_empty() && tail.eq_ignore_ascii_case(suffix)),
            None => p_sub.eq_ignore_ascii_case(m_sub),
        },
    }
}

/// Whether a response of `media_type` is compressed under `patterns`.
pub(super) fn compressible(patterns: &[Box<str>], media_type: &str) -> bool {
    !never_compressed(media_type) && patterns.iter().any(|p| matches(p, media_type))
}

/// The response already carries a content coding other than `identity`.
pub(super) fn already_encoded(headers: &HeaderMap) -> bool {
    headers.get_all(CONTENT_ENCODING).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
    })
}

/// `Cache-Control` forbids transforming the content (RFC 9111 §5.2.2.6).
pub(super) fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|directive| {
            let name = directive.split(|&b| b == b'=').next().unwrap_or(&[]);
            name.trim_ascii().eq_ignore_ascii_case(b"no-transform")
        })
    })
}

/// What `Content-Length` says: `Ok(None)` without one, `Err` when it is unreadable.
pub(super) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    match headers.get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse().ok()).map(Some).ok_or(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn media_ranges() {
        for (pattern, media_type, want) in [
            ("application/json", "application/json", true),
            ("application/json", "Application/JSON", true),
            ("application/json", "application/jsonx", false),
            ("application/json", "application/problem+json", false),
            ("text/*", "text/html", true),
            ("text/*", "text/plain", true),
            ("text/*", "texts/plain", false),
            ("text/*", "application/text", false),
            ("application/*+json", "application/problem+json", true),
            ("application/*+json", "application/vnd.api+JSON", true),
            ("application/*+json", "application/json", false),
            ("application/*+json", "application/+json", false),
            ("application/*+json", "application/x+json+xml", false),
            ("application/*+xml", "application/atom+xml", true),
            ("image/svg+xml", "image/svg+xml", true),
            ("*/*", "image/png", true),
            ("application/json", "json", false),
            ("text", "text/plain", false),
        ] {
            assert_eq!(matches(pattern, media_type), want, "{pattern} vs {media_type}");
        }
    }

    #[test]
    fn content_type_parameters_are_ignored() {
        let h = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert_eq!(media_type(&h), Some("application/json"));
        let h = headers(&[("content-type", " text/html ;charset=\"a;b\"")]);
        assert_eq!(media_type(&h), Some("text/html"));
        assert_eq!(media_type(&headers(&[("content-type", ";x=1")])), None);
        assert_eq!(media_type(&HeaderMap::new()), None);
    }

    #[test]
    fn streams_and_grpc_are_never_compressed() {
        let all: Vec<Box<str>> = vec!["*/*".into(), "text/*".into(), "application/*".into()];
        assert!(compressible(&all, "text/html"));
        assert!(!compressible(&all, "text/event-stream"));
        assert!(!compressible(&all, "Text/Event-Stream"));
        assert!(!compressible(&all, "application/grpc"));
        assert!(!compressible(&all, "application/grpc+proto"));
        assert!(!compressible(&all, "application/grpc-web+json"));
        assert!(compressible(&all, "application/grp"));
        assert!(!compressible(&[], "text/html"));
    }

    #[test]
    fn header_rules() {
        assert!(!already_encoded(&HeaderMap::new()));
        assert!(!already_encoded(&headers(&[("content-encoding", "identity")])));
        assert!(!already_encoded(&headers(&[("content-encoding", "Identity, ")])));
        assert!(already_encoded(&headers(&[("content-encoding", "gzip")])));
        assert!(already_encoded(&headers(&[("content-encoding", "identity, br")])));
        assert!(already_encoded(&headers(&[
            ("content-encoding", "identity"),
            ("content-encoding", "zstd")
        ])));

        assert!(!no_transform(&headers(&[("cache-control", "max-age=60, public")])));
        assert!(no_transform(&headers(&[("cache-control", "max-age=60, No-Transform")])));
        assert!(no_transform(&headers(&[
            ("cache-control", "public"),
            ("cache-control", "no-transform")
        ])));
        assert!(!no_transform(&headers(&[("cache-control", "no-transformx")])));

        assert_eq!(content_length(&HeaderMap::new()), Ok(None));
        assert_eq!(content_length(&headers(&[("content-length", "2048")])), Ok(Some(2048)));
        assert_eq!(content_length(&headers(&[("content-length", "x")])), Err(()));
    }
}
