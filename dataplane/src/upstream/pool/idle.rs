//! The idle connections of the HTTP/1.1 pool ([`super::h1::Pool`]): where they are kept,
//! and how one the upstream closes while idle is let go at once.
//!
//! **Where.** Connections of a per-core worker thread ([`super::set_pool_worker`]) are kept
//! in a thread-local map (keyed by the pool's identity and the [`PoolKey`]): only that
//! thread ever uses them, so checkout and checkin take no lock and no atomic operation.
//! Every other thread (the work-stealing runtime's, one worker) shares the pool's map
//! behind a mutex. Both maps hold [`Slots`]: per key, the idle connections oldest first.
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
//! thread, or the map was busy) leaves the mark, and the next checkout on that key, or the
//! periodic sweep, checks it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use super::PoolKey;
use super::h1::POOL_IDLE_TIMEOUT;
use super::lean::Conn;
use crate::upstream::policy::ConnectionSettings;

/// The map of the threads that are not per-core workers, shared behind a mutex.
pub(crate) type Shared = Mutex<Slots<PoolKey>>;

/// A key of the thread-local map: the pool's identity and the connections' key.
pub(crate) type LocalKey = (u64, PoolKey);

thread_local! {
    /// The idle connections of this per-core worker thread, of every pool.
    static LOCAL: RefCell<Slots<LocalKey>> = RefCell::new(Slots::default());
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

/// `f` on this thread's map of idle connections; `None` while it is in use (a re-entrant
/// call) or destroyed (the thread is exiting).
pub(crate) fn with_local<R>(f: impl FnOnce(&mut Slots<LocalKey>) -> R) -> Option<R> {
    LOCAL.try_with(|local| local.try_borrow_mut().ok().map(|mut slots| f(&mut slots))).ok()?
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
pub(crate) struct Slots<K> {
    /// foldhash: SipHash of the address was ~2% of a proxied request's instructions.
    idle: HashMap<K, Entry, foldhash::fast::RandomState>,
    /// When expired connections of every key were last dropped.
    swept: Option<Instant>,
}

impl<K> Default for Slots<K> {
    fn default() -> Self {
        Slots { idle: HashMap::default(), swept: None }
    }
}

impl<K: Hash + Eq> Slots<K> {
    /// The newest open idle connection for `key`, if any. Expired connections, and ones
    /// found closed or sent data on while idle, are dropped on the way.
    pub(crate) fn checkout(&mut self, key: &K, now: Instant) -> Option<Box<Conn>> {
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
        key: K,
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
    pub(crate) fn sweep_woken(&mut self, key: &K) {
        let Some(entry) = self.idle.get_mut(key) else { return };
        entry.conns.retain_mut(|e| !e.conn.idle_woken() || e.conn.check_idle());
    }

    /// Idle connections under the keys `count_it` says.
    pub(crate) fn count_where(&self, mut count_it: impl FnMut(&K) -> bool) -> usize {
        self.idle.iter().filter(|(k, _)| count_it(k)).map(|(_, e)| e.conns.len()).sum()
    }
}

/// Watches one idle connection: the waker registered with the event loop while the
/// connection is in the pool (one allocation per connection). Woken, it marks the
/// connection and checks the woken connections of its key.
pub(crate) struct IdleWatch {
    /// Woken since the connection was last checked in (or checked).
    woken: AtomicBool,
    /// The pool's shared map (weak: an idle connection keeps its pool alive through its
    /// `Home` already).
    shared: Weak<Shared>,
    /// The pool's identity (the thread-local map's key).
    pool: u64,
    key: PoolKey,
}

impl IdleWatch {
    /// A watch of a connection of `pool` (identity `id`) under `key`, and its waker.
    pub(crate) fn new(shared: &Arc<Shared>, id: u64, key: PoolKey) -> (Arc<IdleWatch>, Waker) {
        let watch = Arc::new(IdleWatch {
            woken: AtomicBool::new(false),
            shared: Arc::downgrade(shared),
            pool: id,
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
        // On the per-core worker that owns it (the event loop that wakes it is that
        // worker's), the thread-local map; it may also be in the shared one (checked in
        // from another thread).
        if self.key.worker != 0 && super::pool_worker() == self.key.worker {
            with_local(|slots| slots.sweep_woken(&(self.pool, self.key)));
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.lock().unwrap_or_else(PoisonError::into_inner).sweep_woken(&self.key);
        }
    }
}
