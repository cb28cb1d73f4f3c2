//! Tests of the YAML loader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const ROUTE: &str = "apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: orders}
spec:
  rules:
    - backends: [{service: orders, port: 80}]
";

#[test]
fn splits_documents_on_markers_at_column_zero() {
    let text = "---\na: 1\n---\nb: |\n  ---\n  not a marker\n--- {c: 3}\n...\nignored: true\n---\n";
    let docs = split_documents(text);
    let texts: Vec<&str> = docs.iter().map(|d| d.text).collect();
    assert_eq!(texts, vec!["\na: 1\n", "\nb: |\n  ---\n  not a marker\n", " {c: 3}\n", "\n"]);
    assert_eq!(docs.iter().map(|d| d.index).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(docs[1].line, 2);
    assert_eq!(docs[2].line, 6);
}

#[test]
fn a_file_without_markers_is_one_document() {
    let docs = split_documents("# comment\na: 1\n");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].line, 0);
    assert!(split_documents("").is_empty());
    assert!(split_documents("# only a comment\n").is_empty());
}

#[test]
fn parses_every_kind_and_defaults_the_namespace() {
    let text = format!(
        "{ROUTE}---
apiVersion: v1
kind: Service
metadata: {{name: orders, namespace: shop}}
spec:
  ports: [{{port: 80, targetPort: http}}]
---
# empty document
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: orders-1
  labels: {{kubernetes.io/service-name: orders}}
addressType: IPv4
ports: [{{name: http, port: 9001}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: key}}
data: {{key: c2VjcmV0}}
stringData: {{other: plain}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {{name: cors}}
spec: {{cors: {{allowOrigins: ['*']}}}}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {{name: app}}
spec: {{credentials: [{{apiKey: {{secretRef: {{name: key}}}}}}]}}
"
    );
    let objects = parse_file("a.yaml", &text).unwrap();
    let ids: Vec<(Kind, String, usize)> =
        objects.iter().map(|l| (l.object.kind(), l.object.key().to_string(), l.document)).collect();
    assert_eq!(
        ids,
        vec![
            (Kind::Route, "default/orders".into(), 0),
            (Kind::Service, "shop/orders".into(), 1),
            (Kind::EndpointSlice, "default/orders-1".into(), 3),
            (Kind::Secret, "default/key".into(), 4),
            (Kind::Plugin, "default/cors".into(), 5),
            (Kind::Consumer, "default/app".into(), 6),
        ]
    );
    let Object::Secret(secret) = &objects[3].object else { panic!("not a secret") };
    assert_eq!(secret.data.as_ref().unwrap()["key"].0, b"secret");
    assert_eq!(secret.string_data.as_ref().unwrap()["other"], "plain");
    let Object::Route(route) = &objects[0].object else { panic!("not a route") };
    assert_eq!(route.spec.rules[0].backends[0].port, Some(80));
}

#[test]
fn reads_a_backend_policy_with_its_defaults_and_reports_its_errors() {
    let text = "apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: orders, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: orders}]
  loadBalancer: {type: LeastRequest}
  circuitBreaker: {failureThreshold: 2}
";
    let objects = parse_file("p.yaml", text).unwrap();
    assert_eq!(objects[0].object.kind(), Kind::BackendPolicy);
    assert_eq!(objects[0].object.key().to_string(), "shop/orders");
    let Object::BackendPolicy(policy) = &objects[0].object else { panic!("not a policy") };
    let breaker = policy.spec.circuit_breaker.as_ref().unwrap();
    // Unset fields take the documented defaults, as the API server's schema defaults do.
    assert_eq!((breaker.failure_threshold, breaker.open_for.as_str()), (2, "30s"));
    assert_eq!(breaker.success_threshold, 3);
    let (index, merge_errors) = merge([("p.yaml", objects.as_slice())], "");
    assert!(merge_errors.is_empty());
    assert!(index.backend_policies.contains_key(&ObjectRef::new("shop", "orders")));

    let bad = errors(&text.replace("type: LeastRequest", "type: Fastest"));
    assert_eq!(bad.len(), 1);
    assert!(bad[0].1.starts_with("BackendPolicy orders:"), "{}", bad[0].1);
    assert!(bad[0].1.contains("Fastest"), "{}", bad[0].1);
}

fn errors(text: &str) -> Vec<(usize, String)> {
    parse_file("f.yaml", text).unwrap_err().into_iter().map(|e| (e.document, e.reason)).collect()
}

#[test]
fn reports_unknown_kinds_with_their_document() {
    let text =
        format!("{ROUTE}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].0, 1);
    assert!(errs[0].1.contains("unknown kind Deployment (apiVersion apps/v1)"), "{}", errs[0].1);
}

#[test]
fn reports_missing_kind_and_name() {
    let errs = errors("apiVersion: v1\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Service\n");
    assert_eq!(
        errs,
        vec![(0, "missing kind".into()), (1, "Service: missing metadata.name".into())]
    );
}

#[test]
fn reports_syntax_errors_with_file_line_numbers() {
    let text = format!("{ROUTE}---\n\napiVersion: v1\nkind: [unclosed\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].0, 1);
    eprintln!("syntax error: {}", errs[0].1);
    assert!(errs[0].1.contains("line 10") || errs[0].1.contains(":10:"), "{}", errs[0].1);
    let errs = errors("apiVersion: v1\nkind: Service\nmetadata: {name: n}\n");
    assert!(errs[0].1.contains("metadata.name must be a string"), "{}", errs[0].1);
}

#[test]
fn reports_type_errors_naming_the_object() {
    let text =
        "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec:\n  rules: 7\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].1.starts_with("Route r: "), "{}", errs[0].1);
    eprintln!("type error: {}", errs[0].1);
}

#[test]
fn rejects_duplicates_in_a_file_and_across_files() {
    let errs = errors(&format!("{ROUTE}---\n{ROUTE}"));
    assert_eq!(errs[0].0, 1);
    assert!(errs[0].1.contains("duplicate Route default/orders"), "{}", errs[0].1);

    let a = parse_file("a.yaml", ROUTE).unwrap();
    let b = parse_file("b.yaml", &format!("---\n{ROUTE}")).unwrap();
    let (index, errs) = merge([("a.yaml", a.as_slice()), ("b.yaml", b.as_slice())], "");
    assert_eq!(index.routes.len(), 1);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].file, "b.yaml");
    assert_eq!(errs[0].document, 0);
    assert!(errs[0].reason.contains("already defined in a.yaml document 0"), "{}", errs[0].reason);
}

#[test]
fn non_mapping_documents_are_errors_and_null_documents_are_skipped() {
    assert_eq!(
        errors("- a\n- b\n")[0].1,
        "the document is not a mapping (expected a Kubernetes object)"
    );
    assert!(parse_file("f.yaml", "~\n---\nnull\n").unwrap().is_empty());
    let bom = format!("\u{feff}---\r\n{}", ROUTE.replace('\n', "\r\n"));
    assert_eq!(parse_file("f.yaml", &bom).unwrap()[0].document, 0);
}

#[test]
fn load_paths_walks_directories_sorted_and_skips_hidden_files() {
    let dir = std::env::temp_dir().join(format!("weir-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join("..data")).unwrap();
    std::fs::write(dir.join("sub/b.yml"), ROUTE.replace("orders}", "b}")).unwrap();
    std::fs::write(dir.join("a.yaml"), ROUTE).unwrap();
    std::fs::write(dir.join("..data/a.yaml"), ROUTE).unwrap();
    std::fs::write(dir.join(".a.yaml.swp"), "garbage: [").unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml: [").unwrap();
    let (index, errs) = load_paths(std::slice::from_ref(&dir), "weir-system");
    assert!(errs.is_empty(), "{errs:?}");
    let names: Vec<String> = index.routes.keys().map(|k| k.to_string()).collect();
    assert_eq!(names, vec!["default/b", "default/orders"]);
    assert_eq!(index.routes.values().next().unwrap().metadata.generation, Some(1));
    assert_eq!(index.controller_namespace(), "weir-system");

    let (_, errs) = load_paths(&[dir.join("missing.yaml")], "");
    assert_eq!(errs.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn documents_parse_the_same_through_the_value_and_from_the_text() {
    // What the typed YAML parse accepts and the JSON value does not (an unquoted number
    // where a string is expected) still parses, from the text.
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {port: 8080}\n";
    let objects = parse_file("f.yaml", text).unwrap();
    let Object::Secret(secret) = &objects[0].object else { panic!("not a secret") };
    assert_eq!(secret.string_data.as_ref().unwrap()["port"], "8080");
    // Type errors keep their field path and file line.
    let text = format!(
        "{ROUTE}---\napiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: r}}\nspec:\n  rules: [{{backends: 7}}]\n"
    );
    let errs = errors(&text);
    assert!(errs[0].1.starts_with("Route r: "), "{}", errs[0].1);
    assert!(errs[0].1.contains("line 12") || errs[0].1.contains(":12:"), "{}", errs[0].1);
    // Duplicate keys are errors, as in the typed parse.
    let errs = errors("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nmetadata: {name: b}\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
}

/// Per-document parse cost: `cargo test --release -p weir-controller --lib bench_parse --
/// --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a test"]
fn bench_parse() {
    let n: usize =
        std::env::var("WEIR_BENCH_DOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let docs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "\napiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata:\n  name: r{i}\nspec:\n  \
                 rules:\n    - matches:\n        - path: {{type: Prefix, value: /r{i}}}\n      \
                 backends:\n        - {{service: upstream, port: 80}}\n"
            )
        })
        .collect();
    let docs: Vec<Document<'_>> = docs
        .iter()
        .enumerate()
        .map(|(i, t)| Document { index: i, line: i * 11, text: t })
        .collect();
    // WEIR_BENCH_VARIANT picks one variant (for `perf stat -e instructions:u`).
    let only = std::env::var("WEIR_BENCH_VARIANT").ok();
    let time = |what: &str, f: &dyn Fn(&Document<'_>)| {
        if only.as_deref().is_some_and(|o| !what.starts_with(o)) {
            return;
        }
        let started = std::time::Instant::now();
        for d in &docs {
            f(d);
        }
        let us = started.elapsed().as_secs_f64() * 1e6 / docs.len() as f64;
        eprintln!("{what}: {us:.1} us/document");
    };
    for _ in 0..2 {
        time("before: saphyr -> Value, then saphyr -> Route", &|d| {
            let _: Value = parse_at(d).unwrap();
            let _: weir_crds::Route = parse_at(d).unwrap();
        });
        time("route: saphyr -> Route only", &|d| {
            let _: weir_crds::Route = parse_at(d).unwrap();
        });
        time("value: saphyr -> Value only", &|d| {
            let _: Value = parse_at(d).unwrap();
        });
        time("now: parse_document (saphyr -> Value -> Route)", &|d| {
            parse_document(d).unwrap().unwrap();
        });
    }
}
