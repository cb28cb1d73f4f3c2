//! Small unit checks of the route validation helpers.

use weir_crds::{RouteMatch as SpecMatch, RouteRule, RouteSpec};
use weir_dataplane::{HostMatch, PathMatch};

use crate::compile::routes::{anchored_regex, parse_host, validate_route};

#[test]
fn hosts_are_lower_cased_with_one_leading_wildcard() {
    assert_eq!(parse_host("API.Example.com"), Ok(HostMatch::Exact("api.example.com".into())));
    assert_eq!(parse_host("*.Example.com"), Ok(HostMatch::Wildcard(".example.com".into())));
    for bad in
        ["", "*", "*.", "*.*.example.com", "a..b", "-a.com", "a-.com", "a_b.com", "a.com:80", "a b"]
    {
        assert!(parse_host(bad).is_err(), "{bad:?} accepted");
    }
    assert!(parse_host(&format!("{}.com", "a".repeat(64))).is_err());
}

#[test]
fn regexes_are_anchored() {
    let re = anchored_regex("/a|/b").unwrap();
    assert!(re.is_match("/a") && re.is_match("/b"));
    assert!(!re.is_match("/ab") && !re.is_match("x/a"));
    // An unbalanced group cannot escape the anchors.
    assert!(anchored_regex("/a)|(/b").is_err());
}

fn spec(yaml: &str) -> RouteSpec {
    serde_saphyr::from_str(yaml).unwrap()
}

#[test]
fn prefixes_are_normalised_and_empty_matches_mean_everything() {
    let s = spec(
        "rules:\n  - matches: [{path: {value: /}}, {path: {value: /api//}}]\n    backends: [{service: s}]\n  - backends: [{service: s}]\n",
    );
    let model = validate_route("default", &s).unwrap().into_model(
        weir_dataplane::ObjectKey::new("default", "r"),
        1,
        0,
        Vec::new(),
        false,
        &mut Default::default(),
        &Default::default(),
    );
    let prefixes: Vec<String> = model
        .rules
        .iter()
        .flat_map(|r| r.matches.iter())
        .map(|m| match &m.path {
            PathMatch::Prefix(p) => p.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(prefixes, ["", "/api", ""]);
    assert_eq!(&*model.rules[1].name, "1");
}

#[test]
fn duplicate_rule_names_and_empty_rules_are_invalid() {
    let mut s = RouteSpec::default();
    assert!(validate_route("d", &s).unwrap_err()[0].contains("spec.rules: at least one rule"));
    let rule = RouteRule {
        name: Some("x".into()),
        matches: vec![SpecMatch::default()],
        backends: vec![weir_crds::BackendRef {
            service: "s".into(),
            port: Some(70000),
            weight: None,
            ..Default::default()
        }],
        ..Default::default()
    };
    s.rules = vec![rule.clone(), rule];
    let errs = validate_route("d", &s).unwrap_err().join("; ");
    assert!(errs.contains("spec.rules[1].name: duplicate rule name \"x\""), "{errs}");
    assert!(errs.contains("spec.rules[0].backends[0].port: 70000"), "{errs}");
}

/// An unnamed rule is named by its index: a named rule "1" collides with the unnamed
/// second rule, "01" does not. The same answers with few rules (compared with the earlier
/// rules) and with many (through a set).
#[test]
fn duplicate_rule_names_are_found_with_few_and_with_many_rules() {
    let named = |name: Option<&str>| RouteRule {
        name: name.map(str::to_owned),
        backends: vec![weir_crds::BackendRef { service: "s".into(), ..Default::default() }],
        ..Default::default()
    };
    for filler in [0, 40] {
        let mut s = RouteSpec {
            rules: vec![named(None), named(None), named(Some("01")), named(Some("1"))],
            ..Default::default()
        };
        s.rules.extend((0..filler).map(|i| named(Some(&format!("f{i}")))));
        s.rules.push(named(Some("01")));
        let errs = validate_route("d", &s).unwrap_err();
        let last = s.rules.len() - 1;
        assert_eq!(
            errs,
            [
                "spec.rules[3].name: duplicate rule name \"1\"".to_owned(),
                format!("spec.rules[{last}].name: duplicate rule name \"01\""),
            ],
            "{filler} filler rules"
        );
        s.rules.pop();
        s.rules[3].name = Some("2".into());
        assert!(validate_route("d", &s).is_ok(), "{filler} filler rules");
    }
}
