//! The request attribute ConsistentHash hashes: the client IP, a header, a cookie or a
//! query parameter. Computed once per request, only for backends hashing on something.
//! A missing header or query parameter gives no hash (a random endpoint); a missing cookie
//! gets a fresh random value, hashed now and set on the response so the client sticks.

use std::net::IpAddr;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use super::maglev::hash_key;
use crate::upstream::policy::{HashCookie, HashOn};

/// What a request hashes to.
#[derive(Debug, Default)]
pub struct RequestHash {
    /// The hash; `None`: a random endpoint.
    pub hash: Option<u64>,
    /// `Set-Cookie` for the response, when weir made the cookie's value.
    pub set_cookie: Option<HeaderValue>,
}

/// The hash of a request under `on`.
pub fn request_hash(
    on: &HashOn,
    headers: &HeaderMap,
    query: Option<&str>,
    client: IpAddr,
) -> RequestHash {
    match on {
        HashOn::SourceIp => {
            let hash = match client.to_canonical() {
                IpAddr::V4(v4) => hash_key(&v4.octets()),
                IpAddr::V6(v6) => hash_key(&v6.octets()),
            };
            RequestHash { hash: Some(hash), set_cookie: None }
        }
        HashOn::Header(name) => RequestHash {
            hash: headers.get(name).map(|v| hash_key(v.as_bytes())),
            set_cookie: None,
        },
        HashOn::QueryParam(name) => RequestHash {
            hash: query_value(query, name).map(|v| hash_key(v.as_bytes())),
            set_cookie: None,
        },
        HashOn::Cookie(cookie) => match cookie_value(headers, &cookie.name) {
            Some(value) => RequestHash { hash: Some(hash_key(value)), set_cookie: None },
            None => {
                let value = format!("{:016x}", fastrand::u64(..));
                RequestHash {
                    hash: Some(hash_key(value.as_bytes())),
                    set_cookie: set_cookie(cookie, &value),
                }
            }
        },
    }
}

/// The raw (still percent-encoded) value of the first query parameter `name`.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(COOKIE).iter().find_map(|header| {
        header.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
    })
}

/// `name=value; Path=path; Max-Age=ttl; HttpOnly`.
fn set_cookie(cookie: &HashCookie, value: &str) -> Option<HeaderValue> {
    let mut text = format!("{}={value}; Path={}", cookie.name, cookie.path);
    if let Some(ttl) = cookie.ttl {
        text.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    text.push_str("; HttpOnly");
    HeaderValue::try_from(text).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Duration;

    use super::*;

    fn cookie_on() -> HashOn {
        HashOn::Cookie(HashCookie {
            name: "weir-affinity".into(),
            ttl: Some(Duration::from_secs(3600)),
            path: "/".into(),
        })
    }

    #[test]
    fn a_missing_cookie_is_made_and_set() {
        let ip = IpAddr::from([10, 0, 0, 1]);
        let made = request_hash(&cookie_on(), &HeaderMap::new(), None, ip);
        let set = made.set_cookie.unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("weir-affinity="), "{set}");
        assert!(set.ends_with("; Path=/; Max-Age=3600; HttpOnly"), "{set}");
        // The client sends it back: the same hash, nothing set.
        let value = set.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&format!("a=b; {value}; c=d")).unwrap());
        let back = request_hash(&cookie_on(), &headers, None, ip);
        assert_eq!(back.hash, made.hash);
        assert!(back.set_cookie.is_none());
    }

    #[test]
    fn headers_queries_and_ips_hash_their_value() {
        let ip = IpAddr::from([10, 0, 0, 1]);
        let on = HashOn::Header(http::HeaderName::from_static("x-user"));
        let mut headers = HeaderMap::new();
        assert_eq!(request_hash(&on, &headers, None, ip).hash, None);
        headers.insert("x-user", HeaderValue::from_static("alice"));
        assert_eq!(request_hash(&on, &headers, None, ip).hash, Some(hash_key(b"alice")));
        let on = HashOn::QueryParam("u".into());
        assert_eq!(request_hash(&on, &headers, Some("a=1&u=bob"), ip).hash, Some(hash_key(b"bob")));
        assert_eq!(request_hash(&on, &headers, Some("uu=bob"), ip).hash, None);
        let v6 = "::ffff:10.0.0.1".parse().unwrap();
        let a = request_hash(&HashOn::SourceIp, &headers, None, ip).hash;
        assert_eq!(a, request_hash(&HashOn::SourceIp, &headers, None, v6).hash);
    }
}
