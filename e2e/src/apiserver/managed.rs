//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Fields are tracked as leaf paths: maps are walked, every scalar and every list is one
//! leaf (lists are treated as atomic; the real server merges associative lists by key).
//! In `metadata`, only `labels`, `annotations`, `finalizers` and `ownerReferences` are
//! tracked. `fieldsV1` is written in the real `f:` notation, without the `.` markers.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::meta;

/// A field path, one map key per element.
pub type FieldPath = Vec<String>;
/// A set of owned fields.
pub type FieldSet = BTreeSet<FieldPath>;

const METADATA_TRACKED: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource; `true` when the kind has a status subresource (status ignored).
    Main(bool),
    /// The `status` subresource: only `status`.
    Status,
}

impl Scope {
    fn admits(&self, path: &FieldPath) -> bool {
        let is_status = path.first().is_some_and(|f| f == "status");
        match self {
            Scope::Main(has_status) => !(is_status && *has_status),
            Scope::Status => is_status,
        }
    }

    fn subresource(&self) -> Option<&'static str> {
        match self {
            Scope::Main(_) => None,
            Scope::Status => Some("status"),
        }
    }
}

fn walk(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(k.clone());
                walk(child, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The tracked leaf paths of an object.
pub fn leaf_paths(obj: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = obj.as_object() else { return out };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                for f in METADATA_TRACKED {
                    if let Some(x) = v.get(*f) {
                        walk(x, &mut vec!["metadata".into(), (*f).into()], &mut out);
                    }
                }
            }
            _ => walk(v, &mut vec![k.clone()], &mut out),
        }
    }
    out
}

/// The value at a path.
pub fn value_at<'a>(obj: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.get(k))
}

fn remove_at(obj: &mut Value, path: &FieldPath) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = obj;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// Two paths overlap when one is a prefix of the other.
fn overlaps(a: &FieldPath, b: &FieldPath) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// Merges `src` into `target`: maps recursively, everything else replaced; `null` removes.
pub fn merge_into(target: &mut Value, src: &Value) {
    match (target.as_object_mut(), src.as_object()) {
        (Some(t), Some(s)) => {
            for (k, v) in s {
                if v.is_null() {
                    t.remove(k);
                } else if let Some(existing) = t.get_mut(k) {
                    merge_into(existing, v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        _ => *target = src.clone(),
    }
}

fn to_fields_v1(paths: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut cur = &mut root;
        for k in path {
            let entry = cur.entry(format!("f:{k}")).or_insert_with(|| json!({}));
            match entry {
                Value::Object(m) => cur = m,
                _ => break,
            }
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    let named: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.starts_with("f:")).collect();
    if named.is_empty() {
        if !path.is_empty() {
            out.insert(path.clone());
        }
        return;
    }
    for (k, child) in named {
        path.push(k[2..].to_owned());
        from_fields_v1(child, path, out);
        path.pop();
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    manager: String,
    operation: &'static str,
    subresource: Option<String>,
    api_version: String,
    time: String,
    fields: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            let mut fields = FieldSet::new();
            from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null), &mut Vec::new(), &mut fields);
            Entry {
                manager: s("manager"),
                operation: if s("operation") == "Apply" { "Apply" } else { "Update" },
                subresource: e.get("subresource").and_then(Value::as_str).map(str::to_owned),
                api_version: s("apiVersion"),
                time: s("time"),
                fields,
            }
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields),
            });
            if let (Some(sub), Some(m)) = (e.subresource, v.as_object_mut()) {
                m.insert("subresource".into(), Value::String(sub));
            }
            v
        })
        .collect();
    let m = meta::metadata_mut(obj);
    if list.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(list));
    }
}

fn entry_mut<'a>(
    entries: &'a mut Vec<Entry>,
    manager: &str,
    operation: &'static str,
    scope: Scope,
    api_version: &str,
) -> &'a mut Entry {
    let sub = scope.subresource();
    let idx = match entries.iter().position(|e| e.is(manager, operation, sub)) {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: manager.to_owned(),
                operation,
                subresource: sub.map(str::to_owned),
                api_version: api_version.to_owned(),
                time: meta::now(),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    &mut entries[idx]
}

/// Records an `Update`-operation write (create, PUT, merge/JSON patch) on `new`: the fields
/// it changed move to `manager`, removed fields leave every owner.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    api_version: &str,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let old_paths = old.map(leaf_paths).unwrap_or_default();
    let new_paths = leaf_paths(new);
    let changed: FieldSet = new_paths
        .iter()
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .cloned()
        .collect();
    let removed: FieldSet = old_paths.difference(&new_paths).cloned().collect();
    for e in entries.iter_mut() {
        e.fields.retain(|q| !changed.iter().chain(&removed).any(|p| overlaps(p, q)));
    }
    if !changed.is_empty() {
        let own = entry_mut(&mut entries, manager, "Update", scope, api_version);
        own.fields.extend(changed);
        own.time = meta::now();
    }
    write_entries(new, entries);
}

