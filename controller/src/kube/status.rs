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
        Watched { existing: Existing { uid: None, generation, status }, invalid: None }
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
