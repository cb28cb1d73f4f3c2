//! The data plane's front door: the live snapshot holder and the hyper server loop.

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::snapshot::Snapshot;

/// Holds the live snapshot and the runtime state that outlives snapshots (upstream pools…).
#[derive(Debug)]
pub struct DataPlane {
    current: ArcSwap<Snapshot>,
}

impl DataPlane {
    /// A data plane serving an empty snapshot (every request gets 404).
    pub fn new() -> Arc<Self> {
        Arc::new(DataPlane { current: ArcSwap::from_pointee(Snapshot::empty()) })
    }

    /// Atomically makes `snapshot` the live one; in-flight requests finish on the old one.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// The live snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

/// Serves HTTP/1.1 and h2c (prior knowledge) on `listener` until `shutdown` completes,
/// then drains in-flight requests. TODO(proxy): real implementation.
pub async fn serve(
    listener: TcpListener,
    dataplane: Arc<DataPlane>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let _ = (listener, dataplane);
    shutdown.await;
    Ok(())
}
