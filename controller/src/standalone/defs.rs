//! Where each object is defined: every definition of an object in file, document order,
//! the first served and the rest reported as duplicates, and how a file's new objects
//! replace its old ones in the definitions and the [`Index`].

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::source::Doc;
use crate::index::{Index, Kind, ObjectRef};
use crate::load::{Object, remove_from};

/// An object's kind and name.
pub(super) type Id = (Kind, ObjectRef);

/// One definition of an object.
#[derive(Debug, Clone)]
pub(super) struct Def {
    pub(super) file: Arc<Path>,
    pub(super) document: usize,
    pub(super) object: Object,
}

/// Every definition of one object: `first` (in file, document order) is served.
#[derive(Debug)]
pub(super) struct Defs {
    pub(super) first: Def,
    /// Duplicates, in file order; `None` when there are none (almost always: one pointer
    /// instead of an empty `Vec`'s three words, in an entry per object).
    #[expect(
        clippy::box_collection,
        reason = "one word per object in the definitions map; the extra allocation is only for duplicates"
    )]
    rest: Option<Box<Vec<Def>>>,
}

impl Defs {
    /// The duplicates, in file order.
    pub(super) fn rest(&self) -> &[Def] {
        self.rest.as_deref().map_or(&[], Vec::as_slice)
    }

    fn insert(&mut self, def: Def) {
        let at = |d: &Def| (Arc::clone(&d.file), d.document);
        let rest = self.rest.get_or_insert_with(Box::default);
        if at(&def) < at(&self.first) {
            let old = std::mem::replace(&mut self.first, def);
            rest.insert(0, old);
        } else {
            let pos = rest.partition_point(|d| at(d) < at(&def));
            rest.insert(pos, def);
        }
    }

    /// Drops `file`'s definition; true when none is left.
    fn remove(&mut self, file: &Path) -> bool {
        let Some(rest) = &mut self.rest else {
            return *self.first.file == *file;
        };
        if *self.first.file == *file {
            self.first = rest.remove(0);
        } else {
            rest.retain(|d| *d.file != *file);
        }
        if rest.is_empty() {
            self.rest = None;
        }
        false
    }
}

/// Replaces `file`'s objects `old` by `new` in the definitions and the index. Documents
/// that kept their object and position (a common prefix and suffix) are skipped, so an
/// edit costs O(changed documents).
pub(super) fn replace(
    defs: &mut HashMap<Id, Defs>,
    dups: &mut BTreeSet<Id>,
    index: &mut Index,
    file: &Arc<Path>,
    old: &[Doc],
    new: &[Doc],
) {
    let same = |a: &Doc, b: &Doc| {
        a.loaded.document == b.loaded.document && a.loaded.object.ptr_eq(&b.loaded.object)
    };
    let prefix = old.iter().zip(new).take_while(|(a, b)| same(a, b)).count();
    let (old, new) = (old.get(prefix..).unwrap_or_default(), new.get(prefix..).unwrap_or_default());
    let suffix = old.iter().rev().zip(new.iter().rev()).take_while(|(a, b)| same(a, b)).count();
    let old = old.get(..old.len() - suffix).unwrap_or_default();
    let new = new.get(..new.len() - suffix).unwrap_or_default();

    let mut touched = Vec::with_capacity(old.len() + new.len());
    for doc in old {
        let id = (doc.loaded.object.kind(), doc.loaded.object.key());
        if let Some(d) = defs.get_mut(&id)
            && d.remove(file)
        {
            defs.remove(&id);
        }
        touched.push(id);
    }
    for doc in new {
        let id = (doc.loaded.object.kind(), doc.loaded.object.key());
        let def = Def {
            file: Arc::clone(file),
            document: doc.loaded.document,
            object: doc.loaded.object.clone(),
        };
        match defs.entry(id.clone()) {
            MapEntry::Occupied(mut o) => o.get_mut().insert(def),
            MapEntry::Vacant(v) => drop(v.insert(Defs { first: def, rest: None })),
        }
        touched.push(id);
    }
    touched.sort();
    touched.dedup();
    for id in touched {
        match defs.get(&id) {
            None => {
                remove_from(index, id.0, &id.1);
                dups.remove(&id);
            }
            Some(d) => {
                if !d.first.object.is_served_by(index, &id.1) {
                    d.first.object.clone().insert_into(index);
                }
                if d.rest().is_empty() {
                    dups.remove(&id);
                } else {
                    dups.insert(id);
                }
            }
        }
    }
}
