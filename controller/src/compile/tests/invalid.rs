//! Invalid objects and missing references: every message names the field, one bad
//! object never affects another, and an invalid update keeps the last good version.

use super::*;
use crate::compile::conditions::{ACCEPTED, PROGRAMMED, RESOLVED_REFS};

fn route_invalid(c: &Compiled, name: &str, needles: &[&str]) {
    let s = status(c, Kind::Route, "default", name);
    assert_cond(s, ACCEPTED, "False", "Invalid", needles);
    assert_cond(s, PROGRAMMED, "False", "Invalid", &[]);
}

#[test]
fn each_invalid_route_names_its_field() {
    let c = compile_fixture("invalid_routes.yaml");
    route_invalid(
        &c,
        "bad-regex",
        &["spec.rules[0].matches[1].path.value: regex \"(\" is invalid"],
    );
    route_invalid(&c, "bad-host", &["spec.hosts[1]: \"a.*.example.com\" is not a valid host name"]);
    route_invalid(&c, "bad-duration", &["spec.rules[0].timeouts.connect:", "5 seconds"]);
    route_invalid(
        &c,
        "bad-path",
        &["spec.rules[0].matches[0].path.value: path \"api\" must start with '/'"],
    );
    route_invalid(&c, "bad-method", &["spec.rules[0].matches[0].methods[0]: \"FETCH\""]);
    route_invalid(
        &c,
        "bad-header",
        &[
            "spec.rules[0].matches[0].headers[0].name: \"bad header\" is not a valid header name",
            "spec.rules[0].matches[0].headers[1].value: required unless type is Present",
        ],
    );
    route_invalid(&c, "no-backends", &["spec.rules[0].backends: at least one backend is required"]);
    route_invalid(&c, "bad-weight", &["spec.rules[0].backends[0].weight: 1000001"]);
    route_invalid(
        &c,
        "bad-retries",
        &[
            "spec.rules[0].retries.attempts: 11 is larger than 10",
            "spec.rules[0].retries.perTryTimeout:",
        ],
    );
    route_invalid(
        &c,
        "bad-rewrite",
        &[
            "spec.rules[0].rewrite: replacePrefix and replaceFullPath are mutually exclusive",
            "spec.rules[0].rewrite.replacePrefix: only allowed when every match is a Prefix",
            "spec.rules[0].rewrite.host:",
        ],
    );
    // Only the valid Route is served, and it is unaffected.
    let good = status(&c, Kind::Route, "default", "good");
    assert!(good.is_true(ACCEPTED) && good.is_true(RESOLVED_REFS) && good.is_true(PROGRAMMED));
    let served: Vec<String> = c.routes.route_keys().map(|(k, _)| k.to_string()).collect();
    assert_eq!(served, ["default/good"]);
    assert_eq!(c.memory.last_good_routes().count(), 1);
    assert_eq!(c.backend_keys.len(), 1);
}

