//! The incremental compile equals a full `compile()`: a seeded random walk of Route adds,
//! edits, invalid edits, removals and endpoint changes, comparing after every step the
//! statuses, memory, rule plugins, rate limits, the route table (with backend ids resolved
//! to their keys) and lookups.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::index::RouteObject;
use http::{HeaderMap, Method};
use serde_json::{Value, json};
use weir_dataplane::RequestView;

use super::*;
use crate::compile::incremental::{Change, changes, compile_changed};
use crate::compile::update;

const BASE: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: l1}
spec: {rateLimit: {limit: 5, window: 1m}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: l2}
spec: {rateLimit: {limit: 50, window: 1m}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: l3}
spec: {rateLimit: {limit: 7, window: 1m}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: keys}
spec: {keyAuth: {header: x-api-key}}
---
apiVersion: weir.dev/v1alpha1
kind: Plugin
metadata: {name: keys, namespace: other}
spec: {keyAuth: {header: x-api-key}}
---
apiVersion: v1
kind: Secret
metadata: {name: k}
stringData: {key: the-key}
---
apiVersion: weir.dev/v1alpha1
kind: Consumer
metadata: {name: c}
spec: {plugins: [l3], credentials: [{apiKey: {secretRef: {name: k}}}]}
---
apiVersion: v1
kind: Service
metadata: {name: s1}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: s2}
spec: {ports: [{port: 80, name: http}, {port: 81, name: admin}]}
---
apiVersion: v1
kind: Service
metadata: {name: s1, namespace: other}
spec: {ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s1-a, labels: {kubernetes.io/service-name: s1}}
addressType: IPv4
ports: [{port: 9001}]
endpoints: [{addresses: [127.0.0.1]}]
"#;

/// A small deterministic generator (xorshift64*), so a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// A random Route spec as YAML (flow style); invalid when `invalid`.
fn route_yaml(rng: &mut Rng, ns: &str, name: &str, generation: i64, invalid: bool) -> String {
    let hosts =
        rng.pick(&["[]", "[a.example.com]", "['*.example.com']", "[a.example.com, b.example.com]"]);
    let plugins = rng.pick(&["[]", "[]", "[l1]", "[l2]", "[keys]", "[l1, keys]", "[missing]"]);
    let mut rules = Vec::new();
    for r in 0..1 + rng.below(2) {
        let path = format!("/p{}", rng.below(8));
        let kind = rng.pick(&["Prefix", "Prefix", "Exact"]);
        let service = rng.pick(&["s1", "s1", "s2", "s3", "gone"]);
        let port = rng.pick(&["80", "80", "81", "0"]);
        let rule_plugins = rng.pick(&["[]", "[]", "[]", "[l2]", "[l1]"]);
        let path = if invalid && r == 0 { "no-slash".to_owned() } else { path };
        rules.push(format!(
            "{{name: r{r}, plugins: {rule_plugins}, matches: [{{path: {{type: {kind}, value: {path}}}}}], \
             backends: [{{service: {service}, port: {port}}}]}}"
        ));
    }
    let created = ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"][rng.below(2)];
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}, namespace: {ns}, \
         generation: {generation}, creationTimestamp: '{created}'}}\n\
         spec: {{hosts: {hosts}, plugins: {plugins}, rules: [{}]}}\n",
        rules.join(", ")
    )
}

fn parse_route(yaml: &str) -> Arc<RouteObject> {
    Arc::new(serde_saphyr::from_str::<RouteObject>(yaml).expect(yaml))
}

/// The route table as JSON, routes sorted by key, backend ids replaced by their keys.
fn table(c: &Compiled) -> Value {
    let mut v = c.routes.describe();
    let routes = v["routes"].as_array_mut().unwrap();
    routes.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    for route in routes.iter_mut() {
        for rule in route["rules"].as_array_mut().unwrap() {
            for b in rule["backends"].as_array_mut().unwrap() {
                let id = b["id"].as_u64().unwrap() as usize;
                let backend = &c.backends.backends[id];
                assert_eq!(backend.key, c.backend_keys[id]);
                b["id"] = json!({
                    "key": backend.key.to_string(),
                    "endpoints": backend.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                    "problem": backend.problem,
                });
            }
        }
    }
    v
}

/// Which rule of which Route serves some requests, and its filter kinds.
fn lookups(c: &Compiled) -> Vec<String> {
    let headers = HeaderMap::new();
    let mut out = Vec::new();
    for host in ["a.example.com", "b.example.com", "x.example.com", "other"] {
        for p in 0..8 {
            let path = format!("/p{p}/x");
            let exact = format!("/p{p}");
            for path in [path.as_str(), exact.as_str()] {
                let req = RequestView {
                    method: &Method::GET,
                    host,
                    path,
                    query: None,
                    headers: &headers,
                };
                out.push(match c.routes.find(&req) {
                    Some(m) => format!(
                        "{host}{path} -> {} {} {:?}",
                        m.rule.route(),
                        m.rule.name,
                        m.rule
                            .action
                            .filters
                            .iter()
                            .map(|f| format!("{:?}", f.phase()))
                            .collect::<Vec<_>>()
                    ),
                    None => format!("{host}{path} -> none"),
                });
            }
        }
    }
    out
}

fn memory_view(m: &Memory) -> Vec<(ObjectRef, i64, String)> {
    m.last_good_routes()
        .map(|(k, (g, r))| {
            (k.clone(), *g, format!("{:?} {}", r.metadata, serde_json::to_string(&r.spec).unwrap()))
        })
        .collect()
}

