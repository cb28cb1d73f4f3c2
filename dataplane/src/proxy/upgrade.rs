//! Upgraded connections (WebSocket): after a 101 from the upstream, the client and upstream
//! connections leave the request path and their bytes are copied both ways until either
//! side closes, the route's `timeouts.idle` passes without a byte in either direction, or
//! the data plane closes them at shutdown.
//!
//! A tunnel holds nothing of the snapshot it was made under (only the idle timeout, a
//! `Copy` value), so reloads never touch it. Copying uses two fixed 8 KiB buffers
//! (`tokio::io::copy_bidirectional`): a side that stops reading stops the other side's
//! reads, never grows memory. Every tunnel is counted in [`Upgrades`] (and the
//! `weir_upgraded_connections` gauge), which graceful shutdown uses to close them last:
//! [`Upgrades::close`], then [`Upgrades::closed`].
//!
//! An observed upgrade reports its request when the session ends, not when the 101 is
//! sent: the record (status 101) carries the whole session's duration and the bytes
//! copied from the client (`bytes_in`) and to it (`bytes_out`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use http::header::{CONNECTION, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::observe::{RequestObserver, RequestRecord};

/// The open upgraded connections of one data plane, and the switch that closes them.
#[derive(Debug)]
pub struct Upgrades {
    /// Open tunnels (waiting for both upgrades, or copying).
    open: watch::Sender<usize>,
    /// Set once by [`Upgrades::close`]: every tunnel, open or new, closes.
    closing: watch::Sender<bool>,
}

impl Default for Upgrades {
    fn default() -> Self {
        Upgrades { open: watch::Sender::new(0), closing: watch::Sender::new(false) }
    }
}

impl Upgrades {
    /// Upgraded connections open now.
    pub fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Closes every upgraded connection (both TCP connections of each tunnel are closed;
    /// no WebSocket close frame is made up) and every later one at once. For graceful
    /// shutdown, after the HTTP connections have drained.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once no upgraded connection is open (at once when none is).
    pub async fn closed(&self) {
        let mut open = self.open.subscribe();
        // The sender lives as long as `self`: the wait ends only on zero.
        let _ = open.wait_for(|n| *n == 0).await;
    }

    fn enter(self: &Arc<Self>) -> Entered {
        self.open.send_modify(|n| *n += 1);
        crate::metrics::metrics().upgraded_connections.inc();
        Entered(Arc::clone(self))
    }
}

/// One open tunnel, counted until dropped.
struct Entered(Arc<Upgrades>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
        crate::metrics::metrics().upgraded_connections.dec();
    }
}

/// Whether a request's `Upgrade` header asks for WebSocket (the one upgrade weir proxies;
/// others, like `h2c`, are dropped as hop-by-hop headers and the request goes on as plain
/// HTTP/1.1). The `Connection: upgrade` token is checked by hyper before it offers the
/// upgrade at all.
pub(crate) fn websocket_requested(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let value = headers.get(UPGRADE)?;
    let websocket = value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")));
    let connection_upgrade = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
    });
    (websocket && connection_upgrade).then(|| value.clone())
}

/// Adds `Connection: upgrade` and `Upgrade: value` back after hop-by-hop removal.
pub(crate) fn restore_upgrade_headers(headers: &mut http::HeaderMap, value: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, value);
}

/// An accepted upgrade, not yet running: both sides' pending upgrades and what the tunnel
/// keeps of the rule (the idle timeout). [`Tunnel::spawn`] starts it once the request's
/// end-of-session record (if observed) is known.
pub(crate) struct Tunnel {
    upgrades: Arc<Upgrades>,
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Option<Duration>,
    peer: std::net::SocketAddr,
}

/// What an observed upgraded session reports when it closes: its record (status 101),
/// completed with the whole session's duration and the bytes copied each way.
pub(crate) struct SessionEnd {
    /// The request's record, as built when the 101 was sent.
    pub(crate) record: RequestRecord,
    /// When the request arrived.
    pub(crate) started: std::time::Instant,
    /// Receives the record.
    pub(crate) observer: Arc<dyn RequestObserver>,
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Both sides closed (or one did and the other followed within [`LINGER`]).
    Closed,
    /// An upgrade did not complete, a side failed, the idle timeout passed, or shutdown.
    Abandoned,
}

impl Tunnel {
    /// The tunnel between the client's and the upstream's upgraded connections (counted
    /// in `upgrades` once spawned, until its record has been handed over).
    pub(crate) fn new(
        upgrades: &Arc<Upgrades>,
        client: OnUpgrade,
        upstream: OnUpgrade,
        idle: Option<Duration>,
        peer: std::net::SocketAddr,
    ) -> Self {
        Tunnel { upgrades: Arc::clone(upgrades), client, upstream, idle, peer }
    }

