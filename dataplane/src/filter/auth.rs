//! The authentication filter: `jwt` and/or `keyAuth` on one rule, identity headers upstream,
//! then `extAuth` (see [`super::extauth`]) when the rule has it: both must admit the request.
//!
//! Order of work on a request: every header named in `claimsToHeaders` is removed (the proxy
//! already removed every `X-Consumer-*` header for all routes), then the first method whose
//! credential is present decides (JWT before key); a present but invalid credential is a 401
//! without falling through to the other method. On success the credential is removed unless
//! forwarding is configured, and `X-Consumer-Username` plus the claim headers are set.
//! The reason of a failure goes to the debug log and the `weir_auth_failures_total` metric,
//! never to the client, and the credential itself is never logged.

use std::sync::Arc;

use http::HeaderName;

use super::extauth::ExtAuth;
use super::jwt::JwtAuth;
use super::keyauth::KeyAuth;
use super::{Flow, RequestContext};
use crate::proxy::ProxyError;

/// `X-Consumer-Username`, sent upstream for an authenticated consumer.
pub const X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");

/// Why authentication failed: a metric label and log field, never sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No credential in the request.
    Missing,
    /// Not a well-formed token (segments, base64, JSON).
    Malformed,
    /// Larger than the token size limit.
    Oversized,
    /// `alg` not in the plugin's allowlist, or not matching the key type.
    AlgorithmNotAllowed,
    /// No key for the token's `kid` (or `keyClaim` value).
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is in the past (beyond the clock skew), or missing.
    Expired,
    /// `nbf` is in the future (beyond the clock skew).
    NotYetValid,
    /// `iat` is in the future (beyond the clock skew).
    IssuedInFuture,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// No `aud` value is one of the configured audiences.
    WrongAudience,
    /// `consumerClaim` names no Consumer of the Route's namespace.
    UnknownConsumer,
    /// The API key belongs to no Consumer of the Route's namespace.
    UnknownApiKey,
    /// The JWKS could not be fetched yet, so no key is known.
    KeysUnavailable,
}

impl AuthFailure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Oversized => "oversized",
            AuthFailure::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::IssuedInFuture => "issued_in_future",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::UnknownConsumer => "unknown_consumer",
            AuthFailure::UnknownApiKey => "unknown_api_key",
            AuthFailure::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// Which `WWW-Authenticate` challenges a 401 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// `Bearer realm="weir"` (jwt), with `error="invalid_token"` when `invalid_token`.
    pub bearer: bool,
    /// `ApiKey realm="weir"` (keyAuth).
    pub api_key: bool,
    /// A token was presented and rejected (RFC 6750 §3.1).
    pub invalid_token: bool,
}

/// The `authentication` phase of one rule: `jwt` and/or `keyAuth` (either credential
/// suffices), then `extAuth` when configured (which must admit the request as well).
#[derive(Debug)]
pub struct Authenticate {
    /// JWT authentication, when a `jwt` plugin applies.
    pub jwt: Option<Arc<JwtAuth>>,
    /// API-key authentication, when a `keyAuth` plugin applies.
    pub key_auth: Option<Arc<KeyAuth>>,
    /// Forward authentication, when an `extAuth` plugin applies.
    pub ext_auth: Option<Arc<ExtAuth>>,
}

impl Authenticate {
    fn challenge(&self, invalid_token: bool) -> Challenge {
        Challenge { bearer: self.jwt.is_some(), api_key: self.key_auth.is_some(), invalid_token }
    }

    fn reject(&self, reason: AuthFailure, invalid_token: bool) -> ProxyError {
        crate::metrics::auth_failure(reason);
        ProxyError::Unauthorized { challenge: self.challenge(invalid_token), reason }
    }

    /// Authenticates the request, or says why not. `Ok(Flow::Respond)` is the auth
    /// service's own refusal (extAuth), returned to the client as it was sent.
    pub async fn authenticate(
        &self,
        request: &mut http::request::Parts,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Flow, ProxyError> {
        if let Some(jwt) = &self.jwt {
            jwt.strip_claim_headers(&mut request.headers);
        }
        if let Some(ext) = &self.ext_auth {
            ext.strip_upstream_headers(&mut request.headers);
        }
        if self.jwt.is_some() || self.key_auth.is_some() {
            self.credential(request, ctx).await?;
        }
        match &self.ext_auth {
            Some(ext) => ext.check(request, ctx).await,
            None => Ok(Flow::Continue),
        }
    }

    /// `jwt` / `keyAuth`: the first method whose credential is present decides.
    async fn credential(
        &self,
        request: &mut http::request::Parts,
        ctx: &mut RequestContext<'_>,
    ) -> Result<(), ProxyError> {
        if let Some(jwt) = &self.jwt
            && let Some(token) = super::jwt::bearer_token(&request.headers)
        {
            let verified = match jwt.cached(token) {
                Some(hit) => hit,
                None => match jwt.verify(token).await {
                    Ok(v) => v,
                    Err(reason) => return Err(self.reject(reason, true)),
                },
            };
            jwt.forward(request, &verified);
            ctx.authenticated = true;
            ctx.consumer = verified.consumer.clone();
        } else if let Some(key_auth) = &self.key_auth
            && let Some(found) = key_auth.find(request)
        {
            let consumer = match found {
                Ok(c) => Arc::clone(c),
                Err(reason) => return Err(self.reject(reason, false)),
            };
            key_auth.remove_credential(request);
            ctx.authenticated = true;
            ctx.consumer = Some(consumer);
        } else {
            return Err(self.reject(AuthFailure::Missing, false));
        }
        if let Some(value) = ctx.consumer.as_ref().and_then(|c| c.username_header.clone()) {
            request.headers.insert(X_CONSUMER_USERNAME, value);
        }
        Ok(())
    }
}
