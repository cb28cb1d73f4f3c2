//! The chart's RBAC grants exactly the API calls the controller makes.
//!
//! `weir_controller::kube::rbac::API_CALLS` is the list of calls, kept honest by the e2e test
//! that runs the controller against the API server double and fails on any call not listed.
//! This test reads `deploy/install.yaml` (the chart rendered with its defaults; `make chart
//! CHECK=1` fails when it drifts from the chart) and checks both directions: every listed
//! call is granted (cluster-wide, or by the Role in the release namespace for calls made only
//! in the controller's own namespace), and no rule grants anything the controller never does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use weir_controller::kube::rbac::API_CALLS;

/// (apiGroup, resource, verb).
type Grant = (String, String, String);

fn install_yaml() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/install.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                let doc: Value = serde_saphyr::from_str(&current)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if !doc.is_null() {
                    docs.push(doc);
                }
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Every (group, resource, verb) the objects of `kind` grant.
fn grants(docs: &[Value], kind: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for doc in docs.iter().filter(|d| d["kind"] == kind) {
        for rule in doc["rules"].as_array().into_iter().flatten() {
            assert!(
                rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
                "unexpected rule shape in {kind}: {rule}"
            );
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        assert!(
                            group != "*" && resource != "*" && verb != "*",
                            "wildcard in {kind}"
                        );
                        out.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

fn expected(own_namespace_only: bool) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for call in API_CALLS.iter().filter(|c| c.own_namespace_only == own_namespace_only) {
        for verb in call.verbs {
            out.insert((call.group.to_owned(), call.resource.to_owned(), (*verb).to_owned()));
        }
    }
    out
}

#[test]
fn cluster_role_grants_exactly_the_cluster_wide_calls() {
    let docs = install_yaml();
    let granted = grants(&docs, "ClusterRole");
    let wanted = expected(false);
    let missing: Vec<_> = wanted.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&wanted).collect();
    assert!(
        missing.is_empty(),
        "charts/weir/templates/rbac.yaml's ClusterRole lacks calls the controller makes \
         (then run `make chart`): {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "the ClusterRole grants calls the controller never makes (least privilege): {extra:?}"
    );
}

#[test]
fn namespaced_role_grants_exactly_the_own_namespace_calls() {
    let docs = install_yaml();
    let roles: Vec<_> = docs.iter().filter(|d| d["kind"] == "Role").collect();
    assert!(!roles.is_empty(), "install.yaml has no Role");
    for role in &roles {
        assert_eq!(
            role["metadata"]["namespace"], "weir-system",
            "the Role is in the release namespace"
        );
    }
    let granted = grants(&docs, "Role");
    let wanted = expected(true);
    assert_eq!(granted, wanted, "the Role must grant exactly the controller's own-namespace calls");
}

#[test]
fn every_role_is_bound_to_the_service_account() {
    let docs = install_yaml();
    let account = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .map(|d| d["metadata"]["name"].clone())
        .expect("a ServiceAccount");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], account);
    for (role_kind, binding_kind) in
        [("ClusterRole", "ClusterRoleBinding"), ("Role", "RoleBinding")]
    {
        for role in docs.iter().filter(|d| d["kind"] == role_kind) {
            let name = &role["metadata"]["name"];
            let bound = docs.iter().filter(|d| d["kind"] == binding_kind).any(|b| {
                b["roleRef"]["kind"] == role_kind
                    && b["roleRef"]["name"] == *name
                    && b["subjects"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account)
            });
            assert!(bound, "{role_kind} {name} is not bound to ServiceAccount {account}");
        }
    }
}
