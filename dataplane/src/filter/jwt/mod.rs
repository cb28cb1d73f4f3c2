//! `jwt`: bearer tokens verified against a JWKS (remote or from a Secret) or against the
//! jwt credentials of the Route namespace's Consumers (selected by `keyClaim`).
//!
//! Verification is synchronous (jsonwebtoken with aws-lc-rs) and runs once per token: the
//! result is kept in a bounded [`TokenCache`] until `exp` or until the key set changes. The
//! `algorithms` allowlist is checked against the token header and the key family (an RSA
//! key never verifies an HS* token), `none` is not an algorithm, `exp` is required, and
//! `exp`, `nbf` and `iat` are checked with `clockSkew`; `iss` and `aud` when configured.

pub mod cache;
pub mod jwks;
pub mod keys;

use std::sync::Arc;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::{Map, Value};

pub use cache::{TokenCache, Verified};
pub use jwks::{JwksRegistry, JwksSettings, RemoteJwks};
pub use keys::{JwtKey, KeyError, KeyFamily, KeySet, parse_algorithm};

use super::auth::AuthFailure;
use super::consumers::{ConsumerEntry, ConsumerStore};
use crate::snapshot::ObjectKey;

/// Tokens longer than this are refused without parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default size of the verified-token cache of one plugin.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Where a jwt plugin's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS given inline (from a Secret).
    Static(Arc<KeySet>),
    /// A remote JWKS, fetched and refreshed in the background.
    Remote(Arc<RemoteJwks>),
    /// The jwt credentials of the namespace's Consumers, selected by `keyClaim`.
    Consumers,
}

/// The compiled configuration of one `jwt` plugin in one namespace.
#[derive(Debug)]
pub struct JwtSettings {
    /// The Plugin object (for logs).
    pub source: ObjectKey,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Accepted `aud` values (empty = not checked).
    pub audiences: Vec<String>,
    /// The keys.
    pub keys: KeySource,
    /// Claim selecting a consumer credential (with [`KeySource::Consumers`]).
    pub key_claim: String,
    /// Claim naming a Consumer by username.
    pub consumer_claim: Option<String>,
    /// Claims copied to upstream headers.
    pub claims_to_headers: Vec<(String, HeaderName)>,
    /// Send `Authorization` upstream.
    pub forward_authorization: bool,
    /// Tolerance for `exp`, `nbf`, `iat`.
    pub clock_skew: Duration,
    /// The consumers of the Route's namespace.
    pub consumers: Arc<ConsumerStore>,
}

/// A compiled `jwt` plugin, ready for requests.
#[derive(Debug)]
pub struct JwtAuth {
    settings: JwtSettings,
    validations: Box<[(Algorithm, Validation)]>,
    skew: u64,
    cache: TokenCache,
}

/// The bearer token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn failure(error: &jsonwebtoken::errors::Error) -> AuthFailure {
    match error.kind() {
        ErrorKind::InvalidSignature => AuthFailure::BadSignature,
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthFailure::Expired,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthFailure::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthFailure::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthFailure::AlgorithmNotAllowed
        }
        ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => AuthFailure::BadSignature,
        _ => AuthFailure::Malformed,
    }
}

fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(claim_text).collect();
            Some(parts.join(","))
        }
        Value::Object(_) => Some(value.to_string()),
        Value::Null => None,
    }
}

