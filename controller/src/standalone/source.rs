//! [`DirSource`]: what each file of the directory last defined, and the [`Index`] kept up
//! to date by delta. A reload re-reads only the files it is told about and re-parses only
//! the documents whose text changed, so every unchanged object keeps its very `Arc`.
//!
//! Each file keeps its last good contents: a file that stops parsing keeps serving what it
//! last defined (its errors are reported), and other files are unaffected. An object
//! defined twice is served from the first file in path order (first document); the others
//! are reported as duplicates, and the next one takes over when the first goes away.
//! Objects without `metadata.generation` get generation 1, bumped whenever their spec
//! changes, and a `creationTimestamp` of when they were first seen.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::defs::{Defs, Id, replace};
use super::events::Changes;
use crate::index::Index;
use crate::load::{
    LoadError, Loaded, Object, hidden, is_yaml, parse_document, parse_file_with, yaml_files,
};

/// One good document of a file: the hash of its text, and what it defines.
#[derive(Debug, Clone)]
pub(super) struct Doc {
    pub(super) hash: u64,
    pub(super) loaded: Loaded,
}

#[derive(Debug, Default)]
struct FileState {
    /// Hash of the text last read (0 after a read error, so the next read re-parses).
    hash: u64,
    /// The last good objects, in document order.
    last_good: Option<Vec<Doc>>,
    errors: Vec<LoadError>,
}

/// What reading one file found.
#[derive(Debug)]
enum Update {
    /// Same text as last time.
    Same,
    /// The file is gone (or no longer a YAML file of the directory).
    Gone,
    /// It could not be read.
    Unreadable(String),
    /// New text: its objects, or its errors.
    Parsed { hash: u64, result: Result<Vec<Doc>, Vec<LoadError>> },
}

/// What an event's path calls for.
enum Action {
    Rescan,
    Refresh(PathBuf),
    Ignore,
}

/// A directory of YAML files, what was last loaded from each, and the index they make.
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    files: BTreeMap<Arc<Path>, FileState>,
    defs: HashMap<Id, Defs>,
    /// Objects with more than one definition.
    dups: BTreeSet<Id>,
    index: Index,
    /// The directory could not be listed at the last rescan.
    dir_error: Option<LoadError>,
    /// Some file is a symlink: an edit of its target names another path (a ConfigMap
    /// mount names `..data`), so every change rescans.
    symlinks: bool,
    scanned: bool,
    changed: bool,
}

