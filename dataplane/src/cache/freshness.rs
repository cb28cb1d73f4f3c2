//! RFC 9111 as a shared cache: which requests may be answered from the cache, which
//! responses may be stored, and for how long they are fresh.
//!
//! Kept conservative on purpose: a response that names a request header in `Vary` that the
//! Plugin does not key on, `Vary: *`, `Set-Cookie`, `Cache-Control: private | no-store |
//! no-cache`, and an answer to a request with credentials (unless `public`) are never
//! stored. Freshness: `s-maxage`, else `max-age`, else `Expires` − `Date`, else the
//! Plugin's `ttl`, always capped by `ttl`; the upstream's `Age` is subtracted. The `Date`
//! header is not used to estimate age (origins' clocks and second-granular dates would
//! make short lifetimes flap).

use std::time::{Duration, SystemTime};

use http::header::{AGE, CACHE_CONTROL, DATE, EXPIRES, PRAGMA, RANGE, SET_COOKIE, VARY};
use http::{HeaderMap, StatusCode};

use super::CachePlugin;

/// The `Cache-Control` directives the cache acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (with or without field names: never stored either way).
    pub no_cache: bool,
    /// `private` (with or without field names).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `max-age=N`.
    pub max_age: Option<u64>,
    /// `s-maxage=N`.
    pub s_maxage: Option<u64>,
}

impl Directives {
    /// Every `Cache-Control` header of `headers`, comma-separated directives, names
    /// case-insensitive. An unparsable number makes that directive absent... except that a
    /// malformed `max-age` is treated as stale (0), as RFC 9111 §4.2.1 recommends.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut d = Directives::default();
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                if name.eq_ignore_ascii_case("no-store") {
                    d.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    d.no_cache = true;
                } else if name.eq_ignore_ascii_case("private") {
                    d.private = true;
                } else if name.eq_ignore_ascii_case("public") {
                    d.public = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    d.max_age = Some(seconds());
                } else if name.eq_ignore_ascii_case("s-maxage") {
                    d.s_maxage = Some(seconds());
                }
            }
        }
        d
    }
}

/// What the client's request asks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCacheability {
    /// Look the entry up and store the answer.
    Normal,
    /// `Cache-Control: no-cache` or `Pragma: no-cache`: go upstream (a revalidation), and
    /// store the fresh answer.
    Revalidate,
    /// `Cache-Control: no-store`, or a `Range` request: neither answered from nor stored.
    Bypass,
}

/// How the request's headers let the cache take part.
pub fn request(headers: &HeaderMap) -> RequestCacheability {
    if headers.contains_key(RANGE) {
        return RequestCacheability::Bypass;
    }
    if !headers.contains_key(CACHE_CONTROL) && !headers.contains_key(PRAGMA) {
        return RequestCacheability::Normal;
    }
    let d = Directives::of(headers);
    if d.no_store {
        return RequestCacheability::Bypass;
    }
    let pragma = headers
        .get_all(PRAGMA)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("no-cache")));
    if d.no_cache || pragma || d.max_age == Some(0) {
        return RequestCacheability::Revalidate;
    }
    RequestCacheability::Normal
}

/// Why a response is not stored (for debug logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The status is not in the Plugin's `statuses`.
    Status,
    /// The response sets a cookie.
    SetCookie,
    /// `Cache-Control: private`.
    Private,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: no-cache`.
    NoCache,
    /// The request carried credentials and the response is not `public`.
    Credentials,
    /// `Vary: *`, or `Vary` names a request header that is not one of `varyHeaders`.
    Vary,
    /// Already stale when received, and no stale window.
    Expired,
}

/// How long a stored response stays fresh, from the moment it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Fresh for this long after storing.
    pub fresh_for: Duration,
    /// Then servable stale (while revalidating) for this long.
    pub stale_for: Duration,
    /// The response's age when received (its `Age` header), in seconds.
    pub initial_age: u64,
}

impl Freshness {
    /// The entry's whole life in the store.
    pub fn lifetime(&self) -> Duration {
        self.fresh_for + self.stale_for
    }
}

/// Whether a response with `status` and `headers` to a request with (`credentials`) or
/// without credentials may be stored by `plugin`, and for how long.
pub fn storable(
    plugin: &CachePlugin,
    status: StatusCode,
    headers: &HeaderMap,
    credentials: bool,
    now: SystemTime,
) -> Result<Freshness, NotStored> {
    if !plugin.statuses.contains(&status.as_u16()) {
        return Err(NotStored::Status);
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    let d = Directives::of(headers);
    if d.no_store {
        return Err(NotStored::NoStore);
    }
    if d.no_cache {
        return Err(NotStored::NoCache);
    }
    if d.private {
        return Err(NotStored::Private);
    }
    if credentials && !d.public {
        return Err(NotStored::Credentials);
    }
    if !vary_is_keyed(plugin, headers) {
        return Err(NotStored::Vary);
    }
    let lifetime = match (d.s_maxage, d.max_age) {
        (Some(s), _) | (None, Some(s)) => Duration::from_secs(s),
        (None, None) => match expires(headers, now) {
            Some(lifetime) => lifetime,
            None => plugin.ttl,
        },
    }
    .min(plugin.ttl);
    let initial_age = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let fresh_for = lifetime.saturating_sub(Duration::from_secs(initial_age));
    if fresh_for.is_zero() && plugin.stale_while_revalidate.is_zero() {
        return Err(NotStored::Expired);
    }
    Ok(Freshness { fresh_for, stale_for: plugin.stale_while_revalidate, initial_age })
}

/// `Expires` − `Date` (or − now without a `Date`); an invalid `Expires` means already
/// expired (RFC 9111 §5.3). `None` without an `Expires`.
fn expires(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(EXPIRES)?;
    let date =
        |v: &http::HeaderValue| v.to_str().ok().and_then(|s| httpdate::parse_http_date(s).ok());
    let Some(expires) = date(value) else { return Some(Duration::ZERO) };
    let base = headers.get(DATE).and_then(date).unwrap_or(now);
    Some(expires.duration_since(base).unwrap_or(Duration::ZERO))
}

/// True when every header `Vary` names is one the Plugin keys on (and none is `*`).
fn vary_is_keyed(plugin: &CachePlugin, headers: &HeaderMap) -> bool {
    for value in headers.get_all(VARY) {
        let Ok(value) = value.to_str() else { return false };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" || !plugin.vary.iter().any(|h| h.as_str().eq_ignore_ascii_case(name)) {
                return false;
            }
        }
    }
    true
}