fn rate_limit_ids(c: &Compiled) -> Vec<String> {
    c.rate_limits.iter().map(|r| format!("{:?}", r.spec().id())).collect()
}

fn assert_same(step: usize, inc: &Compiled, full: &Compiled) {
    assert_eq!(inc.statuses, full.statuses, "step {step}: statuses");
    assert_eq!(memory_view(&inc.memory), memory_view(&full.memory), "step {step}: memory");
    assert_eq!(inc.memory.last_good_plugins, full.memory.last_good_plugins, "step {step}");
    assert_eq!(inc.rule_plugins, full.rule_plugins, "step {step}: rule plugins");
    assert_eq!(rate_limit_ids(inc), rate_limit_ids(full), "step {step}: rate limits");
    assert_eq!(inc.identity_headers, full.identity_headers, "step {step}");
    assert_eq!(table(inc), table(full), "step {step}: route table");
    assert_eq!(lookups(inc), lookups(full), "step {step}: lookups");
}

fn random_walk(seed: u64, steps: usize) -> (usize, usize) {
    let mut rng = Rng(seed);
    let mut index = load_str(BASE);
    let mut generations: BTreeMap<ObjectRef, i64> = BTreeMap::new();
    let mut current = compile(&index, &Memory::default());
    let (mut incremental, mut with_endpoints) = (0, 0);
    for step in 0..steps {
        let keys: Vec<ObjectRef> = index.routes.keys().cloned().collect();
        let action = rng.below(10);
        match action {
            0..=2 if !keys.is_empty() => {
                let key = keys[rng.below(keys.len())].clone();
                index.routes.remove(&key);
            }
            3..=6 if !keys.is_empty() => {
                let key = keys[rng.below(keys.len())].clone();
                let g = generations.entry(key.clone()).or_insert(1);
                *g += 1;
                let invalid = rng.below(3) == 0;
                let yaml = route_yaml(&mut rng, &key.namespace, &key.name, *g, invalid);
                index.routes.insert(key, parse_route(&yaml));
            }
            _ => {
                let ns = ["default", "other"][rng.below(2)];
                let key = ObjectRef::new(ns, format!("r{}", rng.below(30)));
                let g = generations.entry(key.clone()).or_insert(0);
                *g += 1;
                let invalid = rng.below(5) == 0;
                let yaml = route_yaml(&mut rng, &key.namespace, &key.name, *g, invalid);
                index.routes.insert(key, parse_route(&yaml));
            }
        }
        if rng.below(6) == 0 {
            let slice = index.endpoint_slices.values_mut().next().unwrap();
            let port = 9000 + i32::try_from(rng.below(3)).unwrap();
            Arc::make_mut(slice).ports.as_mut().unwrap()[0].port = Some(port);
        }
        let full = compile(&index, &current.memory);
        let next = match changes(&index, &current.state) {
            Change::Routes { removed, changed, endpoints } => {
                incremental += 1;
                with_endpoints += usize::from(endpoints);
                let mut next = compile_changed(&index, &current, &removed, &changed, endpoints);
                // As `update` does after any compile: the exact-conflict pass.
                next.conflicts = Arc::new(crate::compile::conflicts::Conflicts::update(
                    Some(&current),
                    &index,
                    &mut next.statuses,
                ));
                next
            }
            Change::Unchanged => continue,
            other => panic!("step {step}: only Routes and endpoints changed, got {other:?}"),
        };
        assert_same(step, &next, &full);
        // `update` agrees (it may choose a full compile for large changes).
        assert_same(step, &update(&index, &current).unwrap(), &full);
        current = next;
    }
    (incremental, with_endpoints)
}

#[test]
fn incremental_compiles_equal_full_compiles_over_random_route_changes() {
    for seed in [1, 7, 42, 1234, 99_999] {
        let (incremental, with_endpoints) = random_walk(seed, 150);
        assert!(incremental > 100, "seed {seed}: only {incremental} incremental steps");
        assert!(with_endpoints > 5, "seed {seed}: only {with_endpoints} with endpoint changes");
    }
}

#[test]
fn unchanged_routes_keep_their_compiled_output_and_a_plugin_change_recompiles_all() {
    let mut index = load_str(&format!(
        "{BASE}---\n{}---\n{}",
        route_yaml(&mut Rng(3), "default", "a", 1, false),
        route_yaml(&mut Rng(5), "default", "b", 1, false)
    ));
    let first = compile(&index, &Memory::default());
    assert_eq!(update(&index, &first).map(|_| ()), None, "nothing changed");
    let b = ObjectRef::new("default", "b");
    let edited = route_yaml(&mut Rng(11), "default", "b", 2, false);
    index.routes.insert(b.clone(), parse_route(&edited));
    let second = update(&index, &first).unwrap();
    let a = (Kind::Route, ObjectRef::new("default", "a"));
    assert!(Arc::ptr_eq(&first.statuses[&a], &second.statuses[&a]), "unchanged status rebuilt");
    assert!(Arc::ptr_eq(&first.state.shared_inputs(), &second.state.shared_inputs()));
    assert_eq!(second.statuses[&(Kind::Route, b)].generation, 2);
    // A Plugin change is not a Route-only change.
    let l1 = ObjectRef::new("default", "l1");
    let mut plugin = (*index.plugins[&l1]).clone();
    plugin.metadata.generation = Some(5);
    index.plugins.insert(l1, Arc::new(plugin));
    assert_eq!(changes(&index, &second.state), Change::Full);
    let third = update(&index, &second).unwrap();
    assert!(!Arc::ptr_eq(&second.state.shared_inputs(), &third.state.shared_inputs()));
}
