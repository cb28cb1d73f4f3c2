//! `compile()`: the pure function from the [`Index`] to a data-plane snapshot and a status
//! for every object. The same code runs in `weir run` (both modes) and `weir validate`.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_crds::{Condition, EffectivePlugin};
use weir_dataplane::{BackendTable, RouteTable};

use crate::index::{Index, Kind, ObjectRef};

/// What the compiler remembers between runs: the last good version of every Route, so an
/// invalid update keeps the previous version serving. Owned by the caller and passed back in.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Last accepted spec and generation of each Route.
    pub last_good_routes: BTreeMap<ObjectRef, (i64, weir_crds::RouteSpec)>,
}

/// The status computed for one object (without `lastTransitionTime`, which the status
/// writer manages).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectStatus {
    /// `metadata.generation` the conditions describe.
    pub generation: i64,
    /// `Accepted`, `ResolvedRefs`, `Programmed` as applicable.
    pub conditions: Vec<Condition>,
    /// Routes only: the plugins that apply.
    pub effective_plugins: Vec<EffectivePlugin>,
}

/// Output of [`compile`].
#[derive(Debug)]
pub struct Compiled {
    /// The route table.
    pub routes: Arc<RouteTable>,
    /// The backend table (endpoints).
    pub backends: Arc<BackendTable>,
    /// Status of every weir object (Route, Plugin, Consumer).
    pub statuses: BTreeMap<(Kind, ObjectRef), ObjectStatus>,
    /// The memory to pass to the next run.
    pub memory: Memory,
}

/// Compiles the index. Pure: same input, same output. TODO(compiler): real implementation.
pub fn compile(index: &Index, memory: &Memory) -> Compiled {
    let _ = index;
    Compiled {
        routes: Arc::new(RouteTable::new(Vec::new())),
        backends: Arc::new(BackendTable::default()),
        statuses: BTreeMap::new(),
        memory: memory.clone(),
    }
}
