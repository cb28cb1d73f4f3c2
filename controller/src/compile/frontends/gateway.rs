//! (stub) See [`super`].

use std::collections::BTreeSet;

use crate::compile::Statuses;
use crate::index::{Index, ObjectRef};

/// What [`expand`] remembers for [`finish`].
#[derive(Debug, Default)]
pub struct Expansion {}

/// Adds the derived Routes and Plugins to `derived` (a copy of `index`).
pub fn expand(_index: &Index, _derived: &mut Index) -> Expansion {
    Expansion::default()
}

/// Writes the statuses of the source objects.
pub fn finish(_index: &Index, _expansion: &Expansion, _statuses: &mut Statuses) {}

/// Secrets read.
pub fn referenced_secrets(_index: &Index) -> BTreeSet<ObjectRef> {
    BTreeSet::new()
}