    /// Starts the tunnel: it waits for both upgrades (the client's completes once hyper has
    /// written the 101), then copies bytes both ways under `idle`. With `end`, the session's
    /// record goes to the observer when the tunnel closes, however it closes.
    pub(crate) fn spawn(self, end: Option<SessionEnd>) {
        let Tunnel { upgrades, client, upstream, idle, peer } = self;
        let entered = upgrades.enter();
        let mut closing = upgrades.closing.subscribe();
        // The client side's bytes, counted as they move: the record needs them even when
        // the copy is abandoned (idle, shutdown).
        let traffic = end.as_ref().map(|_| Arc::new(Traffic::default()));
        let counted = traffic.clone();
        tokio::spawn(async move {
            let _entered = entered;
            let run = async {
                let (client, upstream) = match tokio::try_join!(client, upstream) {
                    Ok(both) => both,
                    Err(error) => {
                        tracing::debug!(%peer, %error, "upgrade did not complete");
                        return Ended::Abandoned;
                    }
                };
                let activity = Arc::new(Activity::new());
                let client = Active::new(TokioIo::new(client), &activity, counted);
                let upstream = Active::new(TokioIo::new(upstream), &activity, None);
                let copy = copy_both_ways(client, upstream);
                let result = match idle {
                    None => copy.await,
                    Some(idle) => tokio::select! {
                        result = copy => result,
                        () = activity.idle_for(idle) => {
                            tracing::debug!(%peer, ?idle, "upgraded connection idle, closing");
                            return Ended::Abandoned;
                        }
                    },
                };
                match result {
                    Ok((to_upstream, to_client)) => {
                        tracing::debug!(%peer, to_upstream, to_client, "upgraded connection closed");
                        Ended::Closed
                    }
                    Err(error) => {
                        tracing::debug!(%peer, %error, "upgraded connection failed");
                        Ended::Abandoned
                    }
                }
            };
            let ended = tokio::select! {
                ended = run => ended,
                _ = closing.wait_for(|c| *c) => {
                    tracing::debug!(%peer, "closing upgraded connection (shutdown)");
                    Ended::Abandoned
                }
            };
            if let (Some(end), Some(traffic)) = (end, traffic) {
                let SessionEnd { mut record, started, observer } = end;
                record.duration = started.elapsed();
                record.bytes_in = traffic.read.load(Ordering::Relaxed);
                record.bytes_out = traffic.written.load(Ordering::Relaxed);
                record.completed = ended == Ended::Closed;
                observer.on_request_end(&record);
            }
        });
    }
}

/// Bytes read from and written to one side of a tunnel.
#[derive(Debug, Default)]
struct Traffic {
    read: AtomicU64,
    written: AtomicU64,
}

/// How long the other direction may go on once one side has closed its end (time for a
/// last WebSocket close frame), before both connections are closed.
pub const LINGER: Duration = Duration::from_secs(5);

/// Copies bytes both ways (8 KiB buffer per direction) until both directions ended or, once
/// one side closed its end, [`LINGER`] passed: WebSocket does not use half-closed
/// connections, and a peer that never closes must not hold the tunnel open. Returns the
/// bytes sent upstream and to the client.
async fn copy_both_ways<C, U>(client: C, upstream: U) -> io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let up = async {
        let n = tokio::io::copy(&mut client_read, &mut upstream_write).await?;
        upstream_write.shutdown().await?;
        Ok::<u64, io::Error>(n)
    };
    let down = async {
        let n = tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await?;
        Ok::<u64, io::Error>(n)
    };
    tokio::pin!(up, down);
    tokio::select! {
        sent = &mut up => {
            let sent = sent?;
            let received = tokio::time::timeout(LINGER, down).await.unwrap_or(Ok(0))?;
            Ok((sent, received))
        }
        received = &mut down => {
            let received = received?;
            let sent = tokio::time::timeout(LINGER, up).await.unwrap_or(Ok(0))?;
            Ok((sent, received))
        }
    }
}

/// When bytes last moved, in either direction (milliseconds since `start`): shared by the
/// two directions of a tunnel, or of a streaming exchange under `timeouts.idle`.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    /// Records activity now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When `idle` will have passed since the last activity.
    pub(crate) fn idle_deadline(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    /// Resolves once `idle` has passed since the last activity.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let until = self.idle_deadline(idle);
            tokio::time::sleep_until(until).await;
            if self.idle_deadline(idle) <= Instant::now() {
                return;
            }
        }
    }
}

/// A stream that records activity on every read and write that moves bytes (and counts
/// them, when asked to).
struct Active<T> {
    inner: T,
    activity: Arc<Activity>,
    traffic: Option<Arc<Traffic>>,
}

impl<T> Active<T> {
    fn new(inner: T, activity: &Arc<Activity>, traffic: Option<Arc<Traffic>>) -> Self {
        Active { inner, activity: Arc::clone(activity), traffic }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if matches!(polled, Poll::Ready(Ok(()))) && read > 0 {
            this.activity.touch();
            if let Some(traffic) = &this.traffic {
                traffic.read.fetch_add(read as u64, Ordering::Relaxed);
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.activity.touch();
            if let Some(traffic) = &this.traffic {
                traffic.written.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_websocket_with_connection_upgrade_is_proxied() {
        let mut h = http::HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(websocket_requested(&h).is_none(), "no Connection: upgrade");
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(websocket_requested(&h).unwrap(), "WebSocket");
        h.insert(UPGRADE, HeaderValue::from_static("h2c"));
        assert!(websocket_requested(&h).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_fires_only_after_silence() {
        let activity = Activity::new();
        tokio::time::advance(Duration::from_millis(500)).await;
        activity.touch();
        let started = Instant::now();
        activity.idle_for(Duration::from_secs(1)).await;
        // 1 s after the touch at 500 ms.
        assert_eq!(Instant::now() - started, Duration::from_secs(1));
    }

    #[tokio::test]
    async fn closed_resolves_when_the_last_tunnel_ends() {
        let upgrades = Arc::new(Upgrades::default());
        upgrades.closed().await;
        let entered = upgrades.enter();
        assert_eq!(upgrades.open(), 1);
        let waiter = {
            let upgrades = Arc::clone(&upgrades);
            tokio::spawn(async move { upgrades.closed().await })
        };
        drop(entered);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(upgrades.open(), 0);
    }
}
