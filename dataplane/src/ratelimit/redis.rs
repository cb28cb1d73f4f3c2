//! The Redis store: one atomic `EVALSHA` of `script.lua` per decision, through a `fred` pool.
//!
//! The script holds each key's state in a hash with a TTL (so nothing grows without bound)
//! and, in production, reads the time from the Redis server (`TIME`), so replicas with
//! drifting clocks still share one timeline. A call that cannot finish within the timeout,
//! or finds no connected client, fails at once: the limiter then applies `onStoreError`.
//! fred's reconnect policy (forever, backing off to 2 s) picks a restarted Redis up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{
    ClientLike, Config, ConnectionConfig, Error as FredError, LuaInterface, PerformanceConfig,
    Pool, ReconnectPolicy,
};
use fred::types::{Builder, Value};

use super::algorithm::{Limit, State, Step};

/// The script's source; its SHA-1 is what `EVALSHA` names.
pub const SCRIPT: &str = include_str!("script.lua");

/// The URL schemes `--redis-url` accepts.
const SCHEMES: [&str; 6] =
    ["redis", "rediss", "redis-sentinel", "rediss-sentinel", "redis-cluster", "rediss-cluster"];

/// Errors of the Redis store.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// `--redis-url` has a scheme other than `redis`, `rediss`, `redis-sentinel`,
    /// `rediss-sentinel`, `redis-cluster` or `rediss-cluster`.
    #[error(
        "unsupported Redis URL scheme {0:?} (use redis://, rediss://, redis-sentinel:// or redis-cluster://)"
    )]
    Scheme(String),
    /// `--redis-url` could not be parsed, or the pool could not be built.
    #[error("invalid Redis configuration: {0}")]
    Config(#[source] FredError),
    /// No pooled client is connected right now (Redis down or restarting).
    #[error("not connected to Redis")]
    Disconnected,
    /// The call did not finish within the configured timeout.
    #[error("Redis call timed out after {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error.
    #[error("Redis error: {0}")]
    Redis(#[source] FredError),
    /// The script's reply had an unexpected shape.
    #[error("unexpected reply from the rate-limit script")]
    BadReply,
}

/// Where the script takes `now` from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisTime {
    /// The Redis server's clock (`TIME` inside the script): the production setting.
    #[default]
    Server,
    /// The caller's clock, passed as an argument: for tests and benchmarks that need
    /// exact timestamps (and to compare with the local store on the same timeline). Keys
    /// then live at least an hour of server time, since the TTL runs on the server clock.
    Caller,
}

/// Tuning of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Pooled connections (each pipelines its commands).
    pub pool_size: usize,
    /// Upper bound of one decision's round trip; past it `onStoreError` applies.
    pub timeout: Duration,
    /// How long [`RedisStore::connect`] waits for the first connection (it returns either
    /// way: a Redis that is down at start is picked up later).
    pub connect_wait: Duration,
    /// Where `now` comes from.
    pub time: RedisTime,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            pool_size: 4,
            timeout: Duration::from_millis(100),
            connect_wait: Duration::from_secs(2),
            time: RedisTime::Server,
        }
    }
}

