//! `ipRestriction`: allow and deny lists of addresses and CIDRs, answered 403.
//!
//! The client address is the one rate limiting uses: the TCP peer, or with
//! `--trusted-proxies` the right-most `X-Forwarded-For` entry that is not a trusted proxy.
//! IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as a dual-stack socket reports IPv4
//! clients) are the IPv4 address. A deny entry always wins; with a non-empty allow list,
//! an address in neither list is denied.
//!
//! The lists are aggregated at compile time (overlapping and adjacent networks merged,
//! sorted), so a check is two binary searches whatever the list length.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::RequestContext;
use crate::proxy::ProxyError;

/// A set of networks, aggregated and sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSet {
    v4: Box<[Ipv4Net]>,
    v6: Box<[Ipv6Net]>,
}

impl NetSet {
    /// The set of these networks (IPv4-mapped IPv6 networks count as IPv4 ones).
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push(n),
                IpNet::V6(n) => match mapped_v4(n) {
                    Some(n4) => v4.push(n4),
                    None => v6.push(n),
                },
            }
        }
        NetSet { v4: Ipv4Net::aggregate(&v4).into(), v6: Ipv6Net::aggregate(&v6).into() }
    }

    /// No network at all.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(ip) => {
                // Sorted and disjoint: the candidate is the last network starting at or
                // before `ip`.
                let i = self.v4.partition_point(|n| n.network() <= ip);
                i > 0 && self.v4[i - 1].contains(&ip)
            }
            IpAddr::V6(ip) => {
                let i = self.v6.partition_point(|n| n.network() <= ip);
                i > 0 && self.v6[i - 1].contains(&ip)
            }
        }
    }
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) as the IPv4 network `a.b.c.d/(n-96)`.
fn mapped_v4(net: Ipv6Net) -> Option<Ipv4Net> {
    let v4 = net.network().to_ipv4_mapped()?;
    let len = net.prefix_len().checked_sub(96)?;
    Ipv4Net::new(v4, len).ok()
}

/// Parses an address (`10.0.0.1`, `2001:db8::1`) or a CIDR (`10.0.0.0/8`, `2001:db8::/32`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| format!("{s:?} is not an IP address or CIDR"))
}

/// A compiled `ipRestriction` plugin.
#[derive(Debug, Clone, Default)]
pub struct IpRestriction {
    /// Allowed networks; empty = every address not denied.
    pub allow: NetSet,
    /// Denied networks.
    pub deny: NetSet,
}

impl IpRestriction {
    /// Whether `ip` may pass.
    pub fn allows(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }

    /// The request phase: 403 for a denied client. A request whose client address is
    /// unknown (no peer: only in unit tests) is denied.
    pub fn check(&self, ctx: &RequestContext<'_>) -> Result<(), ProxyError> {
        match ctx.client_ip {
            Some(ip) if self.allows(ip) => Ok(()),
            _ => Err(ProxyError::Forbidden { reason: "client address denied by ipRestriction" }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn set(nets: &[&str]) -> NetSet {
        NetSet::new(nets.iter().map(|n| parse_net(n).unwrap()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sets_match_v4_v6_and_mapped_addresses() {
        let s = set(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "10.1.0.0/16"]);
        assert!(s.contains(ip("10.255.1.2")));
        assert!(s.contains(ip("::ffff:10.0.0.1")), "mapped address is IPv4");
        assert!(s.contains(ip("192.168.1.7")));
        assert!(!s.contains(ip("192.168.1.8")));
        assert!(!s.contains(ip("11.0.0.0")));
        assert!(!s.contains(ip("9.255.255.255")));
        assert!(s.contains(ip("2001:db8:ffff::1")));
        assert!(!s.contains(ip("2001:db9::1")));
        assert!(!s.contains(ip("::1")));
        // A mapped network is an IPv4 network.
        let m = set(&["::ffff:172.16.0.0/108"]);
        assert!(m.contains(ip("172.16.3.4")) && !m.contains(ip("172.32.0.1")));
        // Host bits are ignored, as in a CIDR.
        assert!(set(&["10.1.2.3/8"]).contains(ip("10.9.9.9")));
        assert!(parse_net("10.0.0.0/33").is_err() && parse_net("nope").is_err());
    }

    #[test]
    fn deny_wins_and_allow_lists_close_everything_else() {
        let r = IpRestriction { allow: set(&["10.0.0.0/8"]), deny: set(&["10.0.0.66"]) };
        assert!(r.allows(ip("10.0.0.1")));
        assert!(!r.allows(ip("10.0.0.66")));
        assert!(!r.allows(ip("127.0.0.1")));
        let deny_only =
            IpRestriction { allow: NetSet::default(), deny: set(&["::1", "127.0.0.0/8"]) };
        assert!(!deny_only.allows(ip("::1")) && !deny_only.allows(ip("127.0.0.1")));
        assert!(deny_only.allows(ip("::2")));
        let everyone =
            IpRestriction { allow: NetSet::default(), deny: set(&["0.0.0.0/0", "::/0"]) };
        assert!(!everyone.allows(ip("8.8.8.8")) && !everyone.allows(ip("2001:db8::1")));
    }
}
