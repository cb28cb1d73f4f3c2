//! What a counter is keyed by, and the pure helpers that build the key of a request.
//!
//! - `ClientIP`: the peer address, or, when the peer is a trusted proxy, the right-most
//!   address in `X-Forwarded-For` that is not a trusted proxy (the left part of that header
//!   is whatever the client wrote, so only the entries our own proxies appended count).
//! - `Consumer`: the authenticated consumer; anonymous requests fall back to the client IP.
//! - `Header`: the value of a header; a request without it falls back to the client IP (so
//!   leaving the header out never escapes the limit, and never shares one global bucket).
//! - `Route`: one counter for everything the plugin applies to.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// `X-Forwarded-For`, as a constant (no name parsing per request).
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The key of one counter within a limiter. The variants never collide with each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// One shared counter (`key: Route`).
    Route,
    /// A client address.
    Ip(IpAddr),
    /// A consumer's username.
    Consumer(Arc<str>),
    /// A header value (raw bytes).
    Header(Bytes),
}

impl LimitKey {
    /// The key's part of a Redis key: `route`, `ip:<addr>`, `c:<name>`, `h:<bytes>`.
    pub fn redis_suffix(&self) -> Vec<u8> {
        match self {
            LimitKey::Route => b"route".to_vec(),
            LimitKey::Ip(ip) => format!("ip:{ip}").into_bytes(),
            LimitKey::Consumer(name) => [b"c:", name.as_bytes()].concat(),
            LimitKey::Header(value) => [b"h:", value.as_ref()].concat(),
        }
    }
}

/// Where the key comes from (API.md `rateLimit.key`, plus `header`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum KeySource {
    /// The client address (default).
    #[default]
    ClientIp,
    /// The authenticated consumer, else the client address.
    Consumer,
    /// The value of this header, else the client address.
    Header(HeaderName),
    /// One counter for the route.
    Route,
}

/// CIDRs of the proxies in front of the gateway whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Box<[IpNet]>,
}

impl TrustedProxies {
    /// Trusts these networks (an empty list trusts nobody: the peer is the client).
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        TrustedProxies { nets: nets.into_iter().collect() }
    }

    /// Parses CIDRs such as `10.0.0.0/8` or single addresses such as `192.0.2.7`.
    pub fn parse<'a>(
        cidrs: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ipnet::AddrParseError> {
        let mut nets = Vec::new();
        for cidr in cidrs {
            let cidr = cidr.trim();
            let net = match cidr.parse::<IpNet>() {
                Ok(net) => net,
                Err(error) => match cidr.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(error),
                },
            };
            nets.push(net);
        }
        Ok(TrustedProxies { nets: nets.into() })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// No proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, as a dual-stack socket reports them) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a request from `peer` carrying these `X-Forwarded-For` values (in
/// the order the headers appear). Walks the list from the right while the hop that sent it
/// is a trusted proxy; an unparsable entry stops the walk at the last address known good.
pub fn client_ip<'a>(
    peer: SocketAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut client = canonical(peer.ip());
    if trusted.is_empty() || !trusted.contains(client) {
        return client;
    }
    for value in forwarded_for.rev() {
        let Ok(text) = value.to_str() else { return client };
        for entry in text.rsplit(',') {
            let Some(ip) = parse_forwarded_entry(entry) else { return client };
            client = canonical(ip);
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]:443`, `1.2.3.4:80`.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    entry.parse::<SocketAddr>().ok().map(|s| s.ip())
}

impl KeySource {
    /// The key of a request: `peer` is the TCP peer, `headers` the request headers (before
    /// the proxy adds its own `X-Forwarded-For` hop), `consumer` the authenticated consumer.
    pub fn key(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        consumer: Option<&Arc<str>>,
        trusted: &TrustedProxies,
    ) -> LimitKey {
        // Without a trusted proxy the peer is the client: no header lookup at all.
        let ip = || {
            if trusted.is_empty() {
                return LimitKey::Ip(canonical(peer.ip()));
            }
            LimitKey::Ip(client_ip(peer, headers.get_all(&X_FORWARDED_FOR).iter(), trusted))
        };
        match self {
            KeySource::Route => LimitKey::Route,
            KeySource::ClientIp => ip(),
            KeySource::Consumer => match consumer {
                Some(name) => LimitKey::Consumer(name.clone()),
                None => ip(),
            },
            KeySource::Header(name) => match headers.get(name) {
                Some(value) if !value.is_empty() => {
                    LimitKey::Header(Bytes::copy_from_slice(value.as_bytes()))
                }
                _ => ip(),
            },
        }
    }
}
