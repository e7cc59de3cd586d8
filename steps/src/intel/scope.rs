//! Which addresses may be sent to an external provider.
//!
//! Only public addresses are. Sending an internal address to a third party leaks the shape of
//! our network and can never give a useful answer. The documentation ranges (192.0.2.0/24,
//! 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) count as public on purpose: demos and tests
//! use them, and the demo blocklist lists them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where an address lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Routable on the internet: sent to external providers.
    Public,
    /// Inside our own networks (RFC 1918, unique-local, loopback, link-local): never sent;
    /// `benign` unless a local list says otherwise.
    Private(&'static str),
    /// Not a host on the internet (shared CGNAT space, multicast, reserved, unspecified,
    /// broadcast): never sent; `unknown` unless a local list says otherwise.
    Special(&'static str),
}

impl Scope {
    pub fn is_public(self) -> bool {
        self == Scope::Public
    }
}

/// Classify an address; IPv4-mapped IPv6 addresses are classified as their IPv4 address.
pub fn classify(ip: IpAddr) -> Scope {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Scope {
    const PRIVATE: &[([u8; 4], u32, &str)] = &[
        ([10, 0, 0, 0], 8, "private address (RFC 1918)"),
        ([172, 16, 0, 0], 12, "private address (RFC 1918)"),
        ([192, 168, 0, 0], 16, "private address (RFC 1918)"),
        ([127, 0, 0, 0], 8, "private address (loopback)"),
        ([169, 254, 0, 0], 16, "private address (link-local)"),
    ];
    const SPECIAL: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 32, "unspecified address"),
        ([0, 0, 0, 0], 8, "reserved address (this network)"),
        ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
        (
            [192, 0, 0, 0],
            24,
            "reserved address (IETF protocol assignments)",
        ),
        ([198, 18, 0, 0], 15, "reserved address (benchmarking)"),
        ([224, 0, 0, 0], 4, "multicast address"),
        ([255, 255, 255, 255], 32, "broadcast address"),
        ([240, 0, 0, 0], 4, "reserved address"),
    ];
    for (net, prefix, reason) in PRIVATE {
        if in_v4(ip, *net, *prefix) {
            return Scope::Private(reason);
        }
    }
    for (net, prefix, reason) in SPECIAL {
        if in_v4(ip, *net, *prefix) {
            return Scope::Special(reason);
        }
    }
    Scope::Public
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(ip) & mask == net & mask
}

fn classify_v6(ip: Ipv6Addr) -> Scope {
    if ip.is_unspecified() {
        return Scope::Special("unspecified address");
    }
    if ip.is_loopback() {
        return Scope::Private("private address (loopback)");
    }
    const PRIVATE: &[(u128, u32, &str)] = &[
        (0xfc00 << 112, 7, "private address (unique-local)"),
        (0xfe80 << 112, 10, "private address (link-local)"),
        // Deprecated site-local: still internal wherever it is used.
        (0xfec0 << 112, 10, "private address (site-local)"),
    ];
    const SPECIAL: &[(u128, u32, &str)] = &[
        (0xff00 << 112, 8, "multicast address"),
        (0x0100 << 112, 64, "reserved address (discard-only)"),
        // IPv4-compatible and other addresses in ::/8 (the mapped form is handled above).
        (0, 8, "reserved address"),
    ];
    for (net, prefix, reason) in PRIVATE {
        if in_v6(ip, *net, *prefix) {
            return Scope::Private(reason);
        }
    }
    for (net, prefix, reason) in SPECIAL {
        if in_v6(ip, *net, *prefix) {
            return Scope::Special(reason);
        }
    }
    Scope::Public
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let table = [
            ("8.8.8.8", "public"),
            ("1.1.1.1", "public"),
            ("203.0.113.7", "public"),
            ("198.51.100.66", "public"),
            ("192.0.2.1", "public"),
            ("2001:db8::1", "public"),
            ("2606:4700::1111", "public"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("172.32.0.1", "public"),
            ("192.168.1.1", "private"),
            ("127.0.0.1", "private"),
            ("169.254.169.254", "private"),
            ("::1", "private"),
            ("fe80::1", "private"),
            ("fd00::1", "private"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:8.8.8.8", "public"),
            ("0.0.0.0", "special"),
            ("0.1.2.3", "special"),
            ("100.64.0.1", "special"),
            ("100.127.255.255", "special"),
            ("100.128.0.1", "public"),
            ("192.0.0.8", "special"),
            ("198.18.0.1", "special"),
            ("224.0.0.1", "special"),
            ("239.255.255.250", "special"),
            ("240.0.0.1", "special"),
            ("255.255.255.255", "special"),
            ("::", "special"),
            ("ff02::1", "special"),
            ("100::1", "special"),
        ];
        for (ip, expected) in table {
            let parsed: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
            let got = match classify(parsed) {
                Scope::Public => "public",
                Scope::Private(_) => "private",
                Scope::Special(_) => "special",
            };
            assert_eq!(got, expected, "{ip}");
        }
    }
}
