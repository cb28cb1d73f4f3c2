//! Standalone mode's source: a directory of YAML, watched and reloaded on change.
//!
//! Each file keeps its last good contents: a file that stops parsing keeps serving what it
//! last defined (its errors are reported), and other files are unaffected. Objects without
//! `metadata.generation` get generation 1, bumped whenever their spec changes, and a
//! `creationTimestamp` of when they were first seen — so status looks like Kubernetes.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::index::{Index, Kind, ObjectRef};
use crate::load::{LoadError, Loaded, merge_owned, parse_file, yaml_files};
use crate::runtime::{Outcome, Publisher};

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// Longest a burst of events can delay a reload.
pub const MAX_DELAY: Duration = Duration::from_millis(60);

#[derive(Debug)]
struct FileState {
    hash: u64,
    /// The last good objects, with the spec hash of each (computed once per parse).
    last_good: Option<(Vec<Loaded>, Vec<u64>)>,
    errors: Vec<LoadError>,
}

#[derive(Debug, Clone)]
struct Generation {
    spec: u64,
    generation: i64,
    created: Time,
}

/// A directory of YAML files and what was last loaded from each.
#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    controller_namespace: String,
    files: BTreeMap<PathBuf, FileState>,
    generations: HashMap<(Kind, ObjectRef), Generation>,
}

fn text_hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

impl DirSource {
    /// A source for `root`; nothing is read until [`DirSource::load`].
    pub fn new(root: impl Into<PathBuf>, controller_namespace: impl Into<String>) -> Self {
        DirSource {
            root: root.into(),
            controller_namespace: controller_namespace.into(),
            files: BTreeMap::new(),
            generations: HashMap::new(),
        }
    }

    /// The watched directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Rescans the directory: re-parses files whose contents changed, drops deleted files,
    /// and returns the merged index with every current load error.
    pub fn load(&mut self) -> (Index, Vec<LoadError>) {
        let mut errors = Vec::new();
        match yaml_files(&self.root) {
            Ok(paths) => {
                self.files.retain(|p, _| paths.binary_search(p).is_ok());
                for path in paths {
                    self.refresh(path);
                }
            }
            // The directory is unreadable: keep serving everything last loaded.
            Err(e) => errors.push(LoadError {
                file: self.root.display().to_string(),
                document: 0,
                reason: format!("cannot read the config directory: {e}"),
            }),
        }
        let mut parsed: Vec<(String, Vec<Loaded>)> = Vec::new();
        let mut spec_hashes: Vec<&[u64]> = Vec::new();
        for (path, state) in &self.files {
            errors.extend(state.errors.iter().cloned());
            if let Some((objects, hashes)) = &state.last_good {
                parsed.push((path.display().to_string(), objects.clone()));
                spec_hashes.push(hashes);
            }
        }
        assign_generations(&mut self.generations, &mut parsed, &spec_hashes);
        let (index, merge_errors) = merge_owned(parsed, &self.controller_namespace);
        errors.extend(merge_errors);
        (index, errors)
    }

    fn refresh(&mut self, path: PathBuf) {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                let state = self.files.entry(path).or_insert(FileState {
                    hash: 0,
                    last_good: None,
                    errors: Vec::new(),
                });
                state.hash = 0;
                state.errors = vec![LoadError { file: shown, document: 0, reason: e.to_string() }];
                return;
            }
        };
        let hash = text_hash(&text);
        if self.files.get(&path).is_some_and(|s| s.hash == hash) {
            return;
        }
        let state = self.files.entry(path).or_insert(FileState {
            hash,
            last_good: None,
            errors: Vec::new(),
        });
        state.hash = hash;
        match parse_file(&shown, &text) {
            Ok(objects) => {
                let hashes = objects.iter().map(|l| l.object.spec_hash()).collect();
                state.last_good = Some((objects, hashes));
                state.errors.clear();
            }
            Err(errors) => {
                let keeps = if state.last_good.is_some() {
                    "its last good contents keep serving"
                } else {
                    "nothing from it is served"
                };
                tracing::warn!(file = %shown, errors = errors.len(), "config file rejected; {keeps}");
                for e in &errors {
                    tracing::warn!(file = %e.file, document = e.document, "{}", e.reason);
                }
                state.errors = errors;
            }
        }
    }
}

