//! The status each weir object should carry, and whether it must be written.
//!
//! Pure functions: the writer feeds in what `compile()` said, what the API server holds and
//! what this replica last wrote, and gets back the status to apply, or nothing when the
//! object already carries it. `lastTransitionTime` is kept from the previous status of the
//! same condition type while its `status` is unchanged, so a new leader does not move it.

use weir_crds::{Condition, RouteStatus};

use crate::compile::ObjectStatus;
use crate::index::Kind;
use crate::kube::state::Watched;

/// `Accepted`.
pub const ACCEPTED: &str = "Accepted";
/// `Programmed`.
pub const PROGRAMMED: &str = "Programmed";

fn condition(type_: &str, reason: &str, message: String, generation: i64) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: "False".to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: Some(generation),
        last_transition_time: None,
    }
}

/// The status an object should carry, before transition times are filled in; `None` when
/// nothing can be said yet (compile() has not seen this generation).
pub fn target(
    kind: Kind,
    compiled: Option<&ObjectStatus>,
    watched: &Watched,
) -> Option<RouteStatus> {
    let generation = watched.existing.generation;
    if let Some(invalid) = &watched.invalid {
        if invalid.generation != generation {
            return None;
        }
        let mut conditions =
            vec![condition(ACCEPTED, "Invalid", invalid.message.clone(), generation)];
        if kind == Kind::Route {
            let serving = compiled.is_some_and(|c| c.is_true(PROGRAMMED));
            let message = if serving {
                "not programmed: this generation is invalid; the last good version keeps serving"
            } else {
                "not programmed: the route is invalid and has no last good version"
            };
            conditions.push(condition(PROGRAMMED, "Invalid", message.to_owned(), generation));
        }
        return Some(RouteStatus {
            observed_generation: Some(generation),
            conditions,
            effective_plugins: Vec::new(),
        });
    }
    let compiled = compiled?;
    if compiled.generation != generation {
        return None;
    }
    Some(RouteStatus {
        observed_generation: Some(generation),
        conditions: compiled.conditions.clone(),
        effective_plugins: if kind == Kind::Route {
            compiled.effective_plugins.clone()
        } else {
            Vec::new()
        },
    })
}

/// Fills in `lastTransitionTime`: kept from `previous` for a condition type whose status is
/// unchanged, else `now`.
pub fn with_times(mut status: RouteStatus, previous: &RouteStatus, now: &str) -> RouteStatus {
    for c in &mut status.conditions {
        let kept = previous
            .conditions
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
            .and_then(|p| p.last_transition_time.clone());
        c.last_transition_time = Some(kept.unwrap_or_else(|| now.to_owned()));
    }
    status
}

/// The status to write, or `None` when the object (or this replica's last write, which the
/// watch may not have delivered yet) already carries it.
pub fn to_write(
    kind: Kind,
    compiled: Option<&ObjectStatus>,
    watched: &Watched,
    last_written: Option<&RouteStatus>,
    now: &str,
) -> Option<RouteStatus> {
    let target = target(kind, compiled, watched)?;
    let previous = last_written.unwrap_or(&watched.existing.status);
    let desired = with_times(target, previous, now);
    if desired == watched.existing.status || Some(&desired) == last_written {
        return None;
    }
    Some(desired)
}

/// The status document to write for a kind whose whole status weir computes
/// ([`ObjectStatus::document`]: Gateway API kinds, Ingress), or `None` when there is
/// nothing to write: the object is not weir's (no status entry, or no document), the
/// compile has not seen this generation, or the object (or this replica's last write,
/// which the watch may not have delivered yet) already carries it.
/// `lastTransitionTime` is filled into every condition found anywhere in the document.
pub fn document_to_write(
    compiled: Option<&ObjectStatus>,
    watched: &Watched,
    last_written: Option<&serde_json::Value>,
    now: &str,
) -> Option<serde_json::Value> {
    let compiled = compiled?;
    let document = compiled.document.as_ref()?;
    if watched.invalid.is_some() || compiled.generation != watched.existing.generation {
        return None;
    }
    let existing = watched.existing.document.as_ref();
    let mut desired = document.clone();
    fill_times(&mut desired, last_written.or(existing), now);
    if Some(&desired) == existing || Some(&desired) == last_written {
        return None;
    }
    Some(desired)
}

/// Fills `lastTransitionTime` into every `conditions` list under `node`, keeping the time
/// of the same condition type in the corresponding place of `previous` while its status is
/// unchanged. List entries correspond by `parentRef` (route parents), else by `name`
/// (Gateway listeners), else by position.
pub fn fill_times(node: &mut serde_json::Value, previous: Option<&serde_json::Value>, now: &str) {
    use serde_json::Value;
    match node {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let before = previous.and_then(|p| p.get(key));
                if key == "conditions"
                    && let Value::Array(conditions) = value
                {
                    fill_conditions(conditions, before, now);
                } else {
                    fill_times(value, before, now);
                }
            }
        }
        Value::Array(items) => {
            let before = previous.and_then(Value::as_array);
            for (i, item) in items.iter_mut().enumerate() {
                let matched = before.and_then(|b| corresponding(b, item, i));
                fill_times(item, matched, now);
            }
        }
        _ => {}
    }
}

