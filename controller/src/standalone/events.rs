//! From notify events to [`Changes`], and when to reload: at once when every change is
//! complete (a closed write, a rename into place, a removal), after [`DEBOUNCE`] of quiet
//! while a file is still being written, and never later than [`MAX_DELAY`] after the first
//! event of a burst.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use notify::EventKind;
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// Quiet time after the last event of a file still being written before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(20);
/// Longest a burst of events can delay a reload.
pub const MAX_DELAY: Duration = Duration::from_millis(60);

/// Most signals gathered into one reload (a bound on the gathering loop).
const MAX_SIGNALS: usize = 100_000;

/// What one watcher event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Something may have changed anywhere: list the directory again.
    Rescan,
    /// `path` changed; `complete` when its new state is final (closed after writing,
    /// renamed into place, removed), false while it may still be being written.
    Path {
        /// The path the event names.
        path: PathBuf,
        /// The change is complete.
        complete: bool,
    },
}

/// What to reload: every path named since the last reload, or everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// List the whole directory again (and re-read every file whose text changed).
    pub rescan: bool,
    /// Paths named by events (files, directories, hidden ConfigMap entries...).
    pub paths: BTreeSet<PathBuf>,
}

impl Changes {
    /// A full rescan, as at startup.
    pub fn rescan() -> Self {
        Changes { rescan: true, paths: BTreeSet::new() }
    }
}

/// The signals of one notify callback.
pub fn signals(res: notify::Result<notify::Event>) -> Vec<Signal> {
    let event = match res {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!("file watcher: {e}; rescanning the config directory");
            return vec![Signal::Rescan];
        }
    };
    if event.need_rescan() {
        return vec![Signal::Rescan];
    }
    let complete = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        // Opens and reads, including our own.
        EventKind::Access(_) => return Vec::new(),
        EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_)) | EventKind::Remove(_) => {
            true
        }
        // A file created by rename (some platforms report it so); inotify reports a
        // rename into place as Modify(Name(To)) and a plain create as Create(File).
        EventKind::Create(CreateKind::Other) => true,
        // A file or directory being created or written: wait for its close or for quiet.
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any | EventKind::Other => false,
    };
    event.paths.into_iter().map(|path| Signal::Path { path, complete }).collect()
}

#[derive(Debug, Default)]
struct Pending {
    changes: Changes,
    /// Paths whose last signal was incomplete.
    writing: BTreeSet<PathBuf>,
}

impl Pending {
    fn add(&mut self, signal: Signal) {
        match signal {
            Signal::Rescan => self.changes.rescan = true,
            Signal::Path { path, complete } => {
                if complete {
                    self.writing.remove(&path);
                } else {
                    self.writing.insert(path.clone());
                }
                self.changes.paths.insert(path);
            }
        }
    }
}

/// Gathers the burst that `first` starts: returns as soon as no path is being written
/// (every signal so far complete), else after [`DEBOUNCE`] without a signal, and at the
/// latest [`MAX_DELAY`] after it started.
pub async fn settle(rx: &mut UnboundedReceiver<Signal>, first: Signal) -> Changes {
    let deadline = Instant::now() + MAX_DELAY;
    let mut pending = Pending::default();
    pending.add(first);
    let mut gathered = 1usize;
    while gathered < MAX_SIGNALS {
        while let Ok(signal) = rx.try_recv() {
            pending.add(signal);
            gathered += 1;
            if gathered >= MAX_SIGNALS {
                break;
            }
        }
        let now = Instant::now();
        if pending.writing.is_empty() || now >= deadline {
            break;
        }
        match tokio::time::timeout(DEBOUNCE.min(deadline - now), rx.recv()).await {
            Ok(Some(signal)) => {
                pending.add(signal);
                gathered += 1;
            }
            // Quiet for DEBOUNCE, past the deadline, or the watcher is gone.
            _ => break,
        }
    }
    pending.changes
}
