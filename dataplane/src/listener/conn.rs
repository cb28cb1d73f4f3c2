//! One client connection: the counted IO, the per-connection activity, and the watchdog
//! that closes a connection whose next request head is too slow or that stays idle.
//!
//! hyper's own HTTP/1 `header_read_timeout` also runs while a keep-alive connection waits
//! for its next request (its timer starts as soon as the previous exchange ends), so it
//! cannot tell "idle" from "slow headers", and it does not cover the protocol detection
//! before it. The watchdog does both, from three cheap signals: requests in flight and
//! completed (one atomic add when a request starts and one when its response head is
//! handed to hyper), and whether bytes were read from or written to the client since the
//! last tick (one relaxed store per read or write). It wakes up every quarter of the
//! shorter timeout, never per request.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// What one connection's requests and bytes did, shared by its IO, its service and its
/// watchdog.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Low 32 bits: requests in flight; high 32 bits: requests completed (wrapping).
    requests: AtomicU64,
    /// Bytes were read from the client since the watchdog last looked.
    read: AtomicBool,
    /// Bytes were written to the client since the watchdog last looked.
    wrote: AtomicBool,
    /// The connection speaks HTTP/2 (ALPN, or the h2c preface on a plain connection).
    h2: AtomicBool,
}

const IN_FLIGHT: u64 = 0xffff_ffff;

impl Activity {
    /// Marks a request as started; dropping the guard marks it as completed.
    pub(crate) fn begin(&self) -> Busy<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    pub(crate) fn set_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
    }
}

/// A request in flight on a connection (see [`Activity::begin`]).
pub(crate) struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        // One add: in flight - 1, completed + 1.
        self.0.requests.fetch_add((1 << 32) - 1, Ordering::Relaxed);
    }
}

/// Holds a connection's place: its count in `weir_connections` and its
/// `--max-connections` permit, for as long as the socket lives (an upgraded connection
/// keeps them after hyper hands it over).
#[derive(Debug)]
pub(crate) struct Held {
    gauge: Gauge,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    pub(crate) fn new(gauge: &Gauge, permit: Option<OwnedSemaphorePermit>) -> Self {
        gauge.inc();
        Held { gauge: gauge.clone(), _permit: permit }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A client socket (plain or TLS) that reports reads and writes to the connection's
/// [`Activity`], and holds its [`Held`] place.
#[derive(Debug)]
pub(crate) struct CountedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Whether the first bytes were looked at for the h2c preface.
    sniffed: bool,
    _held: Held,
}

impl<T> CountedIo<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>, held: Held, sniffed: bool) -> Self {
        CountedIo { inner, activity, sniffed, _held: held }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read.store(true, Ordering::Relaxed);
            if !this.sniffed {
                this.sniffed = true;
                if buf.filled()[before..].starts_with(b"PRI ") {
                    this.activity.set_h2();
                }
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Why the watchdog ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Keep going; look again at the next tick.
    Continue,
    /// A request head (or the first request) did not arrive within the header-read timeout.
    HeaderTimeout,
    /// No request and no bytes written for the idle timeout.
    Idle,
    /// Closing was asked for but the connection made no progress for as long again: drop it.
    Stalled,
}

/// The watchdog's state for one connection.
#[derive(Debug)]
pub(crate) struct Watchdog {
    header_read_timeout: Duration,
    idle_timeout: Option<Duration>,
    /// The `requests` word at the last tick.
    last: u64,
    /// Since when nothing happened (no request, no bytes written).
    quiet_since: Instant,
    /// Since when a request head is awaited (the first one, or bytes of the next one
    /// arrived); `None` while a keep-alive connection waits without any byte.
    head_since: Option<Instant>,
    /// When a graceful close was asked for, and the grace before dropping the connection.
    closing: Option<(Instant, Duration)>,
}

impl Watchdog {
    /// A watchdog for a connection that starts at `now` and awaits its first request.
    pub(crate) fn new(
        header_read_timeout: Duration,
        idle_timeout: Option<Duration>,
        now: Instant,
    ) -> Self {
        Watchdog {
            header_read_timeout,
            idle_timeout,
            last: 0,
            quiet_since: now,
            head_since: Some(now),
            closing: None,
        }
    }

    /// How often the watchdog looks: a quarter of the shorter timeout (at least 10 ms), so
    /// a timeout fires between its value and 1.25 times it.
    pub(crate) fn period(&self) -> Duration {
        let shortest = match self.idle_timeout {
            Some(idle) => idle.min(self.header_read_timeout),
            None => self.header_read_timeout,
        };
        (shortest / 4).max(Duration::from_millis(10))
    }