/// A pool of connections to Redis plus the loaded script.
pub struct RedisStore {
    pool: Pool,
    sha: String,
    options: RedisOptions,
    /// The last call failed: log the change of state once, not every failing request.
    failing: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("RedisStore").field("options", &self.options).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://`, `rediss://`, `redis-sentinel://`, `redis-cluster://`,
    /// as fred's `Config::from_url` reads them) and loads the script. Only a bad URL is an
    /// error: an unreachable Redis is retried in the background, and until it answers every
    /// decision takes the `onStoreError` path. Must run inside a tokio runtime.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, RedisStoreError> {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        if !SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
            return Err(RedisStoreError::Scheme(scheme.to_owned()));
        }
        let mut config = Config::from_url(url).map_err(RedisStoreError::Config)?;
        // Apply the reconnect policy to the first connection too: a gateway starts even
        // when Redis is not up yet.
        config.fail_fast = false;
        let mut builder = Builder::from_config(config);
        builder
            .with_performance_config(|p: &mut PerformanceConfig| {
                p.default_command_timeout = options.timeout;
            })
            .with_connection_config(|c: &mut ConnectionConfig| {
                c.connection_timeout = options.timeout.max(Duration::from_millis(500));
                c.internal_command_timeout = options.timeout.max(Duration::from_millis(500));
                // A decision is never replayed after a reconnect: it would be stale.
                c.max_command_attempts = 1;
            })
            // Forever, 100 ms doubling to 2 s: Redis coming back is picked up on its own.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let pool = builder.build_pool(options.pool_size.max(1)).map_err(RedisStoreError::Config)?;
        let _connection_task = pool.connect();
        let store = RedisStore {
            pool,
            sha: fred::util::sha1_hash(SCRIPT),
            options,
            failing: AtomicBool::new(false),
        };
        match tokio::time::timeout(store.options.connect_wait, store.pool.wait_for_connect()).await
        {
            Ok(Ok(())) => {
                if let Err(error) = store.load_script().await {
                    tracing::warn!(%error, "rate limit: could not load the Redis script yet");
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "rate limit: Redis not reachable yet"),
            Err(_) => {
                tracing::warn!("rate limit: Redis not reachable yet; retrying in the background")
            }
        }
        Ok(store)
    }

    /// The store's options.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// Whether at least one pooled client is connected now.
    pub fn is_connected(&self) -> bool {
        self.pool.next_connected().is_connected()
    }

    /// The connection pool, shared with the response cache's Redis store (one
    /// `--redis-url`, one set of connections).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Closes every connection (tests and shutdown).
    pub async fn quit(&self) {
        let _ = self.pool.quit().await;
    }

    async fn load_script(&self) -> Result<(), RedisStoreError> {
        let client = self.pool.next_connected();
        client.script_load_cluster::<(), _>(SCRIPT).await.map_err(RedisStoreError::Redis)
    }

    /// Runs one step of `limit`'s algorithm on `key` atomically in Redis. `now_ms` is used
    /// only with [`RedisTime::Caller`]. Bounded by the configured timeout.
    pub async fn step(
        &self,
        key: Bytes,
        limit: &Limit,
        now_ms: u64,
    ) -> Result<Step, RedisStoreError> {
        let timeout = self.options.timeout;
        let result =
            match tokio::time::timeout(timeout, self.step_unbounded(key, limit, now_ms)).await {
                Ok(result) => result,
                Err(_) => Err(RedisStoreError::Timeout(timeout)),
            };
        match &result {
            Ok(_)
                if self.failing.load(Ordering::Relaxed)
                    && self.failing.swap(false, Ordering::Relaxed) =>
            {
                tracing::info!("rate limit: Redis answers again; shared limiting resumed");
            }
            Err(error) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(%error, "rate limit: Redis unavailable; applying onStoreError until it answers");
            }
            _ => {}
        }
        result
    }

    async fn step_unbounded(
        &self,
        key: Bytes,
        limit: &Limit,
        now_ms: u64,
    ) -> Result<Step, RedisStoreError> {
        let client = self.pool.next_connected();
        if !client.is_connected() {
            return Err(RedisStoreError::Disconnected);
        }
        let now = match self.options.time {
            RedisTime::Server => Value::from(""),
            RedisTime::Caller => Value::Integer(to_i64(now_ms)),
        };
        let args = vec![
            Value::Integer(i64::from(limit.algorithm().code())),
            Value::Integer(to_i64(limit.limit())),
            Value::Integer(to_i64(limit.window_ms())),
            Value::Integer(to_i64(limit.burst())),
            now,
        ];
        let reply: Result<Vec<i64>, FredError> =
            client.evalsha(self.sha.as_str(), key.clone(), args.clone()).await;
        let reply = match reply {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                // Redis restarted or flushed its script cache: load again and retry once.
                client
                    .script_load_cluster::<(), _>(SCRIPT)
                    .await
                    .map_err(RedisStoreError::Redis)?;
                client.evalsha(self.sha.as_str(), key, args).await
            }
            other => other,
        }
        .map_err(RedisStoreError::Redis)?;
        parse_reply(&reply)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn parse_reply(reply: &[i64]) -> Result<Step, RedisStoreError> {
    let [allowed, a, b, c, now] = reply else {
        return Err(RedisStoreError::BadReply);
    };
    let u = |v: i64| u64::try_from(v).map_err(|_| RedisStoreError::BadReply);
    Ok(Step {
        allowed: *allowed == 1,
        state: State { a: u(*a)?, b: u(*b)?, c: u(*c)? },
        now: u(*now)?,
    })
}