impl JwtAuth {
    /// Compiles the plugin: one `Validation` per allowed algorithm, built once.
    pub fn new(settings: JwtSettings) -> JwtAuth {
        let skew = settings.clock_skew.as_secs();
        let validations = settings
            .algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = skew;
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_required_spec_claims(&["exp"]);
                if let Some(iss) = &settings.issuer {
                    v.set_issuer(&[iss]);
                }
                if settings.audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&settings.audiences);
                }
                (*alg, v)
            })
            .collect();
        JwtAuth { settings, validations, skew, cache: TokenCache::new(DEFAULT_CACHE_CAPACITY) }
    }

    /// The compiled settings.
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// The verified-token cache (for tests and metrics).
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    fn validation(&self, alg: Algorithm) -> Result<&Validation, AuthFailure> {
        self.validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or(AuthFailure::AlgorithmNotAllowed)
    }

    fn generation(&self) -> u64 {
        match &self.settings.keys {
            KeySource::Remote(r) => r.generation(),
            KeySource::Static(_) | KeySource::Consumers => 0,
        }
    }

    /// The cached verification of `token`, if it is still valid: the synchronous fast path
    /// of [`verify`](Self::verify) (a hot client never builds the verification future).
    pub fn cached(&self, token: &str) -> Option<Arc<Verified>> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let now = jsonwebtoken::get_current_timestamp();
        self.cache.get(token, now, self.skew, self.generation())
    }

    /// Verifies a bearer token (cached), returning what it established.
    pub async fn verify(&self, token: &str) -> Result<Arc<Verified>, AuthFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::Oversized);
        }
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(hit) = self.cache.get(token, now, self.skew, self.generation()) {
            return Ok(hit);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        self.validation(header.alg)?;
        let (generation, verified) = match &self.settings.keys {
            KeySource::Static(set) => (0, self.verify_with_set(token, &header, set, now)?),
            KeySource::Consumers => (0, self.verify_with_consumers(token, &header, now)?),
            KeySource::Remote(remote) => {
                let mut set = remote.keys().await.ok_or(AuthFailure::KeysUnavailable)?;
                if let Some(kid) = header.kid.as_deref()
                    && !set.has_kid(kid)
                {
                    set = remote.refetch_for_unknown_kid().await;
                }
                let generation = remote.generation();
                (generation, self.verify_with_set(token, &header, &set, now)?)
            }
        };
        let verified = Arc::new(Verified { generation, ..verified });
        self.cache.insert(token, Arc::clone(&verified), now, self.skew);
        Ok(verified)
    }

    fn verify_with_set(
        &self,
        token: &str,
        header: &Header,
        set: &KeySet,
        now: u64,
    ) -> Result<Verified, AuthFailure> {
        let validation = self.validation(header.alg)?;
        let mut last = None;
        for key in set.candidates(header.kid.as_deref(), header.alg) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => return self.finish(data.claims, None, now),
                Err(e) => match failure(&e) {
                    AuthFailure::BadSignature => last = Some(AuthFailure::BadSignature),
                    other => return Err(other),
                },
            }
        }
        if let Some(reason) = last {
            return Err(reason);
        }
        // No candidate: the kid is unknown, or no key of the algorithm's family exists.
        let family = KeyFamily::of(header.alg);
        let kid_known = header.kid.as_deref().is_some_and(|k| set.has_kid(k));
        if kid_known || !set.keys.iter().any(|k| k.family == family) {
            Err(AuthFailure::AlgorithmNotAllowed)
        } else {
            Err(AuthFailure::UnknownKey)
        }
    }

    fn verify_with_consumers(
        &self,
        token: &str,
        header: &Header,
        now: u64,
    ) -> Result<Verified, AuthFailure> {
        let validation = self.validation(header.alg)?;
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)
            .map_err(|_| AuthFailure::Malformed)?;
        let selector = unverified
            .claims
            .get(&self.settings.key_claim)
            .and_then(Value::as_str)
            .ok_or(AuthFailure::UnknownKey)?;
        let mut last = AuthFailure::UnknownKey;
        for cred in self.settings.consumers.jwt_keys(selector) {
            if !cred.key.accepts(header.alg) {
                last = AuthFailure::AlgorithmNotAllowed;
                continue;
            }
            match jsonwebtoken::decode::<Map<String, Value>>(token, &cred.key.key, validation) {
                Ok(data) => return self.finish(data.claims, Some(&cred.consumer), now),
                Err(e) => match failure(&e) {
                    AuthFailure::BadSignature => last = AuthFailure::BadSignature,
                    other => return Err(other),
                },
            }
        }
        Err(last)
    }

    /// Checks `iat`, resolves the consumer and renders the claim headers.
    fn finish(
        &self,
        claims: Map<String, Value>,
        owner: Option<&Arc<ConsumerEntry>>,
        now: u64,
    ) -> Result<Verified, AuthFailure> {
        if let Some(iat) = claims.get("iat").and_then(Value::as_f64)
            && iat > (now + self.skew) as f64
        {
            return Err(AuthFailure::IssuedInFuture);
        }
        let exp = claims.get("exp").and_then(Value::as_f64).map_or(0, |e| e as u64);
        let consumer = match (owner, &self.settings.consumer_claim) {
            (Some(owner), _) => Some(Arc::clone(owner)),
            (None, Some(claim)) => {
                let name = claims.get(claim).and_then(Value::as_str);
                let found = name.and_then(|n| self.settings.consumers.by_username(n));
                Some(Arc::clone(found.ok_or(AuthFailure::UnknownConsumer)?))
            }
            (None, None) => None,
        };
        let headers = self
            .settings
            .claims_to_headers
            .iter()
            .filter_map(|(claim, header)| {
                let text = claim_text(claims.get(claim)?)?;
                Some((header.clone(), HeaderValue::from_str(&text).ok()?))
            })
            .collect();
        Ok(Verified { exp, generation: 0, consumer, headers })
    }

    /// Removes every header named in `claimsToHeaders` (clients cannot forge them).
    pub fn strip_claim_headers(&self, headers: &mut HeaderMap) {
        for (_, name) in &self.settings.claims_to_headers {
            headers.remove(name);
        }
    }

    /// Sets the claim headers and removes `Authorization` unless forwarding is configured.
    pub fn forward(&self, request: &mut http::request::Parts, verified: &Verified) {
        if !self.settings.forward_authorization {
            request.headers.remove(AUTHORIZATION);
        }
        for (name, value) in verified.headers.iter() {
            request.headers.insert(name.clone(), value.clone());
        }
    }
}