#[test]
fn invalid_update_keeps_the_last_good_version_serving() {
    let v1 = "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\nspec: {ports: [{port: 80}]}\n---\n\
        apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {name: r, generation: 1}\n\
        spec: {rules: [{matches: [{path: {value: /v1}}], backends: [{service: svc}]}]}\n";
    let first = compile(&load_str(v1), &Memory::default());
    assert!(status(&first, Kind::Route, "default", "r").is_true(PROGRAMMED));

    let v2 = v1
        .replace("generation: 1", "generation: 2")
        .replace("value: /v1", "type: RegularExpression, value: \"[\"");
    let second = compile(&load_str(&v2), &first.memory);
    let s = status(&second, Kind::Route, "default", "r");
    assert_eq!(s.generation, 2);
    assert_cond(
        s,
        ACCEPTED,
        "False",
        "Invalid",
        &[
            "spec.rules[0].matches[0].path.value",
            "the last good version (generation 1) keeps serving",
        ],
    );
    assert_cond(s, PROGRAMMED, "False", "Invalid", &["is not programmed", "generation 1"]);
    let live: Vec<(String, i64)> =
        second.routes.route_keys().map(|(k, g)| (k.to_string(), g)).collect();
    assert_eq!(live, [("default/r".to_owned(), 1)]);
    assert_eq!(second.memory.last_good_route(&ObjectRef::new("default", "r")).unwrap().0, 1);

    // Without memory the same input serves nothing.
    let fresh = compile(&load_str(&v2), &Memory::default());
    assert!(fresh.routes.is_empty());
    assert_cond(status(&fresh, Kind::Route, "default", "r"), PROGRAMMED, "False", "Invalid", &[]);

    // A fixed generation 3 replaces it; deleting the Route drops it from memory.
    let v3 = v1.replace("generation: 1", "generation: 3");
    let third = compile(&load_str(&v3), &second.memory);
    assert_eq!(third.memory.last_good_route(&ObjectRef::new("default", "r")).unwrap().0, 3);
    let mut gone = load_str(&v3);
    gone.routes.clear();
    let fourth = compile(&gone, &third.memory);
    assert!(fourth.memory.last_good_routes().next().is_none());
    assert!(fourth.statuses.is_empty());
}

#[test]
fn missing_references_are_reported_and_the_route_still_serves() {
    let c = compile_fixture("missing_refs.yaml");
    let s = status(&c, Kind::Route, "default", "refs");
    assert!(s.is_true(ACCEPTED) && s.is_true(PROGRAMMED));
    assert_cond(
        s,
        RESOLVED_REFS,
        "False",
        "BackendNotFound",
        &[
            "spec.rules[0].backends[0]: service \"ghost\" not found",
            "spec.rules[1].backends[0]: service default/two-ports has no port 81",
            "spec.rules[2].backends[0]: service default/two-ports has 2 ports",
            "spec.plugins[0]: plugin default/nope not found",
            "spec.rules[2].plugins[0]: plugin default/broken is not accepted",
        ],
    );
    assert!(!cond(s, RESOLVED_REFS).message.contains("rules[3]"));
    let problems: Vec<Option<&str>> =
        c.backends.backends.iter().map(|b| b.problem.as_deref()).collect();
    assert_eq!(problems.len(), 4);
    assert!(problems[0].is_some_and(|p| p.contains("ghost")));
    assert!(problems[1].is_some() && problems[2].is_some());
    assert_eq!(problems[3], None);
    assert!(c.backends.backends[3].endpoints.is_empty());
}