pub(super) fn text_hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl DirSource {
    /// A source for `root`; nothing is read until [`DirSource::load`] or
    /// [`DirSource::apply`].
    pub fn new(root: impl Into<PathBuf>, controller_namespace: impl Into<String>) -> Self {
        DirSource {
            root: root.into(),
            files: BTreeMap::new(),
            defs: HashMap::new(),
            dups: BTreeSet::new(),
            index: Index { controller_namespace: controller_namespace.into(), ..Index::default() },
            dir_error: None,
            symlinks: false,
            scanned: false,
            changed: true,
        }
    }

    /// Serves this Secret (`--default-certificate`) to TLS clients with an unknown or no
    /// SNI.
    pub fn with_default_certificate(mut self, secret: Option<crate::index::ObjectRef>) -> Self {
        self.index.default_certificate = secret;
        self
    }

    /// Reports this Service's addresses (`--publish-service`) in Gateway and Ingress
    /// statuses.
    pub fn with_publish_service(mut self, service: Option<crate::index::ObjectRef>) -> Self {
        self.index.publish_service = service;
        self
    }

    /// The watched directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The index of everything currently served.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Rescans the whole directory (re-parsing what changed) and returns the index with
    /// every current load error.
    pub fn load(&mut self) -> (&Index, Vec<LoadError>) {
        let errors = self.apply(&Changes::rescan());
        (&self.index, errors)
    }

    /// Applies what the watcher reported: refreshes the named files, or rescans the
    /// whole directory for a rescan, the first load, a directory or a symlink (a
    /// ConfigMap's `..data` swap), or when some file is a symlink (its target may change
    /// under another name). Returns every current load error.
    pub fn apply(&mut self, changes: &Changes) -> Vec<LoadError> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        // The clock certificates are checked against in the compile that follows.
        self.index.now = Some(std::time::SystemTime::now());
        if changes.rescan || !self.scanned || self.symlinks {
            tracing::debug!(symlinks = self.symlinks, "rescanning the config directory");
            self.rescan(&now);
        } else {
            let mut refresh = Vec::new();
            for path in &changes.paths {
                match self.action(path) {
                    Action::Rescan => {
                        tracing::debug!(path = %path.display(), "rescanning the config directory");
                        self.rescan(&now);
                        return self.errors();
                    }
                    Action::Refresh(path) => refresh.push(path),
                    Action::Ignore => {}
                }
            }
            tracing::debug!(files = refresh.len(), "refreshing changed files");
            self.refresh(refresh, Vec::new(), &now);
        }
        self.errors()
    }

    /// True when something changed since the last call (starts true).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// What an event naming `path` calls for. Hidden entries are not loaded, so a hidden
    /// file (an editor's swap file, a temporary file renamed into place) changes nothing;
    /// a directory or a symlink (a ConfigMap's `..data` swap) calls for a rescan.
    fn action(&self, path: &Path) -> Action {
        let Ok(rel) = path.strip_prefix(&self.root) else { return Action::Rescan };
        let Some(name) = rel.file_name() else { return Action::Rescan };
        if rel.parent().is_some_and(|p| p.components().any(|c| hidden(Path::new(&c)))) {
            // Reached only through symlinks, and with symlinks every change rescans.
            return Action::Ignore;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() || m.file_type().is_symlink() => Action::Rescan,
            Ok(_) if hidden(Path::new(name)) => Action::Ignore,
            Ok(_) if is_yaml(path) => Action::Refresh(path.to_path_buf()),
            Ok(_) => Action::Ignore,
            Err(_) if self.files.contains_key(path) => Action::Refresh(path.to_path_buf()),
            // A directory moved or deleted: forget what was under it.
            Err(_) if self.files.keys().any(|f| f.starts_with(path)) => Action::Rescan,
            Err(_) => Action::Ignore,
        }
    }

    fn rescan(&mut self, now: &Time) {
        self.scanned = true;
        match yaml_files(&self.root) {
            Ok(paths) => {
                if self.dir_error.take().is_some() {
                    self.changed = true;
                }
                self.symlinks = paths.iter().any(|p| {
                    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
                });
                let gone: Vec<PathBuf> = self
                    .files
                    .keys()
                    .filter(|f| paths.binary_search_by(|p| p.as_path().cmp(f)).is_err())
                    .map(|f| f.to_path_buf())
                    .collect();
                self.refresh(paths, gone, now);
                // Rebuilt from its sorted entries, the Routes map has full nodes (a map
                // filled one insert at a time in file order keeps them about half full):
                // ~40 bytes per Route less, for O(Routes) once per rescan (the first load,
                // a directory event), which re-reads every file anyway.
                let routes = std::mem::take(&mut self.index.routes);
                self.index.routes = routes.into_iter().collect();
            }
            // The directory is unreadable: keep serving everything last loaded.
            Err(e) => {
                self.changed = true;
                self.dir_error = Some(LoadError {
                    file: self.root.display().to_string(),
                    document: 0,
                    reason: format!("cannot read the config directory: {e}"),
                });
            }
        }
    }

    /// Reads `paths` (in parallel when there are several), then drops `gone` and applies
    /// what changed. Everything is read before anything is applied, so an object that
    /// moves between files keeps its generation.
    fn refresh(&mut self, paths: Vec<PathBuf>, gone: Vec<PathBuf>, now: &Time) {
        let updates = self.read_all(&paths, now);
        let gone = gone.into_iter().map(|p| (p, Update::Gone));
        for (path, update) in gone.chain(paths.into_iter().zip(updates)) {
            let file = match self.files.get_key_value(path.as_path()) {
                Some((file, _)) => Arc::clone(file),
                None => Arc::from(path),
            };
            self.update(file, update);
        }
    }

    fn read_all(&self, paths: &[PathBuf], now: &Time) -> Vec<Update> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = threads.min(paths.len() / 2).max(1);
        if threads == 1 {
            return paths.iter().map(|p| self.read(p, now)).collect();
        }
        let next = AtomicUsize::new(0);
        let mut out: Vec<Option<Update>> = paths.iter().map(|_| None).collect();
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(path) = paths.get(i) else { break };
                            done.push((i, self.read(path, now)));
                        }
                        done
                    })
                })
                .collect();
            for worker in workers {
                match worker.join() {
                    Ok(done) => {
                        for (i, update) in done {
                            if let Some(slot) = out.get_mut(i) {
                                *slot = Some(update);
                            }
                        }
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
        out.into_iter().map(|u| u.unwrap_or(Update::Same)).collect()
    }

    /// Reads one file; re-parses only the documents whose text is not among its last
    /// good documents'.
    fn read(&self, path: &Path, now: &Time) -> Update {
        let old = self.files.get(path);
        let text = match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => return Update::Gone,
            Ok(_) => std::fs::read_to_string(path),
            Err(e) => Err(e),
        };
        let text = match text {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Update::Gone,
            Err(e) => return Update::Unreadable(e.to_string()),
        };
        let hash = text_hash(&text);
        if old.is_some_and(|s| s.hash == hash) {
            return Update::Same;
        }
        let cache: HashMap<u64, &Object> = old
            .and_then(|s| s.last_good.as_ref())
            .map(|docs| docs.iter().map(|d| (d.hash, &d.loaded.object)).collect())
            .unwrap_or_default();
        let mut hashes = Vec::new();
        let shown = path.display().to_string();
        let result = parse_file_with(&shown, &text, |doc| {
            // Blank lines before the text do not change what it means.
            let hash = text_hash(doc.text.trim_start_matches(['\n', '\r']));
            hashes.push(hash);
            if let Some(object) = cache.get(&hash) {
                return Ok(Some((*object).clone()));
            }
            let mut object = parse_document(doc)?;
            if let Some(object) = &mut object {
                self.stamp(object, now);
            }
            Ok(object)
        });
        let result = result.map(|objects| {
            let doc =
                |l: Loaded| Doc { hash: hashes.get(l.document).copied().unwrap_or(0), loaded: l };
            objects.into_iter().map(doc).collect()
        });
        Update::Parsed { hash, result }
    }

    /// Sets `metadata.generation` and `creationTimestamp` of a newly parsed object where
    /// its YAML leaves them out: those of the object served under its name, with the
    /// generation bumped if the spec differs; 1 and `now` for a new name.
    fn stamp(&self, object: &mut Object, now: &Time) {
        let served = self.defs.get(&(object.kind(), object.key())).map(|d| &d.first.object);
        let (generation, created) = match served {
            Some(served) => {
                let generation = served.generation().unwrap_or(1);
                let bump = if served.same_spec(object) { 0 } else { 1 };
                let created = served.creation_timestamp().cloned().unwrap_or_else(|| now.clone());
                (generation + bump, created)
            }
            None => (1, now.clone()),
        };
        object.stamp(generation, Some(created));
    }

    fn update(&mut self, file: Arc<Path>, update: Update) {
        let DirSource { files, defs, dups, index, .. } = self;
        let shown = || file.display().to_string();
        match update {
            Update::Same => return,
            Update::Gone => {
                let Some(old) = files.remove(&file) else { return };
                let old = old.last_good.unwrap_or_default();
                replace(defs, dups, index, &file, &old, &[]);
            }
            Update::Unreadable(reason) => {
                tracing::warn!(file = %shown(), "cannot read config file: {reason}");
                let state = files.entry(Arc::clone(&file)).or_default();
                state.hash = 0;
                state.errors = vec![LoadError { file: shown(), document: 0, reason }];
            }
            Update::Parsed { hash, result: Ok(docs) } => {
                let state = files.entry(Arc::clone(&file)).or_default();
                state.hash = hash;
                state.errors.clear();
                let old = state.last_good.replace(docs).unwrap_or_default();
                let new = state.last_good.as_deref().unwrap_or_default();
                replace(defs, dups, index, &file, &old, new);
            }
            Update::Parsed { hash, result: Err(errors) } => {
                let state = files.entry(Arc::clone(&file)).or_default();
                let keeps = if state.last_good.is_some() {
                    "its last good contents keep serving"
                } else {
                    "nothing from it is served"
                };
                tracing::warn!(file = %shown(), errors = errors.len(), "config file rejected; {keeps}");
                for e in &errors {
                    tracing::warn!(file = %e.file, document = e.document, "{}", e.reason);
                }
                state.hash = hash;
                state.errors = errors;
            }
        }
        self.changed = true;
    }

    /// Every current load error: the directory's, each file's (in path order), then
    /// duplicates (by file and document).
    pub fn errors(&self) -> Vec<LoadError> {
        let mut errors: Vec<LoadError> = self.dir_error.iter().cloned().collect();
        for state in self.files.values() {
            errors.extend(state.errors.iter().cloned());
        }
        let mut dups = Vec::new();
        for id in &self.dups {
            let Some(defs) = self.defs.get(id) else { continue };
            for def in defs.rest() {
                dups.push(LoadError {
                    file: def.file.display().to_string(),
                    document: def.document,
                    reason: format!(
                        "duplicate {} {}: already defined in {} document {}",
                        id.0.as_str(),
                        id.1,
                        defs.first.file.display(),
                        defs.first.document
                    ),
                });
            }
        }
        dups.sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
        errors.extend(dups);
        errors
    }
}

impl crate::source::Source for DirSource {
    type Changes = Changes;

    fn apply(&mut self, changes: Changes) -> crate::source::Applied {
        let errors = DirSource::apply(self, &changes);
        crate::source::Applied { changed: self.take_changed(), errors }
    }

    fn index(&self) -> &Index {
        DirSource::index(self)
    }
}
