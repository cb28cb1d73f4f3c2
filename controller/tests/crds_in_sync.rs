//! The committed CRDs under `charts/weir/crds/` are exactly what `weir crds` prints, and
//! every generated schema is structural (a real API server accepts it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::Value;
use weir_crds::generate::{crd_document, crd_file_names, crd_yaml, crds};

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/weir/crds")
}

#[test]
fn committed_crds_match_generated() {
    let dir = chart_dir();
    let mut concatenated = String::new();
    for (crd, file) in crds().iter().zip(crd_file_names()) {
        let path = dir.join(&file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == crd_document(crd),
            "{} is out of date with the CRD types: run `make crds` (or `weir crds`) to regenerate it",
            path.display()
        );
        concatenated.push_str(&committed);
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, crd_file_names(), "unexpected files in charts/weir/crds: run `make crds`");
    assert_eq!(concatenated, crd_yaml(), "`cat charts/weir/crds/*.yaml` differs from `weir crds`");
}

#[test]
fn generated_yaml_round_trips() {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&crd_yaml()).unwrap();
    let expected: Vec<Value> = crds().iter().map(|c| serde_json::to_value(c).unwrap()).collect();
    assert_eq!(docs, expected);
}

/// Walks a schema node and returns every problem that makes it non-structural.
fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        problems.push(format!("{path}: schema node is not an object"));
        return;
    };
    let typed = obj.contains_key("type")
        || obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !typed {
        problems.push(format!("{path}: no type"));
    }
    for forbidden in ["$ref", "definitions", "$defs", "additionalItems", "uniqueItems"] {
        if obj.contains_key(forbidden) {
            problems.push(format!("{path}: uses {forbidden}"));
        }
    }
    if let Some(t) = obj.get("type")
        && !t.is_string()
    {
        problems.push(format!("{path}: type must be a single string, found {t}"));
    }
    for junction in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = obj.get(junction) {
            // Inside junctions only value validations are allowed: no types, no
            // descriptions, no defaults (structural schema rule).
            for (i, sub) in list.as_array().into_iter().flatten().enumerate() {
                for k in ["type", "description", "default", "nullable", "properties"] {
                    if sub.get(k).is_some() && k != "properties" {
                        problems.push(format!("{path}.{junction}[{i}]: sets {k}"));
                    }
                }
            }
        }
    }
    if obj.contains_key("not") {
        problems.push(format!("{path}: uses not"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), problems);
    }
    if let Some(additional) = obj.get("additionalProperties")
        && additional.is_object()
    {
        check_structural(additional, &format!("{path}{{}}"), problems);
    }
}

fn schema_of(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

#[test]
fn schemas_are_structural() {
    for crd in crds() {
        let json = serde_json::to_value(&crd).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        let mut problems = Vec::new();
        check_structural(schema_of(&json), &name, &mut problems);
        assert!(problems.is_empty(), "{name} is not structural:\n{}", problems.join("\n"));
    }
}

/// Collects every `x-kubernetes-validations` rule object under `node`.
fn cel_rules<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
    match node {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "x-kubernetes-validations" {
                    out.extend(v.as_array().into_iter().flatten());
                } else {
                    cel_rules(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| cel_rules(v, out)),
        _ => {}
    }
}

#[test]
fn crds_use_only_api_server_1_26_cel_fields() {
    let mut count = 0;
    for crd in crds() {
        let json = serde_json::to_value(&crd).unwrap();
        let mut rules = Vec::new();
        cel_rules(&json, &mut rules);
        for rule in rules {
            count += 1;
            let keys: Vec<&String> = rule.as_object().unwrap().keys().collect();
            assert!(
                keys.iter().all(|k| *k == "rule" || *k == "message"),
                "CEL rule uses fields a 1.26 API server rejects (only rule and message): {rule}"
            );
        }
    }
    assert!(count >= 10, "expected the Plugin, Consumer, Route and BackendPolicy CEL rules");
}

fn find<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur
}

#[test]
fn validations_are_in_the_schema() {
    let all: Vec<Value> = crds().iter().map(|c| serde_json::to_value(c).unwrap()).collect();
    let (policy, consumer, plugin, route) = (&all[0], &all[1], &all[2], &all[3]);

    let policy_spec = find(schema_of(policy), &["properties", "spec"]);
    let rules: Vec<&str> = policy_spec["x-kubernetes-validations"]
        .as_array()
        .expect("BackendPolicy CEL rules")
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(rules.iter().any(|r| r.contains("self.protocol != 'H2' || has(self.tls)")));
    let target = find(policy_spec, &["properties", "targetRefs"]);
    assert_eq!((target["minItems"].as_i64(), target["maxItems"].as_i64()), (Some(1), Some(16)));
    assert!(
        target["items"]["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("self.kind == 'Service'")
    );
    let lb = find(policy_spec, &["properties", "loadBalancer"]);
    assert!(lb["x-kubernetes-validations"][0]["rule"].as_str().unwrap().contains("ConsistentHash"));
    assert_eq!(lb["properties"]["type"]["default"], "RoundRobin");
    let hash = &lb["properties"]["consistentHash"]["x-kubernetes-validations"];
    assert_eq!(hash.as_array().unwrap().len(), 3, "Header, Cookie and QueryParam rules");
    let tls = find(policy_spec, &["properties", "tls", "x-kubernetes-validations"]);
    assert!(tls[0]["rule"].as_str().unwrap().contains("wellKnownCACertificates"));
    let active = find(policy_spec, &["properties", "healthCheck", "properties", "active"]);
    assert_eq!(active["properties"]["interval"]["default"], "5s");
    assert_eq!(active["properties"]["unhealthyThreshold"]["minimum"], 1.0);
    let breaker = find(policy_spec, &["properties", "circuitBreaker", "properties"]);
    assert_eq!(breaker["openFor"]["pattern"], weir_crds::duration::DURATION_PATTERN);
    assert_eq!(breaker["fallback"]["properties"]["status"]["default"], 503);
    let passive = find(policy_spec, &["properties", "healthCheck", "properties", "passive"]);
    assert_eq!(passive["properties"]["maxEjectionPercent"]["maximum"], 100.0);
    assert!(serde_json::to_string(&all).unwrap().find("nullable").is_none());

    let plugin_spec = find(schema_of(plugin), &["properties", "spec"]);
    let rules = plugin_spec["x-kubernetes-validations"].as_array().expect("plugin CEL rules");
    assert!(rules.iter().any(|r| r["rule"].as_str().unwrap().contains("size() == 1")));

    let credential =
        find(schema_of(consumer), &["properties", "spec", "properties", "credentials", "items"]);
    let rules = credential["x-kubernetes-validations"].as_array().expect("credential CEL rules");
    assert_eq!(rules[0]["rule"], "has(self.apiKey) != has(self.jwt)");

    let route_spec = find(schema_of(route), &["properties", "spec"]);
    let rules = route_spec["x-kubernetes-validations"].as_array().expect("route CEL rules");
    assert!(rules.iter().any(|r| r["rule"].as_str().unwrap().contains("has(self.tls)")));
    let tls = find(route_spec, &["properties", "tls", "properties"]);
    assert_eq!(tls["clientCA"]["required"], serde_json::json!(["secretRef"]));

    let route_rules = find(schema_of(route), &["properties", "spec", "properties", "rules"]);
    assert_eq!(route_rules["minItems"], 1);
    let connect = find(route_rules, &["items", "properties", "timeouts", "properties", "connect"]);
    assert_eq!(connect["pattern"], weir_crds::duration::DURATION_PATTERN);
    assert_eq!(connect["type"], "string");
}
