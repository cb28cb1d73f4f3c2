//! Reading `/debug/status` without depending on its exact layout: find the conditions of
//! an object by name, and search the whole document for text (file names, reasons).

use serde_json::Value;

/// A condition as found in `/debug/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCondition {
    /// `type`.
    pub type_: String,
    /// `status` (`True` / `False` / `Unknown`).
    pub status: String,
    /// `reason`.
    pub reason: String,
    /// `message`.
    pub message: String,
}

/// The conditions of the object named `name` (matched as `name`, `namespace/name` or
/// `Kind/namespace/name`, in a key or in a string field of the object's JSON) of the given
/// kind (`Route`, `Plugin`, `Consumer`; matched case-insensitively wherever the document
/// names kinds). Returns the first match's conditions.
pub fn conditions_of(status: &Value, kind: &str, name: &str) -> Option<Vec<FoundCondition>> {
    find(status, kind, name, false)
}

fn names_object(text: &str, name: &str) -> bool {
    text == name || text.ends_with(&format!("/{name}"))
}

fn mentions_kind(value: &Value, kind: &str) -> bool {
    match value {
        Value::String(s) => s.eq_ignore_ascii_case(kind) || s.starts_with(&format!("{kind}/")),
        Value::Object(map) => map.iter().any(|(k, v)| {
            (k == "kind" && v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(kind)))
                || (!matches!(v, Value::Object(_) | Value::Array(_)) && mentions_kind(v, kind))
        }),
        _ => false,
    }
}

/// Walks the document. `in_kind` is true below a key or array named after the kind
/// (e.g. `"routes": [...]` or `"Route": {...}`).
fn find(value: &Value, kind: &str, name: &str, in_kind: bool) -> Option<Vec<FoundCondition>> {
    match value {
        Value::Object(map) => {
            // This object itself describes the wanted object?
            let named = map.iter().any(|(k, v)| {
                matches!(k.as_str(), "name" | "object" | "key" | "ref" | "id")
                    && v.as_str().is_some_and(|s| names_object(s, name))
            }) || map
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .is_some_and(|s| s == name);
            if named
                && (in_kind || mentions_kind(value, kind))
                && let Some(found) = conditions_in(value)
            {
                return Some(found);
            }
            for (key, child) in map {
                let child_in_kind = in_kind || key_is_kind(key, kind);
                if names_object(key, name)
                    && child_in_kind_or_key(key, kind, child_in_kind)
                    && let Some(found) = conditions_in(child)
                {
                    return Some(found);
                }
                if let Some(found) = find(child, kind, name, child_in_kind) {
                    return Some(found);
                }
            }
            None
        }
        Value::Array(items) => items.iter().find_map(|item| find(item, kind, name, in_kind)),
        _ => None,
    }
}

fn key_is_kind(key: &str, kind: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let kind = kind.to_ascii_lowercase();
    k == kind || k == format!("{kind}s")
}

fn child_in_kind_or_key(key: &str, kind: &str, in_kind: bool) -> bool {
    in_kind || key.to_ascii_lowercase().starts_with(&format!("{}/", kind.to_ascii_lowercase()))
}

/// The first `conditions` array at or below `value`.
fn conditions_in(value: &Value) -> Option<Vec<FoundCondition>> {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(items)) = map.get("conditions") {
                return Some(items.iter().filter_map(parse_condition).collect());
            }
            map.values().find_map(conditions_in)
        }
        Value::Array(items) => items.iter().find_map(conditions_in),
        _ => None,
    }
}

fn parse_condition(value: &Value) -> Option<FoundCondition> {
    let field = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let type_ = field("type");
    if type_.is_empty() {
        return None;
    }
    Some(FoundCondition {
        type_,
        status: field("status"),
        reason: field("reason"),
        message: field("message"),
    })
}

/// The condition of `type_` in `conditions`, if present.
pub fn condition<'a>(conditions: &'a [FoundCondition], type_: &str) -> Option<&'a FoundCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn accepted(status: &str) -> Value {
        json!({"type": "Accepted", "status": status, "reason": "R", "message": "m"})
    }

    #[test]
    fn finds_conditions_in_common_layouts() {
        let layouts = [
            json!({"objects": [{"kind": "Route", "namespace": "default", "name": "a",
                                "conditions": [accepted("False")]}]}),
            json!({"routes": {"default/a": {"conditions": [accepted("False")]}}}),
            json!({"routes": [{"name": "default/a", "status": {"conditions": [accepted("False")]}}]}),
            json!([{"object": "Route/default/a", "conditions": [accepted("False")]}]),
        ];
        for layout in layouts {
            let found = conditions_of(&layout, "Route", "a").expect("found");
            assert_eq!(condition(&found, "Accepted").unwrap().status, "False", "{layout}");
        }
    }

    #[test]
    fn does_not_confuse_kinds_or_names() {
        let doc = json!({"objects": [
            {"kind": "Plugin", "name": "a", "conditions": [accepted("False")]},
            {"kind": "Route", "name": "ab", "conditions": [accepted("False")]},
            {"kind": "Route", "name": "a", "conditions": [accepted("True")]},
        ]});
        let found = conditions_of(&doc, "Route", "a").expect("found");
        assert_eq!(condition(&found, "Accepted").unwrap().status, "True");
        assert!(conditions_of(&doc, "Consumer", "a").is_none());
    }
}