fn corresponding<'a>(
    before: &'a [serde_json::Value],
    item: &serde_json::Value,
    i: usize,
) -> Option<&'a serde_json::Value> {
    for key in ["parentRef", "name"] {
        if let Some(id) = item.get(key) {
            return before.iter().find(|b| b.get(key) == Some(id));
        }
    }
    before.get(i)
}

fn fill_conditions(
    conditions: &mut [serde_json::Value],
    before: Option<&serde_json::Value>,
    now: &str,
) {
    let before = before.and_then(serde_json::Value::as_array);
    for c in conditions.iter_mut() {
        let kept = before
            .into_iter()
            .flatten()
            .find(|p| p.get("type") == c.get("type") && p.get("status") == c.get("status"))
            .and_then(|p| p.get("lastTransitionTime"))
            .filter(|t| t.is_string())
            .cloned();
        if let Some(map) = c.as_object_mut() {
            let time = kept.unwrap_or_else(|| serde_json::Value::String(now.to_owned()));
            map.insert("lastTransitionTime".to_owned(), time);
        }
    }
}

/// The `Accepted` condition of a status, if any.
pub fn accepted(status: &RouteStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == ACCEPTED)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::kube::convert::{Existing, Invalid};

    fn cond(type_: &str, status: &str, time: Option<&str>) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: if status == "True" { type_.into() } else { "Pending".into() },
            message: String::new(),
            observed_generation: Some(2),
            last_transition_time: time.map(str::to_owned),
        }
    }

    fn compiled(generation: i64, programmed: &str) -> ObjectStatus {
        ObjectStatus {
            generation,
            conditions: vec![cond(ACCEPTED, "True", None), cond(PROGRAMMED, programmed, None)],
            effective_plugins: Vec::new(),
            document: None,
        }
    }

    fn watched(generation: i64, status: RouteStatus) -> Watched {
        Watched {
            existing: Existing { uid: None, generation, status, document: None },
            invalid: None,
        }
    }

    fn gateway_doc(listener_ready: &str) -> serde_json::Value {
        serde_json::json!({
            "addresses": [{"type": "IPAddress", "value": "10.0.0.1"}],
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "observedGeneration": 2},
                {"type": "Programmed", "status": "True", "reason": "Programmed", "message": "", "observedGeneration": 2}
            ],
            "listeners": [
                {"name": "http", "attachedRoutes": 1, "supportedKinds": [], "conditions": [
                    {"type": "Programmed", "status": listener_ready, "reason": "R", "message": "", "observedGeneration": 2}]},
                {"name": "https", "attachedRoutes": 0, "supportedKinds": [], "conditions": [
                    {"type": "Programmed", "status": "True", "reason": "R", "message": "", "observedGeneration": 2}]}
            ]
        })
    }

    fn front(document: serde_json::Value) -> ObjectStatus {
        ObjectStatus {
            generation: 2,
            conditions: Vec::new(),
            effective_plugins: Vec::new(),
            document: Some(document),
        }
    }

    fn watched_doc(document: Option<serde_json::Value>) -> Watched {
        let existing =
            Existing { uid: None, generation: 2, status: RouteStatus::default(), document };
        Watched { existing, invalid: None }
    }

    fn times(doc: &serde_json::Value) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(t) = m.get("lastTransitionTime").and_then(|t| t.as_str()) {
                        out.push(t.to_owned());
                    }
                    m.values().for_each(|v| walk(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(doc, &mut out);
        out
    }

    #[test]
    fn documents_get_times_everywhere_and_keep_them_per_listener_while_unchanged() {
        let first =
            document_to_write(Some(&front(gateway_doc("True"))), &watched_doc(None), None, "T1")
                .unwrap();
        assert_eq!(times(&first), vec!["T1"; 4]);
        // Carried by the object, or just written: nothing to write.
        let carried = watched_doc(Some(first.clone()));
        assert!(
            document_to_write(Some(&front(gateway_doc("True"))), &carried, None, "T2").is_none()
        );
        let fresh = watched_doc(None);
        assert!(
            document_to_write(Some(&front(gateway_doc("True"))), &fresh, Some(&first), "T2")
                .is_none()
        );
        // The "http" listener turns False: only its condition moves, matched by name even
        // when the listeners come in another order.
        let mut doc = gateway_doc("False");
        doc["listeners"].as_array_mut().unwrap().reverse();
        let out = document_to_write(Some(&front(doc)), &carried, None, "T3").unwrap();
        let http =
            out["listeners"].as_array().unwrap().iter().find(|l| l["name"] == "http").unwrap();
        assert_eq!(http["conditions"][0]["lastTransitionTime"], "T3");
        let https =
            out["listeners"].as_array().unwrap().iter().find(|l| l["name"] == "https").unwrap();
        assert_eq!(https["conditions"][0]["lastTransitionTime"], "T1");
        assert_eq!(out["conditions"][0]["lastTransitionTime"], "T1");
    }

    #[test]
    fn route_parents_match_by_parent_ref() {
        let parent = |name: &str, status: &str| {
            serde_json::json!({"parentRef": {"name": name}, "controllerName": "weir.dev/gateway-controller",
                "conditions": [{"type": "Accepted", "status": status, "reason": "R", "message": "", "observedGeneration": 2}]})
        };
        let before = serde_json::json!({"parents": [
            {"parentRef": {"name": "a"}, "controllerName": "weir.dev/gateway-controller", "conditions": [
                {"type": "Accepted", "status": "True", "reason": "R", "message": "", "observedGeneration": 2, "lastTransitionTime": "T0"}]}
        ]});
        let doc = serde_json::json!({"parents": [parent("b", "True"), parent("a", "True")]});
        let out =
            document_to_write(Some(&front(doc)), &watched_doc(Some(before)), None, "T5").unwrap();
        assert_eq!(out["parents"][0]["conditions"][0]["lastTransitionTime"], "T5");
        assert_eq!(out["parents"][1]["conditions"][0]["lastTransitionTime"], "T0");
    }

    #[test]
    fn objects_that_are_not_weirs_or_not_compiled_yet_get_nothing() {
        let w = watched_doc(None);
        assert!(document_to_write(None, &w, None, "T").is_none(), "no status entry");
        let no_doc = ObjectStatus { document: None, ..front(serde_json::json!({})) };
        assert!(document_to_write(Some(&no_doc), &w, None, "T").is_none());
        let mut stale = front(gateway_doc("True"));
        stale.generation = 1;
        assert!(document_to_write(Some(&stale), &w, None, "T").is_none());
        // Ingress: no conditions at all, written once.
        let lb = serde_json::json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}});
        let out = document_to_write(Some(&front(lb.clone())), &w, None, "T").unwrap();
        assert_eq!(out, lb);
        assert!(
            document_to_write(Some(&front(lb.clone())), &watched_doc(Some(lb)), None, "T")
                .is_none()
        );
    }

    #[test]
    fn writes_new_statuses_and_nothing_when_the_object_already_carries_it() {
        let w = watched(2, RouteStatus::default());
        let first = to_write(Kind::Route, Some(&compiled(2, "True")), &w, None, "T1").unwrap();
        assert_eq!(first.observed_generation, Some(2));
        assert!(first.conditions.iter().all(|c| c.last_transition_time.as_deref() == Some("T1")));
        // The watch has not delivered our write yet: nothing new to write.
        assert!(
            to_write(Kind::Route, Some(&compiled(2, "True")), &w, Some(&first), "T2").is_none()
        );
        // The object carries it: nothing to write, even much later.
        let carried = watched(2, first.clone());
        assert!(to_write(Kind::Route, Some(&compiled(2, "True")), &carried, None, "T9").is_none());
    }

    #[test]
    fn keeps_transition_times_of_unchanged_conditions_and_moves_changed_ones() {
        let existing = RouteStatus {
            observed_generation: Some(1),
            conditions: vec![
                cond(ACCEPTED, "True", Some("T0")),
                cond(PROGRAMMED, "False", Some("T0")),
            ],
            effective_plugins: Vec::new(),
        };
        let w = watched(2, existing);
        let out = to_write(Kind::Route, Some(&compiled(2, "True")), &w, None, "T5").unwrap();
        assert_eq!(out.conditions[0].last_transition_time.as_deref(), Some("T0"));
        assert_eq!(out.conditions[1].last_transition_time.as_deref(), Some("T5"));
    }

    #[test]
    fn stale_compiles_wait_and_invalid_objects_report_the_message() {
        let w = watched(3, RouteStatus::default());
        assert!(to_write(Kind::Route, Some(&compiled(2, "True")), &w, None, "T").is_none());
        let mut w = w;
        w.invalid = Some(Invalid { generation: 3, message: "spec.rules: missing field".into() });
        let out = to_write(Kind::Route, Some(&compiled(2, "True")), &w, None, "T").unwrap();
        let acc = accepted(&out).unwrap();
        assert_eq!((acc.status.as_str(), acc.reason.as_str()), ("False", "Invalid"));
        assert_eq!(acc.message, "spec.rules: missing field");
        assert!(out.conditions[1].message.contains("last good version keeps serving"));
        assert_eq!(out.observed_generation, Some(3));
    }
}
