//! JSON views of the route and backend tables for the admin port's `/debug/snapshot`.
//! Nothing secret lives in these tables; filters are listed by kind only.

use serde_json::{Value, json};

use super::RouteTable;
use crate::snapshot::{
    BackendTable, HostMatch, PathMatch, RequestMatch, Rule, Snapshot, ValueMatch,
};

fn value_match(v: &ValueMatch) -> (&'static str, Value) {
    match v {
        ValueMatch::Exact(s) => ("Exact", json!(s)),
        ValueMatch::Regex(re) => ("RegularExpression", json!(re.as_str())),
        ValueMatch::Present => ("Present", Value::Null),
    }
}

fn request_match(m: &RequestMatch) -> Value {
    let path = match &m.path {
        PathMatch::Exact(p) => json!({"type": "Exact", "value": p}),
        PathMatch::Prefix(p) => {
            json!({"type": "Prefix", "value": if p.is_empty() { "/" } else { p }})
        }
        PathMatch::Regex(re) => json!({"type": "RegularExpression", "value": re.as_str()}),
    };
    let headers: Vec<Value> = m
        .headers()
        .iter()
        .map(|h| {
            let (t, v) = value_match(&h.value);
            json!({"name": h.name.as_str(), "type": t, "value": v})
        })
        .collect();
    let query: Vec<Value> = m
        .query()
        .iter()
        .map(|q| {
            let (t, v) = value_match(&q.value);
            json!({"name": q.name, "type": t, "value": v})
        })
        .collect();
    json!({
        "path": path,
        "methods": m.methods().iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        "headers": headers,
        "queryParams": query,
    })
}

fn aggregate(a: &crate::aggregate::Aggregate) -> Value {
    let parts: Vec<Value> = a
        .parts
        .iter()
        .map(|p| {
            json!({
                "key": p.key,
                "backend": p.backend.0,
                "host": String::from_utf8_lossy(p.host.as_bytes()),
                "path": p.path.as_str(),
                "optional": p.optional,
                "timeout": format!("{:?}", p.timeout),
                "maxBodySize": p.max_body_size,
            })
        })
        .collect();
    json!({"timeout": format!("{:?}", a.timeout), "parts": parts})
}

fn rule(r: &Rule) -> Value {
    let a = &r.action;
    let backends: Vec<Value> =
        a.backends.backends().iter().map(|b| json!({"id": b.id.0, "weight": b.weight})).collect();
    let rewrite = a.rewrite.as_ref().map(|rw| {
        json!({
            "replacePrefix": rw.replace_prefix,
            "replaceFullPath": rw.replace_full_path,
            "host": rw.host.as_ref().map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
        })
    });
    let t = &a.timeouts;
    let rt = &a.retries;
    json!({
        "name": r.name,
        "index": r.index,
        "matches": r.matches.iter().map(request_match).collect::<Vec<_>>(),
        "backends": backends,
        "rewrite": rewrite,
        "timeouts": {
            "connect": format!("{:?}", t.connect),
            "request": t.request.map(|d| format!("{d:?}")),
        },
        "retries": {
            "attempts": rt.attempts,
            "perTryTimeout": rt.per_try_timeout.map(|d| format!("{d:?}")),
            "onConnectFailure": rt.on_connect_failure,
            "onTimeout": rt.on_timeout,
            "on5xx": rt.on_5xx,
        },
        "filters": a.filters.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "aggregate": a.aggregate.as_deref().map(aggregate),
    })
}

impl RouteTable {
    /// The table as JSON: indexed hosts and every Route with its rules.
    pub fn describe(&self) -> Value {
        let mut exact: Vec<&str> = self.exact_hosts.iter().map(|b| b.host.as_str()).collect();
        exact.sort_unstable();
        let mut wildcard: Vec<String> =
            self.wildcard_hosts.iter().map(|b| format!("*{}", b.host)).collect();
        wildcard.sort_unstable();
        let routes: Vec<Value> = self
            .sorted_routes()
            .into_iter()
            .map(|r| {
                let hosts: Vec<String> = r
                    .hosts
                    .iter()
                    .map(|h| match h {
                        HostMatch::Exact(n) => n.to_string(),
                        HostMatch::Wildcard(s) => format!("*{s}"),
                    })
                    .collect();
                json!({
                    "key": r.key.to_string(),
                    "generation": r.generation,
                    "created": r.created,
                    "hosts": hosts,
                    "rules": r.rules.iter().map(|x| rule(x)).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "hosts": {"exact": exact, "wildcard": wildcard, "anyHost": self.any_host.is_some()},
            "routes": routes,
        })
    }
}

impl BackendTable {
    /// The backends as JSON: id, Service key, ready endpoints and any problem.
    pub fn describe(&self) -> Value {
        let backends: Vec<Value> = self
            .backends
            .iter()
            .enumerate()
            .map(|(id, b)| {
                json!({
                    "id": id,
                    "key": b.key.to_string(),
                    "endpoints": b.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                    "problem": b.problem,
                })
            })
            .collect();
        Value::Array(backends)
    }
}

/// The whole snapshot as JSON, for `/debug/snapshot`.
pub fn describe_snapshot(snapshot: &Snapshot) -> Value {
    json!({
        "version": snapshot.version,
        "routes": snapshot.routes.describe(),
        "backends": snapshot.backends.describe(),
        "tls": snapshot.tls.describe(),
    })
}