/// Sets `metadata.generation` (bumped on spec change) and `creationTimestamp` (first seen)
/// where the YAML leaves them out, and forgets objects that are gone. `spec_hashes[i][j]`
/// is the spec hash of `parsed[i].1[j]`.
fn assign_generations(
    generations: &mut HashMap<(Kind, ObjectRef), Generation>,
    parsed: &mut [(String, Vec<Loaded>)],
    spec_hashes: &[&[u64]],
) {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut next = HashMap::with_capacity(generations.len());
    for ((_, objects), hashes) in parsed.iter_mut().zip(spec_hashes) {
        for (loaded, &spec) in objects.iter_mut().zip(hashes.iter()) {
            let id = (loaded.object.kind(), loaded.object.key());
            let g = match generations.get(&id) {
                Some(g) if g.spec == spec => g.clone(),
                Some(g) => {
                    Generation { spec, generation: g.generation + 1, created: g.created.clone() }
                }
                None => Generation { spec, generation: 1, created: now.clone() },
            };
            let meta = loaded.object.meta_mut();
            meta.generation.get_or_insert(g.generation);
            meta.creation_timestamp.get_or_insert_with(|| g.created.clone());
            next.insert(id, g);
        }
    }
    *generations = next;
}

/// Loads, compiles and publishes once. Blocking work runs off the async workers.
async fn reload(source: DirSource, publisher: Publisher) -> (DirSource, Publisher) {
    let task = tokio::task::spawn_blocking(move || {
        let (mut source, mut publisher) = (source, publisher);
        let started = std::time::Instant::now();
        let (index, errors) = source.load();
        let loaded = started.elapsed();
        let error_count = errors.len();
        let routes = index.routes.len();
        let outcome = publisher.apply(&index, errors);
        // Load (read + parse) and compile (+ publish + status) times, for `make bench`.
        let load_ms = loaded.as_secs_f64() * 1e3;
        let compile_ms = started.elapsed().saturating_sub(loaded).as_secs_f64() * 1e3;
        match outcome {
            Outcome::Published(v) => {
                tracing::info!(
                    version = v,
                    errors = error_count,
                    routes,
                    load_ms,
                    compile_ms,
                    "configuration published"
                );
            }
            Outcome::Unchanged(v) => {
                tracing::debug!(version = v, errors = error_count, "configuration unchanged");
            }
        }
        (source, publisher)
    });
    match task.await {
        Ok(pair) => pair,
        // The closure does not panic on purpose; if it does, there is nothing to recover.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Loads `source`, publishes, then watches its directory and reloads within
/// [`MAX_DELAY`] + [`DEBOUNCE`] of every change, until `shutdown` turns true.
pub async fn run(
    source: DirSource,
    publisher: Publisher,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let root = source.root().to_path_buf();
    if !root.is_dir() {
        anyhow::bail!("--config-dir {} is not a directory", root.display());
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => tracing::warn!("file watcher: {e}"),
        })?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    tracing::info!(dir = %root.display(), "watching the config directory");

    let (mut source, mut publisher) = reload(source, publisher).await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            event = rx.recv() => {
                if event.is_none() {
                    break;
                }
            }
        }
        // Coalesce a burst of events: wait for DEBOUNCE of quiet, at most MAX_DELAY.
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(())) => continue,
                _ => break,
            }
        }
        (source, publisher) = reload(source, publisher).await;
        if *shutdown.borrow() {
            break;
        }
    }
    drop(watcher);
    Ok(())
}

#[cfg(test)]
#[path = "standalone_tests.rs"]
mod tests;
