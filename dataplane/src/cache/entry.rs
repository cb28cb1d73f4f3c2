//! A stored response and the answers made from it: the full response (`Hit`, `Stale`),
//! a `304 Not Modified` to a matching conditional request, and the binary layout the
//! Redis store keeps.
//!
//! An answer is built from clones: the body is a `Bytes` (a reference count, no copy) and
//! the headers one `HeaderMap` clone.

use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{
    AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use super::freshness::Freshness;
use crate::proxy::ProxyBody;

/// One stored response.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The upstream's status.
    pub status: StatusCode,
    /// The upstream's headers (hop-by-hop and `Age` removed, `Content-Length` set).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When it was stored (wall clock: Redis entries are shared between processes).
    pub stored: SystemTime,
    /// Freshness as computed when stored.
    pub freshness: Freshness,
}

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    /// Within its freshness lifetime.
    Fresh,
    /// Past it, within the stale-while-revalidate window.
    Stale,
    /// Past both.
    Expired,
}

impl Entry {
    /// An entry of a response with `status` and `headers` (which it cleans up) and `body`.
    pub fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        stored: SystemTime,
        freshness: Freshness,
    ) -> Self {
        headers.remove(AGE);
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        Entry { status, headers, body, stored, freshness }
    }

    fn elapsed(&self, now: SystemTime) -> Duration {
        now.duration_since(self.stored).unwrap_or(Duration::ZERO)
    }

    /// Fresh, stale or expired at `now`.
    pub fn age_at(&self, now: SystemTime) -> Age {
        let elapsed = self.elapsed(now);
        if elapsed < self.freshness.fresh_for {
            Age::Fresh
        } else if elapsed < self.freshness.lifetime() {
            Age::Stale
        } else {
            Age::Expired
        }
    }

    /// Time left in the store at `now`.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.freshness.lifetime().saturating_sub(self.elapsed(now))
    }

    /// Bytes used by the entry (the store's weigher).
    pub fn weight(&self) -> usize {
        let headers: usize =
            self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
        headers + self.body.len() + 96
    }

    /// The answer to a request with `method` and `headers` at `now`: the entry itself
    /// (no body for HEAD) with its `Age`, or `304` when the request's validators match.
    pub fn respond(
        &self,
        method: &Method,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Response<ProxyBody> {
        let age = self.freshness.initial_age + self.elapsed(now).as_secs();
        if self.status == StatusCode::OK && self.not_modified(headers) {
            let mut response = Response::new(ProxyBody::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            let out = response.headers_mut();
            for name in [CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, LAST_MODIFIED, VARY]
            {
                for value in self.headers.get_all(&name) {
                    out.append(name.clone(), value.clone());
                }
            }
            out.insert(AGE, HeaderValue::from(age));
            return response;
        }
        let body = if method == Method::HEAD {
            ProxyBody::empty()
        } else {
            ProxyBody::full(self.body.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response.headers_mut().insert(AGE, HeaderValue::from(age));
        response
    }

    /// RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` (weak comparison) wins over
    /// `If-Modified-Since`.
    fn not_modified(&self, request: &HeaderMap) -> bool {
        if request.contains_key(IF_NONE_MATCH) {
            let Some(etag) = self.headers.get(ETAG).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
            let ours = weak(etag);
            return request
                .get_all(IF_NONE_MATCH)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|list| list.split(',').any(|t| t.trim() == "*" || weak(t) == ours));
        }
        let since = request.get(IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok());
        let modified = self.headers.get(LAST_MODIFIED).and_then(|v| v.to_str().ok());
        match (since, modified) {
            (Some(since), Some(modified)) => {
                match (httpdate::parse_http_date(since), httpdate::parse_http_date(modified)) {
                    (Ok(since), Ok(modified)) => modified <= since,
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// The Redis value: a version byte, status, stored time (ms since the epoch), initial
    /// age, fresh and stale windows (ms), the headers (name and value lengths, bytes), then
    /// the body.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.weight());
        out.put_u8(1);
        out.put_u16(self.status.as_u16());
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        out.put_u64(millis(self.stored.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()));
        out.put_u64(self.freshness.initial_age);
        out.put_u64(millis(self.freshness.fresh_for));
        out.put_u64(millis(self.freshness.stale_for));
        out.put_u32(self.headers.len() as u32);
        for (name, value) in &self.headers {
            out.put_u16(name.as_str().len() as u16);
            out.put_slice(name.as_str().as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out.put_slice(&self.body);
        out.freeze()
    }

    /// The entry of a Redis value, `None` when it is not one this version wrote.
    pub fn decode(mut value: Bytes) -> Option<Self> {
        if value.remaining() < 1 + 2 + 8 * 4 + 4 || value.get_u8() != 1 {
            return None;
        }
        let status = StatusCode::from_u16(value.get_u16()).ok()?;
        let stored = SystemTime::UNIX_EPOCH + Duration::from_millis(value.get_u64());
        let initial_age = value.get_u64();
        let fresh_for = Duration::from_millis(value.get_u64());
        let stale_for = Duration::from_millis(value.get_u64());
        let count = value.get_u32() as usize;
        let mut headers = HeaderMap::with_capacity(count.min(256));
        for _ in 0..count {
            if value.remaining() < 2 {
                return None;
            }
            let len = usize::from(value.get_u16());
            if value.remaining() < len + 4 {
                return None;
            }
            let name = HeaderName::from_bytes(&value.split_to(len)).ok()?;
            let len = value.get_u32() as usize;
            if value.remaining() < len {
                return None;
            }
            let v = HeaderValue::from_maybe_shared(value.split_to(len)).ok()?;
            headers.append(name, v);
        }
        Some(Entry {
            status,
            headers,
            body: value,
            stored,
            freshness: Freshness { fresh_for, stale_for, initial_age },
        })
    }
}
