//! Which addresses a callback may reach: the guard against server-side request forgery.
//!
//! A callback URL comes from a client, so calling it must never reach inside the network labelq
//! runs in. By default only `https` to public unicast addresses is called. Refused always: the
//! unspecified, link-local (the cloud metadata service at 169.254.169.254 and fd00:ec2::254
//! among them), multicast, broadcast, documentation and reserved ranges. Refused unless
//! [`TargetPolicy::allow_private`] (local development and tests): loopback, the private ranges
//! (10/8, 172.16/12, 192.168/16, fc00::/7), CGNAT (100.64/10), and plain `http`.
//!
//! Addresses embedding an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible, NAT64
//! `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the IPv4 address inside. Literal hosts are
//! judged as the URL parser normalises them (`2852039166`, `0x7f.1` and `[::ffff:169.254.169.254]`
//! are the addresses they spell). Names are judged by every address they resolve to, and the
//! connection goes to those checked addresses only (the client adapter's resolver).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::domain::CallbackUrl;

/// What callbacks may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Allows loopback, private and CGNAT addresses, and plain `http`.
    pub allow_private: bool,
}

/// Why a callback target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

enum Class {
    Public,
    /// Reachable only inside a network: allowed by `allow_private`.
    Internal(&'static str),
    /// Never a callback target.
    Forbidden(&'static str),
}

/// Alibaba Cloud's metadata service, inside the CGNAT range.
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Class::Forbidden("an unspecified address")
    } else if ip.is_link_local() {
        Class::Forbidden("a link-local address (the metadata service's range)")
    } else if ip.is_multicast() || ip.is_broadcast() {
        Class::Forbidden("a multicast or broadcast address")
    } else if ip == ALIBABA_METADATA {
        Class::Forbidden("a metadata service's address")
    } else if ip.is_documentation() || a >= 240 || (a == 198 && (b & 0xfe) == 18) || (a == 192 && b == 0 && c == 0) {
        Class::Forbidden("a reserved address")
    } else if ip.is_loopback() {
        Class::Internal("a loopback address")
    } else if ip.is_private() {
        Class::Internal("a private address")
    } else if a == 100 && (b & 0xc0) == 64 {
        Class::Internal("a shared (CGNAT) address")
    } else {
        Class::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return classify_v4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
    }
    // NAT64, well-known (64:ff9b::/96) and local-use (64:ff9b:1::/48), and SIIT (::ffff:0:0/96).
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] || s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return classify_v4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
    }
    if s[0] == 0x2002 {
        return classify_v4(Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32));
    }
    if ip.is_unspecified() {
        Class::Forbidden("an unspecified address")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Class::Forbidden("a link-local address")
    } else if ip.is_multicast() {
        Class::Forbidden("a multicast address")
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Class::Forbidden("the metadata service's address")
    } else if s[0] == 0x2001 && s[1] == 0xdb8 {
        Class::Forbidden("a documentation address")
    } else if s[0] == 0x2001 && s[1] == 0 {
        Class::Forbidden("a Teredo tunnel address")
    } else if ip.is_loopback() {
        Class::Internal("a loopback address")
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        Class::Internal("a unique or site local (private) address")
    } else {
        Class::Public
    }
}

impl TargetPolicy {
    /// Whether a callback may connect to `ip`; a refusal names the address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.check(ip).map_err(|why| Refusal(format!("{ip} is {why}")))
    }

    /// Whether a callback may connect to `ip`, which `host` resolved to. A refusal does not name
    /// the address: it is shown to whoever submitted the URL, who must not learn the internal
    /// network's addresses from it.
    pub fn check_resolved(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        self.check(ip).map_err(|why| Refusal(format!("{host} resolves to {why}")))
    }

    fn check(&self, ip: IpAddr) -> Result<(), String> {
        let class = match ip {
            IpAddr::V4(v4) => classify_v4(v4),
            IpAddr::V6(v6) => classify_v6(v6),
        };
        match class {
            Class::Public => Ok(()),
            Class::Internal(_) if self.allow_private => Ok(()),
            Class::Internal(what) => Err(format!("{what}; callbacks go to public addresses")),
            Class::Forbidden(what) => Err(format!("{what}; never a callback target")),
        }
    }

    /// What can be judged without resolving: the scheme, and the host when it is an address.
    pub fn check_url(&self, url: &CallbackUrl) -> Result<(), Refusal> {
        let url = url.url();
        if url.scheme() != "https" && !self.allow_private {
            return Err(Refusal("callbacks use https".into()));
        }
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(Refusal("a callback URL needs a host".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy { allow_private: false };
    const LOCAL: TargetPolicy = TargetPolicy { allow_private: true };

    fn url(s: &str) -> CallbackUrl {
        CallbackUrl::parse(s).unwrap()
    }

    #[test]
    fn every_literal_spelling_of_an_internal_address_is_refused() {
        for refused in [
            "https://127.0.0.1/",
            "https://0x7f.1/",
            "https://2130706433/",
            "https://0177.0.0.1/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://100.64.0.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://2852039166/",
            "https://[::ffff:169.254.169.254]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::127.0.0.1]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[2002:a9fe:a9fe::]/",
            "https://[fd00:ec2::254]/",
            "https://[::1]/",
            "https://[fe80::1]/",
            "https://[fc00::1]/",
            "https://[ff02::1]/",
            "https://0.0.0.0/",
            "https://[::]/",
            "https://224.0.0.1/",
            "https://255.255.255.255/",
            "https://240.0.0.1/",
            "https://192.0.0.8/",
            "https://[::ffff:0:7f00:1]/",
            "https://[64:ff9b:1::7f00:1]/",
            "https://[2001::1]/",
            "https://[fec0::1]/",
        ] {
            assert!(STRICT.check_url(&url(refused)).is_err(), "{refused} was allowed");
        }
        for allowed in
            ["https://93.184.215.14/", "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/", "https://example.com/"]
        {
            assert_eq!(STRICT.check_url(&url(allowed)), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn plain_http_is_refused_unless_private_targets_are_allowed() {
        assert!(STRICT.check_url(&url("http://example.com/")).is_err());
        assert_eq!(LOCAL.check_url(&url("http://example.com/")), Ok(()));
    }

    #[test]
    fn allowing_private_targets_never_allows_the_metadata_service() {
        for allowed in ["http://127.0.0.1:8080/", "http://10.0.0.2/", "http://[::1]/", "http://[fd12::1]/"] {
            assert_eq!(LOCAL.check_url(&url(allowed)), Ok(()), "{allowed}");
        }
        for refused in [
            "http://169.254.169.254/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://0.0.0.0/",
        ] {
            assert!(LOCAL.check_url(&url(refused)).is_err(), "{refused}");
        }
    }
}
