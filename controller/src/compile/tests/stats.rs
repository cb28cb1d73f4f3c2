//! Rules keep their metric handles (`Rule.stats`, from `Memory.stats`) across full and
//! incremental compiles, so counters survive reloads; a Route that no compiled output holds
//! any more gets fresh handles.

use std::time::Duration;

use http::StatusCode;
use weir_dataplane::observe::stats::RuleStats;

use super::*;
use crate::compile::incremental::{Change, changes};
use crate::compile::update;

const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: s1}
spec: {ports: [{port: 80}]}
"#;

fn route(name: &str, generation: i64, rules: &[&str]) -> String {
    let mut yaml = format!(
        "---\napiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}, generation: {generation}}}\nspec:\n  rules:\n"
    );
    for rule in rules {
        yaml.push_str(&format!(
            "    - name: \"{rule}\"\n      matches: [{{path: {{value: /{name}/{rule}}}}}]\n      backends: [{{service: s1, port: 80}}]\n"
        ));
    }
    yaml
}

fn stats(c: &Compiled, route: &str, rule: &str) -> Arc<RuleStats> {
    c.routes
        .rules()
        .find(|r| &*r.route().name == route && &*r.name == rule)
        .map(|r| Arc::clone(&r.stats))
        .unwrap_or_else(|| panic!("rule {route}/{rule} compiled"))
}

#[test]
fn rules_keep_their_metric_handles_across_full_and_incremental_compiles() {
    let mut index =
        load_str(&format!("{BASE}{}{}", route("a", 1, &["x", "y"]), route("b", 1, &["z"])));
    let first = compile(&index, &Memory::default());
    let (ax, ay, bz) = (stats(&first, "a", "x"), stats(&first, "a", "y"), stats(&first, "b", "z"));
    assert!(Arc::ptr_eq(ax.route_stats(), ay.route_stats()), "one histogram per Route");
    assert!(!Arc::ptr_eq(ax.route_stats(), bz.route_stats()));
    ax.record(StatusCode::OK, Duration::from_millis(3));

    // A full compile from the same memory: the same handles.
    let full = compile(&index, &first.memory);
    assert!(Arc::ptr_eq(&stats(&full, "a", "x"), &ax));
    assert!(Arc::ptr_eq(&stats(&full, "b", "z"), &bz));

    // A Route-only edit of b (a rule added) is compiled incrementally: a keeps its rules,
    // b's unchanged rule keeps its handle, the new rule shares b's histogram.
    let b = ObjectRef::new("default", "b");
    let edited = load_str(&route("b", 2, &["z", "w"]));
    index.routes.insert(b.clone(), Arc::clone(&edited.routes[&b]));
    assert!(matches!(changes(&index, &first.state), Change::Routes { .. }), "a Route-only change");
    let second = update(&index, &first).expect("recompiled");
    assert!(Arc::ptr_eq(&stats(&second, "a", "x"), &ax));
    assert!(Arc::ptr_eq(&stats(&second, "b", "z"), &bz), "the incremental path reuses it");
    let bw = stats(&second, "b", "w");
    assert!(Arc::ptr_eq(bw.route_stats(), bz.route_stats()));
    assert_eq!(stats(&second, "a", "x").view().codes, [0, 1, 0, 0, 0], "counts survive");

    // b removed: once nothing holds its handles, a later b starts from zero.
    bz.record(StatusCode::OK, Duration::from_millis(1));
    index.routes.remove(&b);
    let third = update(&index, &second).expect("recompiled");
    assert!(third.routes.rules().all(|r| &*r.route().name != "b"));
    drop((first, full, second, bz, bw));
    index.routes.insert(b.clone(), Arc::clone(&edited.routes[&b]));
    let fourth = update(&index, &third).expect("recompiled");
    assert_eq!(stats(&fourth, "b", "z").view().codes, [0; 5], "a fresh handle");
    assert_eq!(stats(&fourth, "b", "z").view().route_duration.count, 0);
    assert!(Arc::ptr_eq(&stats(&fourth, "a", "x"), &ax), "a untouched throughout");
}
