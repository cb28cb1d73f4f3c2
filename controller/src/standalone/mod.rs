//! Standalone mode's source: a directory of YAML, watched and reloaded on change.
//!
//! [`DirSource`] keeps the index and updates it by delta; [`events`] turns notify events
//! into the [`Changes`] to apply and decides when to reload; [`run`] ties them to the
//! [`Publisher`].

mod defs;
pub mod events;
mod source;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

pub use events::{Changes, DEBOUNCE, MAX_DELAY, Signal};
pub use source::DirSource;

use crate::publish::Publisher;

/// Applies `changes` to the source, then compiles and publishes if anything changed (or
/// `force`: a served certificate expired), on a blocking thread ([`crate::source::round`]).
async fn reload(
    source: DirSource,
    publisher: Publisher,
    changes: Changes,
    force: bool,
) -> anyhow::Result<(DirSource, Publisher)> {
    match crate::source::round(source, publisher, changes, force).await {
        Some((source, publisher, _)) => Ok((source, publisher)),
        None => anyhow::bail!("the reload was cancelled"),
    }
}

/// Loads `source`, publishes, then watches its directory and reloads on every change (see
/// [`events::settle`] for when), until `shutdown` turns true.
pub async fn run(
    source: DirSource,
    publisher: Publisher,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let root = source.root().to_path_buf();
    if !root.is_dir() {
        anyhow::bail!("--config-dir {} is not a directory", root.display());
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Signal>();
    // notify names paths under the absolute form of a relative root; the source knows
    // them under `root` as given.
    let absolute = std::env::current_dir()?.join(&root);
    let shown_root = root.clone();
    let mut watcher = notify::recommended_watcher(move |res| {
        for signal in events::signals(res) {
            let signal = match signal {
                Signal::Path { path, complete } => match path.strip_prefix(&absolute) {
                    Ok(rel) if shown_root.is_relative() => {
                        Signal::Path { path: shown_root.join(rel), complete }
                    }
                    _ => Signal::Path { path, complete },
                },
                Signal::Rescan => Signal::Rescan,
            };
            let _ = tx.send(signal);
        }
    })?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    tracing::info!(dir = %root.display(), "watching the config directory");

    let (mut source, mut publisher) = reload(source, publisher, Changes::rescan(), false).await?;
    loop {
        // A served certificate that expires is reported by a compile once it has.
        let recheck = publisher.tls_recheck_in();
        let first = tokio::select! {
            _ = shutdown.changed() => break,
            () = async {
                match recheck {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {
                if publisher.tls_recheck_due() {
                    (source, publisher) =
                        reload(source, publisher, Changes::default(), true).await?;
                }
                continue;
            }
            signal = rx.recv() => match signal {
                Some(signal) => signal,
                None => break,
            },
        };
        let changes = events::settle(&mut rx, first).await;
        (source, publisher) = reload(source, publisher, changes, false).await?;
        if *shutdown.borrow() {
            break;
        }
    }
    drop(watcher);
    Ok(())
}

#[cfg(test)]
mod tests;
