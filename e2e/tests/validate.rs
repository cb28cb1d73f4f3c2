//! e2e: `weir validate -f PATH` runs the compiler offline: exit 0 on the quickstart, 1 on a
//! file with an invalid Route or an unresolved reference, with the reason printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use weir_e2e::{ConfigDir, prefix_route_yaml, run_weir, service_yaml, workspace_root};

fn output_text(out: &std::process::Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn quickstart_is_valid() {
    let quickstart = workspace_root().join("deploy/examples/quickstart");
    let out = run_weir(&["validate", "-f", quickstart.to_str().unwrap()]).unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for route in
        ["orders", "users", "split", "account", "catalog", "resilience", "profile", "prices"]
    {
        assert!(text.contains(route), "validate prints every Route ({route}): {text}");
    }
}

#[test]
fn quickstart_files_one_by_one_and_together() {
    let dir = workspace_root().join("deploy/examples/quickstart");
    let services = dir.join("services.yaml");
    let routes = dir.join("routes.yaml");
    let out =
        run_weir(&["validate", "-f", services.to_str().unwrap(), "-f", routes.to_str().unwrap()])
            .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
}

/// The Kubernetes example (docs/install.md): its Routes compile against its Services. The
/// Deployments are not weir's to validate, so only the Service documents are kept.
#[test]
fn kubernetes_example_routes_are_valid() {
    let dir = workspace_root().join("deploy/examples/kubernetes");
    let echo = std::fs::read_to_string(dir.join("echo.yaml")).unwrap();
    let services: Vec<&str> =
        echo.split("\n---\n").filter(|doc| doc.contains("\nkind: Service\n")).collect();
    assert_eq!(services.len(), 2, "echo.yaml defines echo-v1 and echo-v2 Services");
    let tmp = ConfigDir::new("validate-k8s-example").unwrap();
    tmp.write("services.yaml", &services.join("\n---\n")).unwrap();
    let routes = dir.join("routes.yaml");
    let out =
        run_weir(&["validate", "-f", tmp.path().to_str().unwrap(), "-f", routes.to_str().unwrap()])
            .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("echo"), "{text}");
}

#[test]
fn invalid_route_fails_validation() {
    let dir = ConfigDir::new("validate-bad").unwrap();
    dir.write("services.yaml", &service_yaml("orders", 9)).unwrap();
    dir.write(
        "bad.yaml",
        r#"
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: bad-regex}
spec:
  rules:
    - matches: [{path: {type: RegularExpression, value: "/("}}]
      backends: [{service: orders, port: 80}]
"#,
    )
    .unwrap();
    let out = run_weir(&["validate", "-f", dir.path().to_str().unwrap()]).unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("bad-regex"), "names the object: {text}");
    assert!(text.contains("Invalid"), "prints the reason: {text}");
}

#[test]
fn missing_backend_fails_validation() {
    let dir = ConfigDir::new("validate-ref").unwrap();
    let path = dir.write("route.yaml", &prefix_route_yaml("lonely", "/x", "nowhere")).unwrap();
    let out = run_weir(&["validate", "-f", path.to_str().unwrap()]).unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("BackendNotFound"), "prints the reason: {text}");
}

#[test]
fn unparsable_file_fails_validation() {
    let dir = ConfigDir::new("validate-yaml").unwrap();
    let path = dir.write("broken.yaml", "kind: Route\nmetadata: [oops\n").unwrap();
    let out = run_weir(&["validate", "-f", path.to_str().unwrap()]).unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("broken.yaml"), "names the file: {text}");
}

/// An aggregate part that uses a capture one of the rule's matches lacks: exit 1, the
/// part's path field and the match named.
#[test]
fn aggregate_part_with_a_missing_capture_fails_validation() {
    let dir = ConfigDir::new("validate-aggregate").unwrap();
    dir.write("services.yaml", &service_yaml("users", 9)).unwrap();
    dir.write(
        "profile.yaml",
        r#"
apiVersion: weir.dev/v1alpha1
kind: Route
metadata: {name: profile}
spec:
  rules:
    - matches:
        - path: {type: Exact, value: "/profile/{id}"}
        - path: {type: Exact, value: "/me"}
      aggregate:
        parts: [{key: user, service: users, port: 80, path: "/users/${path.id}"}]
"#,
    )
    .unwrap();
    let out = run_weir(&["validate", "-f", dir.path().to_str().unwrap()]).unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("profile"), "names the object: {text}");
    assert!(
        text.contains("spec.rules[0].aggregate.parts[0].path: ${path.id} is not captured by spec.rules[0].matches[1]"),
        "names the field and the match: {text}"
    );
}
