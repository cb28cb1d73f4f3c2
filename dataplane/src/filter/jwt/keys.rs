//! Verification keys: one [`JwtKey`] (a decoding key with its family and optional `kid` and
//! `alg`), and a [`KeySet`] parsed from a JWKS document.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Key families: an algorithm verifies only with a key of its family (no RS→HS confusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// HMAC secrets (HS*).
    Hmac,
    /// RSA public keys (RS*, PS*).
    Rsa,
    /// EC public keys (ES*).
    Ec,
    /// Ed25519 public keys (EdDSA).
    Ed,
}

impl KeyFamily {
    /// The family an algorithm needs.
    pub fn of(alg: Algorithm) -> KeyFamily {
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyFamily::Hmac,
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyFamily::Rsa,
            Algorithm::ES256 | Algorithm::ES384 => KeyFamily::Ec,
            Algorithm::EdDSA => KeyFamily::Ed,
        }
    }
}

/// Why a key could not be built (for status messages; never contains key material).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The algorithm name is unknown or `none`.
    #[error("unsupported algorithm {0:?}")]
    Algorithm(String),
    /// The key material does not parse for the algorithm.
    #[error("the key is not a valid {0} key")]
    Invalid(&'static str),
    /// The JWKS document does not parse.
    #[error("not a JWKS document: {0}")]
    Jwks(String),
}

/// Parses an algorithm name of the API (`RS256`, …, `EdDSA`); `none` is refused.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    name.trim().parse::<Algorithm>().map_err(|_| KeyError::Algorithm(name.to_owned()))
}

/// One verification key.
#[derive(Clone)]
pub struct JwtKey {
    /// `kid` from the JWKS.
    pub kid: Option<Box<str>>,
    /// The only algorithm this key may verify, when pinned (JWK `alg`, or a consumer's
    /// credential `algorithm`).
    pub alg: Option<Algorithm>,
    /// The key family.
    pub family: KeyFamily,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// A consumer credential: an HMAC `secret` for HS*, else a PEM `publicKey`.
    pub fn from_credential(algorithm: &str, material: &[u8]) -> Result<JwtKey, KeyError> {
        let alg = parse_algorithm(algorithm)?;
        let family = KeyFamily::of(alg);
        let key = match family {
            KeyFamily::Hmac if !material.is_empty() => Ok(DecodingKey::from_secret(material)),
            KeyFamily::Hmac => Err(KeyError::Invalid("HMAC")),
            KeyFamily::Rsa => {
                DecodingKey::from_rsa_pem(material).map_err(|_| KeyError::Invalid("RSA"))
            }
            KeyFamily::Ec => {
                DecodingKey::from_ec_pem(material).map_err(|_| KeyError::Invalid("EC"))
            }
            KeyFamily::Ed => {
                DecodingKey::from_ed_pem(material).map_err(|_| KeyError::Invalid("Ed25519"))
            }
        }?;
        Ok(JwtKey { kid: None, alg: Some(alg), family, key })
    }

    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.family == KeyFamily::of(alg) && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// The keys of a JWKS document.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// The usable keys; entries that failed to parse are skipped (and counted).
    pub keys: Vec<JwtKey>,
    /// Entries skipped because they were not usable verification keys.
    pub skipped: usize,
}

impl KeySet {
    /// Parses a JWKS JSON document. Keys with `use` other than `sig` are skipped.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, KeyError> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| KeyError::Jwks(e.to_string()))?;
        let mut out = KeySet::default();
        for jwk in &set.keys {
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
                AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
                AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Ed,
                AlgorithmParameters::OctetKey(_) => KeyFamily::Hmac,
            };
            let sig_use = jwk
                .common
                .public_key_use
                .as_ref()
                .is_none_or(|u| matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature));
            let alg = jwk.common.key_algorithm.and_then(|a| parse_algorithm(&a.to_string()).ok());
            let pinned_ok = alg.is_none_or(|a| KeyFamily::of(a) == family);
            match DecodingKey::from_jwk(jwk) {
                Ok(key) if sig_use && pinned_ok => out.keys.push(JwtKey {
                    kid: jwk.common.key_id.as_deref().map(Box::from),
                    alg,
                    family,
                    key,
                }),
                _ => out.skipped += 1,
            }
        }
        Ok(out)
    }

    /// The keys that may verify a token with `kid` and `alg`: the key with that `kid`, or
    /// every key of the right family when the token has no `kid`.
    pub fn candidates<'s>(
        &'s self,
        kid: Option<&'s str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'s JwtKey> + 's {
        self.keys.iter().filter(move |k| {
            k.accepts(alg)
                && match kid {
                    Some(kid) => k.kid.as_deref() == Some(kid),
                    None => true,
                }
        })
    }

    /// True when a key has this `kid` (whatever its algorithm).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn families_pins_and_unusable_entries() {
        let doc = br#"{"keys":[
            {"kty":"oct","kid":"h","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0","alg":"HS256"},
            {"kty":"oct","kid":"enc","use":"enc","k":"c2VjcmV0"},
            {"kty":"oct","kid":"mismatch","alg":"RS256","k":"c2VjcmV0"}
        ]}"#;
        let set = KeySet::from_jwks(doc).unwrap();
        assert_eq!((set.keys.len(), set.skipped), (1, 2));
        let key = &set.keys[0];
        assert!(key.accepts(Algorithm::HS256));
        assert!(!key.accepts(Algorithm::HS512), "pinned by the JWK's alg");
        assert!(!key.accepts(Algorithm::RS256), "wrong family");
        assert_eq!(set.candidates(Some("h"), Algorithm::HS256).count(), 1);
        assert_eq!(set.candidates(Some("x"), Algorithm::HS256).count(), 0);
        assert_eq!(set.candidates(None, Algorithm::HS256).count(), 1);
        assert!(parse_algorithm("none").is_err());
        assert!(JwtKey::from_credential("RS256", b"not a pem").is_err());
        assert!(JwtKey::from_credential("HS256", b"").is_err());
        assert!(KeySet::from_jwks(b"{").is_err());
        let debug = format!("{key:?}");
        assert!(!debug.contains("c2Vj") && !debug.contains("secret"), "{debug}");
    }
}
