//! The cache key: the Plugin, host, method, path, query, the `varyHeaders` values and the
//! consumer. Two consumers never share an entry; anonymous requests are their own bucket,
//! and so are authenticated requests without a Consumer (their answers are stored only
//! when `public`).

use std::sync::Arc;

use http::{HeaderMap, Method};

use super::CachePlugin;
use crate::filter::RequestContext;

/// One entry's identity. `host` and `path` are separate fields so the admin purge can
/// select every entry of a host and path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The Plugin (`namespace/name`): two Plugins never share entries.
    pub scope: Arc<str>,
    /// The host the client asked for, lowercased, without port.
    pub host: Box<str>,
    /// The request path.
    pub path: Box<str>,
    /// Method, query, the vary values and the consumer, `\0`-separated.
    pub rest: Box<[u8]>,
}

impl CacheKey {
    /// The key of a request: `method` is the one the entry is stored under (GET for a HEAD
    /// served from GET entries).
    pub fn new(
        plugin: &CachePlugin,
        host: &str,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        ctx: &RequestContext<'_>,
    ) -> Self {
        let mut rest = Vec::with_capacity(64);
        rest.extend_from_slice(method.as_str().as_bytes());
        rest.push(0);
        if let Some(q) = query {
            rest.push(b'?');
            rest.extend_from_slice(q.as_bytes());
        }
        for name in plugin.vary.iter() {
            rest.push(0);
            // Every value, in order; an absent header differs from an empty one.
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                rest.push(1);
            }
            for (i, v) in values.enumerate() {
                if i > 0 {
                    rest.push(b',');
                }
                rest.extend_from_slice(v.as_bytes());
            }
        }
        rest.push(0);
        match (&ctx.consumer, ctx.authenticated) {
            (Some(c), _) => {
                rest.extend_from_slice(b"c:");
                rest.extend_from_slice(c.key.namespace.as_bytes());
                rest.push(b'/');
                rest.extend_from_slice(c.key.name.as_bytes());
            }
            (None, true) => rest.extend_from_slice(b"authenticated"),
            (None, false) => rest.extend_from_slice(b"anonymous"),
        }
        CacheKey {
            scope: Arc::clone(&plugin.id),
            host: normal_host(host).into(),
            path: path.into(),
            rest: rest.into(),
        }
    }

    /// Bytes used by the key (the store's weigher).
    pub fn weight(&self) -> usize {
        self.scope.len() + self.host.len() + self.path.len() + self.rest.len() + 48
    }

    /// A stable digest of the whole key (Redis key names).
    pub fn digest(&self) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [self.scope.as_bytes(), self.host.as_bytes(), self.path.as_bytes(), &self.rest]
        {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        hex(ctx.finish().as_ref())
    }
}

/// A host as keys hold it: lowercased, port removed.
pub fn normal_host(host: &str) -> String {
    let without_port = match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    without_port.to_ascii_lowercase()
}

/// The digest naming the purge index of a host and path (Redis).
pub fn host_path_digest(host: &str, path: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(host.as_bytes());
    ctx.update(&[0]);
    ctx.update(path.as_bytes());
    hex(ctx.finish().as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
