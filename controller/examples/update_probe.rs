//! Ad-hoc: time `compile::update` for one new Route at N Routes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use std::sync::Arc;
use std::time::Instant;

use weir_controller::compile::{Memory, compile, update};
use weir_controller::index::{Index, ObjectRef};

fn route(name: &str) -> Arc<weir_controller::index::RouteObject> {
    let v = serde_json::json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Route",
        "metadata": {"name": name, "namespace": "default", "generation": 1},
        "spec": {"hosts": [format!("{name}.bench")], "rules": [{"backends": [{"service": "svc", "port": 80}]}]}});
    Arc::new(serde_json::from_value(v).unwrap())
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(10_000, |a| a.parse().unwrap());
    let mut index = Index::default();
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "svc", "namespace": "default"}, "spec": {"ports": [{"port": 80}]}}))
    .unwrap();
    index.services.insert(ObjectRef::new("default", "svc"), Arc::new(svc));
    for i in 0..n {
        index.routes.insert(ObjectRef::new("default", format!("r{i}")), route(&format!("r{i}")));
    }
    let t = Instant::now();
    let mut current = compile(&index, &Memory::default());
    println!("full: {:?}", t.elapsed());
    for k in 0..5 {
        let name = format!("new{k}");
        index.routes.insert(ObjectRef::new("default", name.clone()), route(&name));
        let t = Instant::now();
        current = update(&index, &current).unwrap();
        println!("update one new: {:?}", t.elapsed());
    }
}