/// Server-side apply of `applied` by `manager` onto `live` (or onto nothing, for a create).
/// Returns the new object with its managed fields; the caller applies status rules and
/// stores it.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    api_version: &str,
) -> Result<Value, ApiError> {
    let mut entries = live.map(read_entries).unwrap_or_default();
    let sub = scope.subresource();
    let paths: FieldSet = leaf_paths(applied).into_iter().filter(|p| scope.admits(p)).collect();
    let empty = Value::Null;
    let live_v = live.unwrap_or(&empty);

    let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
    for e in entries.iter().filter(|e| e.manager != manager) {
        for p in &paths {
            let differs = value_at(live_v, p) != value_at(applied, p);
            if differs && e.fields.iter().any(|q| overlaps(p, q)) {
                conflicts.push((e.manager.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            let list: Vec<String> = conflicts
                .iter()
                .map(|(m, p)| format!("conflict with \"{m}\": .{}", p.join(".")))
                .collect();
            return Err(ApiError::Conflict(format!(
                "Apply failed with {} conflict{}: {}",
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                list.join(", ")
            )));
        }
        for e in entries.iter_mut().filter(|e| e.manager != manager) {
            e.fields.retain(|q| !conflicts.iter().any(|(_, p)| overlaps(p, q)));
        }
    }

    let previous = entries
        .iter()
        .find(|e| e.is(manager, "Apply", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: Vec<&FieldPath> = entries
        .iter()
        .filter(|e| !e.is(manager, "Apply", sub))
        .flat_map(|e| e.fields.iter())
        .collect();
    let mut new = live.cloned().unwrap_or_else(|| json!({}));
    for p in previous.difference(&paths) {
        if !others.iter().any(|q| overlaps(p, q)) {
            remove_at(&mut new, p);
        }
    }
    let mut scoped = applied.clone();
    if let Some(m) = scoped.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        match scope {
            Scope::Main(true) => {
                m.remove("status");
            }
            Scope::Main(false) => {}
            Scope::Status => m.retain(|k, _| k == "status"),
        }
        if let Some(Value::Object(md)) = m.get_mut("metadata") {
            md.retain(|k, _| METADATA_TRACKED.contains(&k.as_str()));
        }
    }
    merge_into(&mut new, &scoped);
    let own = entry_mut(&mut entries, manager, "Apply", scope, api_version);
    if own.fields != paths {
        own.time = meta::now();
    }
    own.fields = paths;
    write_entries(&mut new, entries);
    Ok(new)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"apiVersion": "v1", "metadata": {"name": "x", "labels": {"a": "1"}},
            "spec": {"hosts": ["h"], "x": {"y": 1}, "empty": {}}});
        let paths = leaf_paths(&obj);
        let v1 = to_fields_v1(&paths);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:a": {}}},
            "f:spec": {"f:hosts": {}, "f:x": {"f:y": {}}, "f:empty": {}}})
        );
        let mut back = FieldSet::new();
        from_fields_v1(&v1, &mut Vec::new(), &mut back);
        assert_eq!(back, paths);
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped_and_detects_conflicts() {
        let first =
            apply(None, &json!({"spec": {"a": 1, "b": 2}}), "m1", false, Scope::Main(true), "v1")
                .unwrap();
        let second =
            apply(Some(&first), &json!({"spec": {"a": 1}}), "m1", false, Scope::Main(true), "v1")
                .unwrap();
        assert_eq!(second["spec"], json!({"a": 1}));
        let err =
            apply(Some(&second), &json!({"spec": {"a": 5}}), "m2", false, Scope::Main(true), "v1")
                .unwrap_err();
        assert_eq!(err.code(), 409, "{err}");
        let shared =
            apply(Some(&second), &json!({"spec": {"a": 1}}), "m2", false, Scope::Main(true), "v1")
                .unwrap();
        assert_eq!(shared["metadata"]["managedFields"].as_array().unwrap().len(), 2);
        let forced =
            apply(Some(&second), &json!({"spec": {"a": 5}}), "m2", true, Scope::Main(true), "v1")
                .unwrap();
        assert_eq!(forced["spec"]["a"], 5);
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, vec!["m2"], "m1 lost its only field");
    }
}