    /// Looks at `activity` at `now`.
    pub(crate) fn tick(&mut self, activity: &Activity, now: Instant) -> Verdict {
        let requests = activity.requests.load(Ordering::Relaxed);
        let read = activity.read.swap(false, Ordering::Relaxed);
        let wrote = activity.wrote.swap(false, Ordering::Relaxed);
        let busy = requests & IN_FLIGHT > 0 || requests != self.last || wrote;
        self.last = requests;
        if busy {
            self.quiet_since = now;
            self.head_since = None;
            return Verdict::Continue;
        }
        if let Some((since, grace)) = self.closing {
            return if now.duration_since(since) >= grace {
                Verdict::Stalled
            } else {
                Verdict::Continue
            };
        }
        // An HTTP/2 client may stay silent or only ping between requests: idle applies.
        if !activity.h2.load(Ordering::Relaxed) {
            if read && self.head_since.is_none() {
                self.head_since = Some(now);
            }
            if let Some(since) = self.head_since
                && now.duration_since(since) >= self.header_read_timeout
            {
                self.closing = Some((now, self.header_read_timeout));
                return Verdict::HeaderTimeout;
            }
        }
        if let Some(idle) = self.idle_timeout
            && now.duration_since(self.quiet_since) >= idle
        {
            self.closing = Some((now, idle));
            return Verdict::Idle;
        }
        Verdict::Continue
    }

    /// Records that a close was asked for at `now` for another reason (server shutdown):
    /// a connection that then makes no progress for `grace` is dropped.
    pub(crate) fn closing(&mut self, now: Instant, grace: Duration) {
        self.closing.get_or_insert((now, grace));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn a_first_request_must_arrive_within_the_header_timeout() {
        let start = Instant::now();
        let activity = Activity::default();
        let mut dog = Watchdog::new(HEAD, Some(IDLE), start);
        assert_eq!(dog.tick(&activity, start + Duration::from_secs(9)), Verdict::Continue);
        assert_eq!(dog.tick(&activity, start + HEAD), Verdict::HeaderTimeout);
        // Then dropped after as long again without progress.
        assert_eq!(dog.tick(&activity, start + HEAD * 2), Verdict::Stalled);
    }

    #[test]
    fn keep_alive_waits_for_the_idle_timeout_and_slow_heads_for_the_header_timeout() {
        let start = Instant::now();
        let activity = Activity::default();
        let mut dog = Watchdog::new(HEAD, Some(IDLE), start);
        drop(activity.begin());
        let t1 = start + Duration::from_secs(1);
        assert_eq!(dog.tick(&activity, t1), Verdict::Continue);
        // Idle without a byte: no header timeout, idle after 60 s.
        assert_eq!(dog.tick(&activity, t1 + Duration::from_secs(30)), Verdict::Continue);
        assert_eq!(dog.tick(&activity, t1 + IDLE), Verdict::Idle);

        let mut dog = Watchdog::new(HEAD, Some(IDLE), start);
        drop(activity.begin());
        assert_eq!(dog.tick(&activity, t1), Verdict::Continue);
        // Bytes of the next head arrive and trickle: header timeout from the first.
        activity.read.store(true, Ordering::Relaxed);
        let t2 = t1 + Duration::from_secs(5);
        assert_eq!(dog.tick(&activity, t2), Verdict::Continue);
        activity.read.store(true, Ordering::Relaxed);
        assert_eq!(dog.tick(&activity, t2 + HEAD), Verdict::HeaderTimeout);
    }

    #[test]
    fn requests_in_flight_and_responses_being_written_are_not_idle() {
        let start = Instant::now();
        let activity = Activity::default();
        let mut dog = Watchdog::new(HEAD, Some(IDLE), start);
        let busy = activity.begin();
        assert_eq!(dog.tick(&activity, start + IDLE * 3), Verdict::Continue);
        drop(busy);
        let t = start + IDLE * 3;
        assert_eq!(dog.tick(&activity, t), Verdict::Continue);
        // A long response body keeps being written: not idle.
        activity.wrote.store(true, Ordering::Relaxed);
        assert_eq!(dog.tick(&activity, t + IDLE), Verdict::Continue);
        assert_eq!(dog.tick(&activity, t + IDLE * 2), Verdict::Idle);
    }

    #[test]
    fn http2_connections_only_have_the_idle_timeout() {
        let start = Instant::now();
        let activity = Activity::default();
        activity.set_h2();
        let mut dog = Watchdog::new(HEAD, Some(IDLE), start);
        activity.read.store(true, Ordering::Relaxed);
        assert_eq!(dog.tick(&activity, start + HEAD * 2), Verdict::Continue);
        assert_eq!(dog.tick(&activity, start + IDLE), Verdict::Idle);
        assert_eq!(dog.period(), HEAD / 4);
        let none = Watchdog::new(HEAD, None, start);
        assert_eq!(none.period(), HEAD / 4);
    }
}
