//! How the table keeps each Route: a [`RouteModel`] with boxed slices instead of `Vec`s,
//! behind one box, so a slot of the Route map is a thin pointer (memory per Route).

use std::sync::Arc;

use super::sharded::Keyed;
use crate::snapshot::{HostMatch, ObjectKey, RouteModel, Rule};

/// One Route as the table keeps it (the fields of [`RouteModel`]).
#[derive(Debug, Clone)]
pub(crate) struct StoredRoute {
    pub(crate) key: ObjectKey,
    pub(crate) generation: i64,
    pub(crate) created: i64,
    pub(crate) hosts: Box<[HostMatch]>,
    pub(crate) rules: Box<[Arc<Rule>]>,
}

impl StoredRoute {
    /// Boxes a model (its lists are reused when they have no spare capacity).
    pub(crate) fn boxed(r: RouteModel) -> Box<StoredRoute> {
        Box::new(StoredRoute {
            key: r.key,
            generation: r.generation,
            created: r.created,
            hosts: r.hosts.into_boxed_slice(),
            rules: r.rules.into_boxed_slice(),
        })
    }

    /// The model back, as it was given.
    pub(crate) fn model(&self) -> RouteModel {
        RouteModel {
            key: self.key.clone(),
            generation: self.generation,
            created: self.created,
            hosts: self.hosts.to_vec(),
            rules: self.rules.to_vec(),
        }
    }
}

impl Keyed for Box<StoredRoute> {
    type Key = ObjectKey;
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}