#[test]
fn each_invalid_plugin_names_its_fields() {
    let c = compile_fixture("plugins.yaml");
    let bad = |name: &str, needles: &[&str]| {
        let ns = if name == "global-elsewhere" { "team-a" } else { "default" };
        assert_cond(status(&c, Kind::Plugin, ns, name), ACCEPTED, "False", "Invalid", needles);
    };
    bad("two-configs", &["exactly one", "spec.cors and spec.rateLimit"]);
    bad("no-config", &["exactly one plugin configuration must be set, none is"]);
    bad(
        "bad-window",
        &["spec.rateLimit.limit: must be greater than 0", "spec.rateLimit.window:", "soon"],
    );
    bad("header-key", &["spec.rateLimit.header: required when key is Header"]);
    bad(
        "jwt-none",
        &["spec.jwt.algorithms[0]: \"none\" is never accepted", "spec.jwt.algorithms[2]: unknown"],
    );
    bad("jwt-empty", &["spec.jwt.algorithms: at least one"]);
    bad("bad-cidr", &["spec.ipRestriction.allow[1]", "spec.ipRestriction.allow[3]"]);
    bad(
        "bad-breaker",
        &[
            "spec.circuitBreaker: circuit breaking is no longer a Plugin",
            "spec.circuitBreaker of a BackendPolicy (weir.dev/v1alpha1) targeting the Service",
        ],
    );
    bad(
        "bad-cache",
        &[
            "spec.cache.ttl:",
            "spec.cache.staleWhileRevalidate:",
            "spec.cache.varyHeaders[0]: \"bad header\" is not a valid header name",
            "spec.cache.statuses[0]: 99 is not a response status",
            "spec.cache.methods[0]: \"POST\" cannot be cached (GET and HEAD can)",
            "spec.cache.methods[1]: \"GE T\" is not a method",
            "spec.cache.maxBodySize: must be positive",
        ],
    );
    bad("bad-cors", &["spec.cors.maxAge"]);
    bad(
        "bad-template",
        &[
            "spec.requestHeaders.set[1].value: unknown variable \"${user}\"",
            "spec.requestHeaders.add[0].value: unterminated",
        ],
    );
    let t = &cond(status(&c, Kind::Plugin, "default", "bad-template"), ACCEPTED).message;
    assert!(!t.contains("set[0]"), "{t}");
    bad("global-elsewhere", &["spec.global: honoured only in namespace \"weir-system\""]);
    let ip = &cond(status(&c, Kind::Plugin, "default", "bad-cidr"), ACCEPTED).message;
    assert!(!ip.contains("allow[0]") && !ip.contains("allow[2]"), "{ip}");
    assert_cond(status(&c, Kind::Plugin, "default", "good"), ACCEPTED, "True", "Accepted", &[]);

    let r = status(&c, Kind::Route, "default", "uses-invalid");
    assert!(r.is_true(ACCEPTED) && r.is_true(PROGRAMMED));
    assert_cond(
        r,
        RESOLVED_REFS,
        "False",
        "PluginNotFound",
        &["spec.plugins[1]: plugin default/two-configs is not accepted"],
    );
    // Every rule fails closed (503) on the unresolved reference, so no plugin runs there:
    // keyAuth is not effective either (status lists what really runs).
    assert!(r.effective_plugins.is_empty(), "{:?}", r.effective_plugins);
}

#[test]
fn consumer_problems_never_leak_secret_values() {
    let c = compile_fixture("consumers.yaml");
    let s = |name: &str| status(&c, Kind::Consumer, "default", name);
    assert!(s("good").is_true(ACCEPTED) && s("good").is_true(RESOLVED_REFS));
    assert_cond(
        s("missing-secret"),
        RESOLVED_REFS,
        "False",
        "SecretNotFound",
        &["spec.credentials[1].jwt.secretRef: secret default/ghost not found"],
    );
    assert_cond(
        s("malformed"),
        RESOLVED_REFS,
        "False",
        "InvalidCredential",
        &[
            "spec.credentials[0].apiKey.secretRef: secret default/no-key-entry has no (or an empty) entry key",
            "spec.credentials[1].jwt.secretRef: secret default/jwt-rs-no-public-key has no (or an empty) entry publicKey",
            "spec.credentials[2].jwt.secretRef: secret default/jwt-bad-alg entry `algorithm`",
        ],
    );
    assert!(s("malformed").is_true(ACCEPTED));
    assert_cond(
        s("two-kinds"),
        ACCEPTED,
        "False",
        "Invalid",
        &[
            "spec.credentials[0]: exactly one of apiKey or jwt must be set, found both",
            "spec.credentials[1]:",
        ],
    );
    assert_cond(
        s("missing-plugin"),
        RESOLVED_REFS,
        "False",
        "PluginNotFound",
        &["spec.plugins[0]: plugin default/ghost"],
    );
    // Secrets are looked up in the Consumer's own namespace only.
    let cross = status(&c, Kind::Consumer, "team-b", "cross-namespace");
    assert_cond(cross, RESOLVED_REFS, "False", "SecretNotFound", &["team-b/api-key"]);
    for st in c.statuses.values() {
        for cd in &st.conditions {
            for secret in ["k-123", "top-secret", "hunter2", "k-other", "issuer-"] {
                assert!(!cd.message.contains(secret), "{}", cd.message);
            }
        }
    }
}
