//! The idle connections of the HTTP/1.1 pool ([`super::h1::Pool`]): where they are kept,
//! and how one the upstream closes while idle is let go at once.
//!
//! **Where.** One map per pool behind a mutex ([`Slots`]): per [`PoolKey`] (endpoint,
//! transport, per-core worker), the idle connections oldest first. (A thread-local map per
//! per-core worker, taking no lock, was tried: under callgrind its checkout and checkin
//! took about 65 instructions per request more than this uncontended mutex; not kept.)
//!
//! **Closed while idle.** At checkin a connection is read once more with its own waker
//! ([`IdleWatch`], made once per connection): nothing to read (the normal case) registers
//! that waker with the event loop, with no system call when the socket is known not to
//! be readable. When the upstream later closes the connection (or sends anything), the
//! event loop wakes it: the connection is marked, and its key's connections are checked
//! there and then (a non-blocking read each, marked ones only); the closed one is
//! dropped, which gives back its slot in the backend's connection count
//! (`circuitBreaker.maxConnections`). A connection never marked needs no check at
//! checkout. A wake that cannot check at once (it came from inside a check on the same
//! thread: the cooperative budget, a TLS stream asking to be polled again) leaves the
//! mark, and the next checkout on that key, or the periodic sweep, checks it. When the
//! runtime that opened a connection shuts down, its event loop wakes every watch: the
//! connection is let go then.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use super::PoolKey;
use super::h1::POOL_IDLE_TIMEOUT;
use super::lean::Conn;
use crate::upstream::policy::ConnectionSettings;

/// A pool's idle connections, behind its mutex.
pub(crate) type Shared = Mutex<Slots>;

thread_local! {
    /// A connection is being checked on this thread: a wake from inside that check (the
    /// cooperative budget, a TLS stream asking to be polled again) only marks.
    static CHECKING: Cell<bool> = const { Cell::new(false) };
}

/// `f` with [`CHECKING`] set.
pub(crate) fn checking<R>(f: impl FnOnce() -> R) -> R {
    let was = CHECKING.replace(true);
    let result = f();
    CHECKING.set(was);
    result
}

/// An idle connection and when it went idle.
pub(crate) struct Idle {
    pub(crate) conn: Box<Conn>,
    pub(crate) since: Instant,
}

/// The idle connections of one endpoint and transport.
pub(crate) struct Entry {
    /// Oldest first.
    conns: Vec<Idle>,
    /// How long they are kept (`connection.idleTimeout` of the last backend that returned
    /// one).
    idle_timeout: Duration,
}

/// Idle connections by key.
#[derive(Default)]
pub(crate) struct Slots {
    /// foldhash: SipHash of the address was ~2% of a proxied request's instructions.
    idle: HashMap<PoolKey, Entry, foldhash::fast::RandomState>,
    /// When expired connections of every key were last dropped.
    swept: Option<Instant>,
}

impl Slots {
    /// The newest open idle connection for `key`, if any. Expired connections, and ones
    /// found closed or sent data on while idle, are dropped on the way.
    pub(crate) fn checkout(&mut self, key: &PoolKey, now: Instant) -> Option<Box<Conn>> {
        let entry = self.idle.get_mut(key)?;
        while let Some(idle) = entry.conns.pop() {
            if now.duration_since(idle.since) >= entry.idle_timeout {
                // Newest first: everything below is older still.
                entry.conns.clear();
                return None;
            }
            let mut conn = idle.conn;
            // Not woken since its checkin: the socket has not become readable.
            if !conn.idle_woken() || conn.check_idle() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` (idle since `now`, watched already) under `key` as `settings` say;
    /// every `min(idleTimeout, POOL_IDLE_TIMEOUT)` first drops the expired and closed
    /// connections of every key.
    pub(crate) fn checkin(
        &mut self,
        key: PoolKey,
        conn: Box<Conn>,
        now: Instant,
        settings: ConnectionSettings,
    ) {
        let sweep_every = settings.idle_timeout.min(POOL_IDLE_TIMEOUT);
        if self.swept.is_none_or(|t| now.duration_since(t) >= sweep_every) {
            self.swept = Some(now);
            self.sweep(now);
        }
        let entry = match self.idle.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(Entry { conns: Vec::new(), idle_timeout: settings.idle_timeout })
            }
        };
        entry.idle_timeout = settings.idle_timeout;
        if entry.conns.len() >= settings.max_idle_per_endpoint {
            // Keep the newest: the oldest is the likeliest to be closed by the upstream.
            let excess = entry.conns.len() + 1 - settings.max_idle_per_endpoint;
            entry.conns.drain(..excess);
        }
        entry.conns.push(Idle { conn, since: now });
    }

    /// Drops expired and closed connections of every key.
    fn sweep(&mut self, now: Instant) {
        self.idle.retain(|_, entry| {
            let timeout = entry.idle_timeout;
            entry
                .conns
                .retain_mut(|e| now.duration_since(e.since) < timeout && e.conn.check_idle());
            !entry.conns.is_empty()
        });
    }

    /// Checks the connections of `key` that were woken while idle: closed ones (or ones
    /// sent data) are dropped.
    pub(crate) fn sweep_woken(&mut self, key: &PoolKey) {
        let Some(entry) = self.idle.get_mut(key) else { return };
        entry.conns.retain_mut(|e| !e.conn.idle_woken() || e.conn.check_idle());
    }

    /// Idle connections under the keys `count_it` says.
    pub(crate) fn count_where(&self, mut count_it: impl FnMut(&PoolKey) -> bool) -> usize {
        self.idle.iter().filter(|(k, _)| count_it(k)).map(|(_, e)| e.conns.len()).sum()
    }
}

/// Watches one idle connection: the waker registered with the event loop while the
/// connection is in the pool (one allocation per connection). Woken, it marks the
/// connection and checks the woken connections of its key.
pub(crate) struct IdleWatch {
    /// Woken since the connection was last checked in (or checked).
    woken: AtomicBool,
    /// The pool's map (weak: an idle connection keeps its pool alive through its `Home`
    /// already).
    shared: Weak<Shared>,
    key: PoolKey,
}

impl IdleWatch {
    /// A watch of a connection kept in `shared` under `key`, and its waker.
    pub(crate) fn new(shared: &Arc<Shared>, key: PoolKey) -> (Arc<IdleWatch>, Waker) {
        let watch = Arc::new(IdleWatch {
            woken: AtomicBool::new(false),
            shared: Arc::downgrade(shared),
            key,
        });
        let waker = Waker::from(Arc::clone(&watch));
        (watch, waker)
    }

    /// Whether it was woken since [`IdleWatch::reset`].
    pub(crate) fn woken(&self) -> bool {
        self.woken.load(Ordering::Relaxed)
    }

    /// Before a check: a wake from now on marks again.
    pub(crate) fn reset(&self) {
        self.woken.store(false, Ordering::Relaxed);
    }
}

impl Wake for IdleWatch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Relaxed);
        if CHECKING.try_with(Cell::get).unwrap_or(true) {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.lock().unwrap_or_else(PoisonError::into_inner).sweep_woken(&self.key);
        }
    }
}
