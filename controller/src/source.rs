//! The source side shared by both modes: a [`Source`] holds the index and applies its own
//! changes to it; [`round`] applies a batch of changes, compiles and publishes, all on a
//! blocking thread (never on the async workers that proxy), and logs the result the same
//! way in both modes.
//!
//! ```text
//! DirSource (files)       ─┐
//!                          ├─ Source::apply ─> Index ─> Publisher::apply ─> data plane, statuses
//! kube::State (watches)   ─┘        (blocking thread: round)
//! ```
//! What differs between the modes is only how changes arrive and are debounced (notify
//! events in `standalone`, watch events in `kube`).

use crate::index::Index;
use crate::load::LoadError;
use crate::publish::{Outcome, Publisher};

/// What [`Source::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Whether the index changed (else nothing is compiled unless forced).
    pub changed: bool,
    /// Every current load error (files that do not parse, objects that do not convert).
    pub errors: Vec<LoadError>,
}

/// A configuration source: the directory of YAML files, or the Kubernetes watches.
pub trait Source: Send + 'static {
    /// A batch of changes to apply.
    type Changes: Send + 'static;

    /// Applies `changes` to the index (runs on a blocking thread).
    fn apply(&mut self, changes: Self::Changes) -> Applied;

    /// The index of everything currently served.
    fn index(&self) -> &Index;
}

/// Applies `changes` to `source`, then — when the index changed, or `force` (a served
/// certificate expired) — compiles and publishes with `publisher`; on a blocking thread.
/// Logs "configuration published" with `routes`, `errors`, `load_ms` (time in the source)
/// and `compile_ms` (compile + publish + status). Hands `source` and `publisher` back with
/// the outcome (`None`: nothing changed); `None` when the runtime is shutting down.
pub async fn round<S: Source>(
    source: S,
    publisher: Publisher,
    changes: S::Changes,
    force: bool,
) -> Option<(S, Publisher, Option<Outcome>)> {
    let task = tokio::task::spawn_blocking(move || {
        let (mut source, mut publisher) = (source, publisher);
        let started = std::time::Instant::now();
        let applied = source.apply(changes);
        let loaded = started.elapsed();
        if !applied.changed && !force {
            tracing::debug!("no configuration change");
            return (source, publisher, None);
        }
        let error_count = applied.errors.len();
        let routes = source.index().routes.len();
        let outcome = publisher.apply(source.index(), applied.errors);
        let load_ms = loaded.as_secs_f64() * 1e3;
        let compile_ms = started.elapsed().saturating_sub(loaded).as_secs_f64() * 1e3;
        // Logged before the release below: the new configuration already serves, and the
        // line's time stamp is when it started to (tests and the bench read it).
        match outcome {
            Outcome::Published(version) => tracing::info!(
                version,
                errors = error_count,
                routes,
                load_ms,
                compile_ms,
                "configuration published"
            ),
            Outcome::Unchanged(version) => {
                tracing::debug!(version, errors = error_count, "configuration unchanged");
            }
        }
        let release = std::time::Instant::now();
        crate::release::freed();
        let release_ms = release.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(release_ms, "freed memory released");
        (source, publisher, Some(outcome))
    });
    match task.await {
        Ok(back) => Some(back),
        Err(e) => match e.try_into_panic() {
            // Nothing to recover: the supervisor reports the source task's panic.
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => {
                tracing::warn!("blocking task cancelled: {e}");
                None
            }
        },
    }
}
