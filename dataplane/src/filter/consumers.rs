//! Consumers as the data plane sees them: identities with hashed API keys and JWT keys,
//! one [`ConsumerStore`] per namespace (a consumer authenticates only on Routes in its own
//! namespace).
//!
//! API keys are held only as SHA-256 hashes. A presented key is hashed, looked up by its
//! hash, and the stored hash is then compared with the presented one in constant time. No
//! key, hash or secret is printed by the `Debug` implementations here.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::digest;

use super::jwt::JwtKey;
use crate::snapshot::{Filter, ObjectKey};

/// An authenticated identity: a Consumer object.
pub struct ConsumerEntry {
    /// The Consumer object.
    pub key: ObjectKey,
    /// `spec.username` (default `metadata.name`), sent upstream as `X-Consumer-Username`.
    pub username: Arc<str>,
    /// `spec.tier`, for rate-limit tiers.
    pub tier: Option<Arc<str>>,
    /// The consumer's own plugins, compiled, in phase order (merged into the chain once
    /// this consumer is authenticated).
    pub plugins: Arc<[Filter]>,
    /// `username` as a header value, built once.
    pub(crate) username_header: Option<http::HeaderValue>,
}

impl ConsumerEntry {
    /// Builds an entry.
    pub fn new(
        key: ObjectKey,
        username: &str,
        tier: Option<&str>,
        plugins: Arc<[Filter]>,
    ) -> Arc<Self> {
        Arc::new(ConsumerEntry {
            key,
            username: username.into(),
            tier: tier.map(Arc::from),
            plugins,
            username_header: http::HeaderValue::from_str(username).ok(),
        })
    }
}

impl std::fmt::Debug for ConsumerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerEntry")
            .field("key", &self.key)
            .field("username", &self.username)
            .field("tier", &self.tier)
            .field("plugins", &self.plugins.len())
            .finish()
    }
}

/// A JWT verification key that belongs to a consumer (`credentials[].jwt`).
#[derive(Clone)]
pub struct ConsumerJwtKey {
    /// The owner.
    pub consumer: Arc<ConsumerEntry>,
    /// The key and its algorithm.
    pub key: JwtKey,
}

/// The SHA-256 of an API key.
pub type KeyHash = [u8; 32];

/// Hashes an API key (SHA-256).
pub fn hash_api_key(key: &[u8]) -> KeyHash {
    let d = digest::digest(&digest::SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The consumers of one namespace and their credentials.
#[derive(Default)]
pub struct ConsumerStore {
    api_keys: HashMap<KeyHash, Arc<ConsumerEntry>>,
    jwt_keys: HashMap<Box<str>, Vec<ConsumerJwtKey>>,
    by_username: HashMap<Box<str>, Arc<ConsumerEntry>>,
}

impl std::fmt::Debug for ConsumerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerStore")
            .field("consumers", &self.by_username.len())
            .field("api_keys", &self.api_keys.len())
            .field("jwt_credentials", &self.jwt_keys.len())
            .finish()
    }
}

impl ConsumerStore {
    /// Adds a consumer (so `consumerClaim` can name it), replacing one of the same username.
    pub fn add_consumer(&mut self, consumer: &Arc<ConsumerEntry>) {
        self.by_username.insert(consumer.username.as_ref().into(), Arc::clone(consumer));
    }

    /// Adds an API key (given as its hash) for `consumer`. A hash already taken by another
    /// consumer is refused (`false`): one key must identify one consumer.
    pub fn add_api_key(&mut self, hash: KeyHash, consumer: &Arc<ConsumerEntry>) -> bool {
        match self.api_keys.get(&hash) {
            Some(owner) if owner.key != consumer.key => false,
            _ => {
                self.api_keys.insert(hash, Arc::clone(consumer));
                true
            }
        }
    }

    /// Adds a JWT credential, selected by the value of the plugin's `keyClaim`.
    pub fn add_jwt_key(&mut self, key_claim_value: &str, key: ConsumerJwtKey) {
        self.jwt_keys.entry(key_claim_value.into()).or_default().push(key);
    }

    /// The consumer owning the API key `presented`, compared in constant time.
    pub fn find_api_key(&self, presented: &[u8]) -> Option<&Arc<ConsumerEntry>> {
        let hash = hash_api_key(presented);
        let (stored, consumer) = self.api_keys.get_key_value(&hash)?;
        aws_lc_rs::constant_time::verify_slices_are_equal(stored, &hash).ok()?;
        Some(consumer)
    }

    /// The JWT credentials whose key matches a token's `keyClaim` value.
    pub fn jwt_keys(&self, key_claim_value: &str) -> &[ConsumerJwtKey] {
        self.jwt_keys.get(key_claim_value).map_or(&[], Vec::as_slice)
    }

    /// The consumer with this username.
    pub fn by_username(&self, username: &str) -> Option<&Arc<ConsumerEntry>> {
        self.by_username.get(username)
    }

    /// Number of consumers.
    pub fn len(&self) -> usize {
        self.by_username.len()
    }

    /// True when the namespace has no consumer.
    pub fn is_empty(&self) -> bool {
        self.by_username.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn api_keys_are_found_by_hash_and_never_printed() {
        let alice = ConsumerEntry::new(ObjectKey::new("ns", "alice"), "alice", None, Arc::from([]));
        let bob = ConsumerEntry::new(ObjectKey::new("ns", "bob"), "bob", None, Arc::from([]));
        let mut store = ConsumerStore::default();
        store.add_consumer(&alice);
        assert!(store.add_api_key(hash_api_key(b"k-old"), &alice));
        assert!(store.add_api_key(hash_api_key(b"k-new"), &alice));
        assert!(!store.add_api_key(hash_api_key(b"k-new"), &bob), "a key has one owner");
        assert_eq!(store.find_api_key(b"k-old").unwrap().username.as_ref(), "alice");
        assert_eq!(store.find_api_key(b"k-new").unwrap().username.as_ref(), "alice");
        assert!(store.find_api_key(b"k-ne").is_none());
        let debug = format!("{store:?} {alice:?}");
        assert!(!debug.contains("k-old") && !debug.contains("k-new"), "{debug}");
    }
}
