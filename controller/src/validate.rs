//! `weir validate -f PATH…`: the same loader and compiler as `weir run`, offline.
//!
//! Prints one line per condition of every weir object, e.g.
//! `Route default/orders Accepted=True Accepted: accepted`, then the load errors, and fails
//! when anything is not `Accepted=True` and `ResolvedRefs=True`.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::compile::{Memory, compile};
use crate::index::DEFAULT_CONTROLLER_NAMESPACE;
use crate::load::load_paths;

/// The result of a validation: the report to print and whether it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Human-readable output, one line per condition or error.
    pub text: String,
    /// True when there is no load error and every weir object is Accepted and has its
    /// references resolved.
    pub ok: bool,
}

/// Loads `paths` (files or directories), compiles, and reports.
pub fn validate(paths: &[PathBuf], controller_namespace: Option<&str>) -> Report {
    let (mut index, errors) =
        load_paths(paths, controller_namespace.unwrap_or(DEFAULT_CONTROLLER_NAMESPACE));
    // Certificates are checked against the current time.
    index.now = Some(std::time::SystemTime::now());
    let compiled = compile(&index, &Memory::default());
    let mut text = String::new();
    let mut ok = errors.is_empty();
    // Routes and Plugins derived from Gateway API objects and Ingresses report through
    // their source objects.
    let statuses = || {
        compiled.statuses.iter().filter(|((_, key), _)| !crate::compile::frontends::is_derived(key))
    };
    for ((kind, key), status) in statuses() {
        for c in &status.conditions {
            let message =
                if c.message.is_empty() { String::new() } else { format!(": {}", c.message) };
            let _ = writeln!(
                text,
                "{} {key} {}={} {}{message}",
                kind.as_str(),
                c.type_,
                c.status,
                c.reason
            );
        }
        for required in ["Accepted", "ResolvedRefs"] {
            if status.condition(required).is_some_and(|c| c.status != "True") {
                ok = false;
            }
        }
    }
    for e in &errors {
        let _ = writeln!(text, "error: {e}");
    }
    let objects = statuses().count();
    let summary = match (ok, errors.len()) {
        (true, _) => format!("ok: {objects} object(s) valid"),
        (false, 0) => format!("invalid: {objects} object(s) checked"),
        (false, n) => format!("invalid: {n} load error(s), {objects} object(s) checked"),
    };
    text.push_str(&summary);
    text.push('\n');
    Report { text, ok }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A file in its own temp directory, removed (with the directory) when dropped.
    struct Temp(PathBuf);

    impl Drop for Temp {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn temp(name: &str, text: &str) -> Temp {
        let dir = std::env::temp_dir().join(format!("weir-validate-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        Temp(p)
    }

    const GOOD: &str = "apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: orders}
spec:
  rules: [{backends: [{service: orders, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: orders}
spec: {ports: [{port: 80}]}
";

    #[test]
    fn a_valid_config_passes_and_prints_conditions() {
        let file = temp("good.yaml", GOOD);
        let r = validate(std::slice::from_ref(&file.0), None);
        assert!(r.ok, "{}", r.text);
        assert!(r.text.contains("Route default/orders Accepted=True Accepted"), "{}", r.text);
        assert!(
            r.text.contains("Route default/orders ResolvedRefs=True ResolvedRefs"),
            "{}",
            r.text
        );
    }

    #[test]
    fn a_missing_backend_fails() {
        let text = GOOD.replace("service: orders,", "service: missing,");
        let file = temp("missing.yaml", &text);
        let r = validate(std::slice::from_ref(&file.0), None);
        assert!(!r.ok);
        assert!(r.text.contains("ResolvedRefs=False BackendNotFound"), "{}", r.text);
    }

    #[test]
    fn tls_conditions_are_printed() {
        let text = GOOD.replace(
            "spec:\n  rules:",
            "spec:\n  hosts: [shop.test]\n  tls: {secretRef: {name: shop-tls}}\n  rules:",
        );
        assert!(text.contains("tls:"), "{text}");
        let file = temp("tls.yaml", &text);
        let r = validate(std::slice::from_ref(&file.0), None);
        assert!(!r.ok);
        assert!(
            r.text.contains(
                "Route default/orders ResolvedRefs=False SecretNotFound: spec.tls.secretRef: \
                 secret default/shop-tls not found"
            ),
            "{}",
            r.text
        );
    }

    #[test]
    fn backend_policy_conditions_are_printed_and_fail_validation() {
        let policy = "---
apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: orders}
spec:
  targetRefs: [{kind: Service, name: orders}]
  circuitBreaker: {openFor: 30s}
";
        let file = temp("policy.yaml", &format!("{GOOD}{policy}"));
        let r = validate(std::slice::from_ref(&file.0), None);
        assert!(r.ok, "{}", r.text);
        assert!(
            r.text.contains("BackendPolicy default/orders Accepted=True Accepted"),
            "{}",
            r.text
        );

        let broken = policy.replace("openFor: 30s", "openFor: soon").replace("orders}]", "gone}]");
        let file = temp("bad-policy.yaml", &format!("{GOOD}{broken}"));
        let r = validate(std::slice::from_ref(&file.0), None);
        assert!(!r.ok, "{}", r.text);
        assert!(
            r.text.contains(
                "BackendPolicy default/orders Accepted=False Invalid: spec.circuitBreaker.openFor:"
            ),
            "{}",
            r.text
        );
        assert!(r.text.contains("BackendPolicy default/orders ResolvedRefs=True"), "{}", r.text);
    }

    #[test]
    fn a_load_error_fails_and_is_printed() {
        let file = temp(
            "broken.yaml",
            &format!("{GOOD}---\nkind: Nope\napiVersion: x/v1\nmetadata: {{name: nope}}\n"),
        );
        let r = validate(std::slice::from_ref(&file.0), None);
        assert!(!r.ok);
        assert!(r.text.contains("broken.yaml: document 2: unknown kind Nope"), "{}", r.text);
        let r = validate(&[PathBuf::from("/nonexistent/weir-validate")], None);
        assert!(!r.ok);
    }
}
