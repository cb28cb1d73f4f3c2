#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use regex::Regex;

use super::template::{is_dot_segment, valid_capture_name};
use super::*;

fn parse(text: &str, vars: &mut Vec<Box<str>>) -> PathTemplate {
    PathTemplate::parse(text, vars).unwrap()
}

#[test]
fn templates_substitute_captures_as_received_and_encode_query_values() {
    let mut vars = Vec::new();
    let users = parse("/users/${path.id}", &mut vars);
    let orders = parse("/orders?user=${path.id}&since=${query.since}&x=1", &mut vars);
    let both = parse("/u/${path.org}/${path.id}", &mut vars);
    assert_eq!(vars, vec![Box::from("id"), Box::from("org")]);
    let captured = ["4%2F2", "acme"];
    assert_eq!(users.render(&captured, None), "/users/4%2F2");
    assert_eq!(
        orders.render(&captured, Some("since=2024-01-01%20x&since=ignored")),
        "/orders?user=4%2F2&since=2024-01-01%20x&x=1"
    );
    // Absent parameter: empty. Reserved characters of a value stay one component.
    assert_eq!(orders.render(&captured, Some("other=1")), "/orders?user=4%2F2&since=&x=1");
    assert_eq!(
        orders.render(&captured, Some("since=a%26b%3Dc%2Fd+e")),
        "/orders?user=4%2F2&since=a%26b%3Dc%2Fd%2Be&x=1"
    );
    // Parameter names are compared decoded.
    assert_eq!(orders.render(&captured, Some("sin%63e=7")), "/orders?user=4%2F2&since=7&x=1");
    assert_eq!(both.render(&captured, None), "/u/acme/4%2F2");
}

#[test]
fn templates_reject_unknown_and_malformed_variables() {
    let mut vars = Vec::new();
    for (text, want) in [
        ("users/${path.id}", "must start with '/'"),
        ("/users/${path.id", "unterminated"),
        ("/users/${id}", "unknown variable ${id}"),
        ("/users/${header.x}", "unknown variable ${header.x}"),
        ("/users/${query.}", "unknown variable ${query.}"),
        ("/users/${path.1d}", "capture name"),
        ("/users/${path.a-b}", "capture name"),
        ("/users/a b", "not a valid path"),
        ("/users#frag", "not a valid path"),
    ] {
        let err = PathTemplate::parse(text, &mut vars).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
    assert!(valid_capture_name("_id2") && !valid_capture_name("") && !valid_capture_name("2"));
}

#[test]
fn dot_segments_are_recognised_encoded_or_not() {
    for s in [".", "..", "%2E", "%2e%2E", ".%2E"] {
        assert!(is_dot_segment(s), "{s}");
    }
    for s in ["...", "a.", "%2Ex", "42"] {
        assert!(!is_dot_segment(s), "{s}");
    }
}

fn regex_match(pattern: &str) -> RequestMatch {
    RequestMatch::path(PathMatch::Regex(Box::new(Regex::new(pattern).unwrap())))
}

fn part(key: &str, path: PathTemplate, optional: bool) -> Part {
    Part::new(
        key,
        crate::snapshot::BackendId(0),
        HeaderValue::from_static("users.default.svc"),
        path,
        optional,
        Duration::from_secs(9),
        DEFAULT_MAX_BODY_SIZE,
    )
}

#[test]
fn captures_bind_per_match_entry_and_missing_ones_are_named() {
    let mut vars = Vec::new();
    let p = parse("/users/${path.id}", &mut vars);
    let matches = vec![
        regex_match(r"^/profile/(?P<id>[^/]+)$"),
        regex_match(r"^/p/(?P<org>[^/]+)/(?P<id>[^/]+)(?:/.*)?$"),
    ];
    let aggregate = Aggregate::new(
        Duration::from_secs(2),
        vec![part("user", p.clone(), false)],
        vars.clone(),
        &matches,
    )
    .unwrap();
    // The part timeout is capped by the aggregate's.
    assert_eq!(aggregate.parts[0].timeout, Duration::from_secs(2));
    assert_eq!(aggregate.captures(&matches, &matches[0], "/profile/42").unwrap(), vec!["42"]);
    assert_eq!(aggregate.captures(&matches, &matches[1], "/p/acme/7/x").unwrap(), vec!["7"]);
    // A match entry that is not the rule's own is refused.
    let stranger = regex_match(r"^/profile/(?P<id>[^/]+)$");
    assert!(aggregate.captures(&matches, &stranger, "/profile/42").is_none());

    let without = vec![regex_match(r"^/profile/(?P<id>[^/]+)$"), regex_match(r"^/me$")];
    let err = Aggregate::new(Duration::from_secs(2), vec![part("user", p, false)], vars, &without)
        .unwrap_err();
    assert_eq!(err, MissingCapture { name: "id".into(), match_index: 1 });
    assert!(err.to_string().contains("matches[1]"), "{err}");
}

#[test]
fn merge_keeps_declared_order_and_nulls_missing_parts() {
    let mut vars = Vec::new();
    let parts = vec![
        part("user", parse("/u", &mut vars), false),
        part("orders", parse("/o", &mut vars), true),
        part("we\"ird", parse("/w", &mut vars), true),
    ];
    let aggregate = Aggregate::new(Duration::from_secs(1), parts, vars, &[]).unwrap();
    let user = respond::json_text_for_tests(b"  {\"id\":42,\"name\":\"Ada\"}\n").unwrap();
    assert_eq!(&user[..], br#"{"id":42,"name":"Ada"}"#, "whitespace around the value is trimmed");
    let orders = respond::json_text_for_tests(b"[1,2]").unwrap();
    let body = aggregate.merge(&[Some(user), Some(orders), None]);
    assert_eq!(&body[..], br#"{"user":{"id":42,"name":"Ada"},"orders":[1,2],"we\"ird":null}"#);
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed["user"]["name"], "Ada");
    assert_eq!(
        aggregate.merge(&[None, None, None]),
        Bytes::from_static(br#"{"user":null,"orders":null,"we\"ird":null}"#)
    );
}

#[test]
fn only_json_is_a_part() {
    for bad in [&b"<html>"[..], b"{\"a\":1", b"", b"{} {}", b"\xff"] {
        let bad: &'static [u8] = Box::leak(bad.to_vec().into_boxed_slice());
        assert!(respond::json_text_for_tests(bad).is_none(), "{bad:?}");
    }
    for good in [&b"null"[..], b"\"s\"", b"3", b"{\"a\":[true]}"] {
        let good: &'static [u8] = Box::leak(good.to_vec().into_boxed_slice());
        assert_eq!(&respond::json_text_for_tests(good).unwrap()[..], good);
    }
}
