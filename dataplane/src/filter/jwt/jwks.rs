//! Remote JWKS: fetched over HTTPS (or HTTP), cached, refreshed in the background, refetched
//! on an unknown `kid` at most once per `min_refetch`, and served stale while the IdP is down.
//!
//! A [`RemoteJwks`] is runtime state that outlives snapshots: the [`JwksRegistry`] (kept by
//! the controller between compiles) hands the same `Arc` to every snapshot that uses the
//! same URI and settings, so a reload neither refetches nor forgets keys. The registry holds
//! only `Weak` references and the refresh task only upgrades one per round, so when the last
//! snapshot using a JWKS is gone, the task ends and the keys are dropped.
//!
//! The task starts lazily, on the first request that needs the keys (so `weir validate`,
//! which compiles without serving, never fetches). That request waits for the first fetch,
//! bounded by `first_fetch_wait`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::keys::KeySet;

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Timing of a remote JWKS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JwksSettings {
    /// Time between background refreshes.
    pub refresh: Duration,
    /// Minimum time between refetches triggered by an unknown `kid` (and the retry delay
    /// after a failed fetch).
    pub min_refetch: Duration,
    /// Timeout of one fetch.
    pub fetch_timeout: Duration,
    /// How long a request waits for the first fetch or an unknown-`kid` refetch.
    pub first_fetch_wait: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(10),
            first_fetch_wait: Duration::from_secs(5),
        }
    }
}

/// Why a JWKS URI is refused.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not an `http` or `https` URL.
    #[error("jwksUri {0:?} is not an http(s) URL")]
    Uri(String),
}

