//! `keyAuth`: an API key from a header (default `x-api-key`) or a query parameter, matched
//! against the hashed keys of the Route namespace's Consumers.

use std::sync::Arc;

use http::HeaderName;
use http::uri::PathAndQuery;

use super::auth::AuthFailure;
use super::consumers::{ConsumerEntry, ConsumerStore};

/// The default header carrying the key.
pub const DEFAULT_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");

/// A compiled `keyAuth` plugin for one namespace.
#[derive(Debug)]
pub struct KeyAuth {
    /// Header carrying the key.
    pub header: HeaderName,
    /// Query parameter carrying the key, when configured.
    pub query: Option<Box<str>>,
    /// Send the key upstream (`forwardCredential`).
    pub forward_credential: bool,
    /// The consumers of the Route's namespace.
    pub consumers: Arc<ConsumerStore>,
}

fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

impl KeyAuth {
    /// `None` when the request carries no key; else the consumer, or why the key failed.
    pub fn find(
        &self,
        request: &http::request::Parts,
    ) -> Option<Result<&Arc<ConsumerEntry>, AuthFailure>> {
        let presented = match request.headers.get(&self.header) {
            Some(v) => v.as_bytes(),
            None => {
                let name = self.query.as_deref()?;
                query_value(request.uri.query()?, name)?.as_bytes()
            }
        };
        if presented.is_empty() {
            return None;
        }
        Some(self.consumers.find_api_key(presented).ok_or(AuthFailure::UnknownApiKey))
    }

    /// Removes the key from the request unless `forwardCredential` is set.
    pub fn remove_credential(&self, request: &mut http::request::Parts) {
        if self.forward_credential {
            return;
        }
        request.headers.remove(&self.header);
        let Some(name) = self.query.as_deref() else { return };
        let Some(query) = request.uri.query() else { return };
        if query_value(query, name).is_none() {
            return;
        }
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| kv.split_once('=').map_or(*kv, |(k, _)| k) != name)
            .collect();
        let path = request.uri.path();
        let target =
            if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
        let mut parts = std::mem::take(&mut request.uri).into_parts();
        parts.path_and_query = PathAndQuery::try_from(target).ok();
        if let Ok(uri) = http::Uri::from_parts(parts) {
            request.uri = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::filter::consumers::hash_api_key;
    use crate::snapshot::ObjectKey;

    fn key_auth(forward: bool) -> KeyAuth {
        let c = ConsumerEntry::new(ObjectKey::new("ns", "c"), "c", None, Arc::from([]));
        let mut store = ConsumerStore::default();
        store.add_consumer(&c);
        store.add_api_key(hash_api_key(b"s3cret"), &c);
        KeyAuth {
            header: DEFAULT_KEY_HEADER,
            query: Some("apikey".into()),
            forward_credential: forward,
            consumers: Arc::new(store),
        }
    }

    fn parts(uri: &str, key: Option<&str>) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(k) = key {
            b = b.header("x-api-key", k);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn header_and_query_keys_are_found_and_removed() {
        let ka = key_auth(false);
        let mut p = parts("/x?a=1", Some("s3cret"));
        assert_eq!(ka.find(&p).unwrap().unwrap().username.as_ref(), "c");
        ka.remove_credential(&mut p);
        assert!(p.headers.get("x-api-key").is_none());

        let mut p = parts("/x?a=1&apikey=s3cret&b=2", None);
        assert!(ka.find(&p).unwrap().is_ok());
        ka.remove_credential(&mut p);
        assert_eq!(p.uri.to_string(), "/x?a=1&b=2");

        let p = parts("/x?apikey=wrong", None);
        assert_eq!(ka.find(&p).unwrap().unwrap_err(), AuthFailure::UnknownApiKey);
        assert!(ka.find(&parts("/x", None)).is_none());

        let ka = key_auth(true);
        let mut p = parts("/x?apikey=s3cret", None);
        ka.remove_credential(&mut p);
        assert_eq!(p.uri.to_string(), "/x?apikey=s3cret");
    }
}
