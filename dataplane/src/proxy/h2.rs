//! HTTP/2 upstream connections without TLS (h2c, prior knowledge) for backends whose
//! Service port says `appProtocol: kubernetes.io/h2c` or `grpc`.
//!
//! One multiplexed connection per endpoint, shared by every concurrent request to it (the
//! `SendRequest` handle is cloned per request; the server's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! queues requests past its limit). A connection found closed (GOAWAY, reset, failed
//! keep-alive ping) is replaced by a new one on the next request. Concurrent first
//! requests to an endpoint share one connect: the first connects, the others wait for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::OnceCell;

use super::body::UpstreamBody;
use super::pool::{self, ConnectError};

/// HTTP/2 PING interval on upstream connections (a dead peer is noticed within this plus
/// [`KEEP_ALIVE_TIMEOUT`]).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long an HTTP/2 PING may wait for its answer before the connection is closed.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sending half of one HTTP/2 upstream connection.
pub(crate) type H2Sender = SendRequest<UpstreamBody>;

/// One endpoint's connection: made once (by the first request that needs it), then shared.
type Slot = Arc<OnceCell<H2Sender>>;

/// The HTTP/2 connections of every h2c endpoint, shared by every snapshot.
#[derive(Default)]
pub struct H2Pool {
    slots: Mutex<HashMap<SocketAddr, Slot, foldhash::fast::RandomState>>,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("H2Pool").field("endpoints", &slots.len()).finish()
    }
}

impl H2Pool {
    /// A sender on the shared connection to `addr`, connecting first when there is none
    /// or it closed. `reused` is true when the connection was made by an earlier request
    /// (a request it could not send may go out again on a new connection).
    pub(crate) async fn sender(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<(H2Sender, bool), ConnectError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = slots.entry(addr).or_default();
            if slot.get().is_some_and(H2Sender::is_closed) {
                *slot = Slot::default();
            }
            Arc::clone(slot)
        };
        let made = AtomicBool::new(false);
        let sender = slot
            .get_or_try_init(|| async {
                made.store(true, Ordering::Relaxed);
                connect(addr, connect_timeout).await
            })
            .await?;
        // A failed connect leaves the cell empty: the next request tries again.
        Ok((sender.clone(), !made.load(Ordering::Relaxed)))
    }

    /// Forgets the connection to `addr` if it closed (it could not send a request), so the
    /// next request makes a new one.
    pub(crate) fn discard(&self, addr: SocketAddr) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(&addr)
            && slot.get().is_some_and(H2Sender::is_closed)
        {
            slots.remove(&addr);
        }
    }

    /// Drops the connections to endpoints not in `keep` (called rarely; connections also
    /// close by themselves when their peer goes away).
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|addr, _| keep(addr));
    }

    /// Endpoints with a live HTTP/2 connection (for tests and debugging).
    pub fn connections(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.values().filter(|s| s.get().is_some_and(|s| !s.is_closed())).count()
    }
}

/// Opens an HTTP/2 (prior knowledge) connection to `addr`, with keep-alive pings, and
/// spawns its driver.
async fn connect(addr: SocketAddr, connect_timeout: Duration) -> Result<H2Sender, ConnectError> {
    let stream = pool::tcp_connect(addr, connect_timeout).await?;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .adaptive_window(true);
    let (sender, conn) = builder
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%addr, %error, "HTTP/2 upstream connection ended with an error");
        }
    });
    Ok(sender)
}