/// One remote JWKS and its cached keys.
pub struct RemoteJwks {
    uri: http::Uri,
    settings: JwksSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    keys: ArcSwap<KeySet>,
    /// Bumped whenever the key set content changes (invalidates verified-token caches).
    generation: AtomicU64,
    fetched: AtomicBool,
    started: AtomicBool,
    wake: Arc<Notify>,
    /// Bumped after every fetch attempt, successful or not (wakes waiting requests).
    attempts: watch::Sender<u64>,
    last_refetch: Mutex<Option<Instant>>,
    last_body: Mutex<Option<Bytes>>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("uri", &self.uri)
            .field("keys", &self.keys.load().keys.len())
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for RemoteJwks {
    fn drop(&mut self) {
        // Wakes the refresh task, which then fails to upgrade and ends.
        self.wake.notify_one();
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTP(S) client: Mozilla's root CAs (webpki-roots) with aws-lc-rs, or `tls` when given.
fn client(tls: Option<&rustls::ClientConfig>) -> Option<HttpsClient> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match tls {
        Some(config) => builder.with_tls_config(config.clone()),
        None => {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            builder.with_provider_and_webpki_roots(provider).ok()?
        }
    };
    let https = builder.https_or_http().enable_http1().build();
    Some(Client::builder(TokioExecutor::new()).build(https))
}

impl RemoteJwks {
    fn new(
        uri: http::Uri,
        settings: JwksSettings,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Arc<Self> {
        Arc::new(RemoteJwks {
            uri,
            settings,
            tls,
            keys: ArcSwap::from_pointee(KeySet::default()),
            generation: AtomicU64::new(0),
            fetched: AtomicBool::new(false),
            started: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            attempts: watch::Sender::new(0),
            last_refetch: Mutex::new(None),
            last_body: Mutex::new(None),
        })
    }

    /// The URI.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// The generation of the key set (changes whenever the keys change).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The cached keys (possibly stale, possibly empty).
    pub fn current(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Starts the background refresh task once, on the current tokio runtime.
    fn ensure_started(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.started.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(refresh_loop(Arc::downgrade(self), Arc::clone(&self.wake)));
    }

    async fn wait_for_attempt(&self) {
        let mut rx = self.attempts.subscribe();
        rx.borrow_and_update();
        self.wake.notify_one();
        let _ = tokio::time::timeout(self.settings.first_fetch_wait, rx.changed()).await;
    }

    /// The keys for a request: waits (bounded) for the first successful fetch; `None` when
    /// no fetch has succeeded yet.
    pub async fn keys(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        self.ensure_started();
        if !self.fetched.load(Ordering::Acquire) {
            let mut rx = self.attempts.subscribe();
            // Only the requests before the first attempt wait; after a failed attempt,
            // requests fail fast until a fetch succeeds.
            if *rx.borrow_and_update() == 0 && !self.fetched.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(self.settings.first_fetch_wait, rx.changed()).await;
            }
        }
        self.fetched.load(Ordering::Acquire).then(|| self.current())
    }

    /// An unknown `kid` was seen: refetches now if the last such refetch is older than
    /// `min_refetch`, and waits (bounded) for it. Returns the keys afterwards.
    pub async fn refetch_for_unknown_kid(self: &Arc<Self>) -> Arc<KeySet> {
        let allowed = {
            let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let ok = last.is_none_or(|t| now.duration_since(t) >= self.settings.min_refetch);
            if ok {
                *last = Some(now);
            }
            ok
        };
        if allowed {
            self.wait_for_attempt().await;
        }
        self.current()
    }

    async fn fetch(&self, client: &HttpsClient) -> Result<(), String> {
        let request = http::Request::get(self.uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(self.settings.fetch_timeout, async {
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("status {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES);
            body.collect().await.map(|b| b.to_bytes()).map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| "timeout".to_owned())??;
        let mut last = self.last_body.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() == Some(&response) {
            return Ok(());
        }
        let set = KeySet::from_jwks(&response).map_err(|e| e.to_string())?;
        if set.skipped > 0 {
            tracing::warn!(uri = %self.uri, skipped = set.skipped, "JWKS entries skipped (not usable signature keys)");
        }
        tracing::info!(uri = %self.uri, keys = set.keys.len(), "JWKS loaded");
        self.keys.store(Arc::new(set));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.fetched.store(true, Ordering::Release);
        *last = Some(response);
        Ok(())
    }
}

async fn refresh_loop(jwks: Weak<RemoteJwks>, wake: Arc<Notify>) {
    let tls = jwks.upgrade().and_then(|j| j.tls.clone());
    let Some(client) = client(tls.as_deref()) else {
        tracing::error!("no TLS configuration for JWKS fetching");
        return;
    };
    loop {
        let wait = {
            let Some(this) = jwks.upgrade() else { return };
            let result = this.fetch(&client).await;
            this.attempts.send_modify(|n| *n += 1);
            match result {
                Ok(()) => this.settings.refresh,
                Err(error) => {
                    crate::metrics::jwks_fetch_failure();
                    tracing::warn!(uri = %this.uri, %error, stale_keys = this.current().keys.len(), "JWKS fetch failed; serving cached keys");
                    this.settings.min_refetch
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
    }
}

/// The identity of a remote JWKS: its URI and settings.
type JwksId = (String, JwksSettings);

/// The remote JWKS in use, keyed by URI and settings. Clones share the same registry.
#[derive(Debug, Clone, Default)]
pub struct JwksRegistry {
    inner: Arc<Mutex<HashMap<JwksId, Weak<RemoteJwks>>>>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl JwksRegistry {
    /// A registry whose fetches use this TLS configuration (e.g. a private CA) instead of
    /// Mozilla's root CAs. It must not set ALPN protocols.
    pub fn with_tls(tls: Arc<rustls::ClientConfig>) -> Self {
        JwksRegistry { inner: Arc::default(), tls: Some(tls) }
    }

    /// The shared [`RemoteJwks`] for `uri`: the live one if any snapshot still uses it.
    pub fn get(&self, uri: &str, settings: JwksSettings) -> Result<Arc<RemoteJwks>, JwksError> {
        let parsed: http::Uri = uri.parse().map_err(|_| JwksError::Uri(uri.to_owned()))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(JwksError::Uri(uri.to_owned()));
        }
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        let key = (uri.to_owned(), settings);
        if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(live);
        }
        let fresh = RemoteJwks::new(parsed, settings, self.tls.clone());
        map.insert(key, Arc::downgrade(&fresh));
        Ok(fresh)
    }

    /// Number of remote JWKS still in use.
    pub fn len(&self) -> usize {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|w| w.strong_count() > 0).count()
    }

    /// True when no remote JWKS is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
