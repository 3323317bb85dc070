//! Which network addresses and host names a webhook may reach.
//!
//! One decision, used by the API when a consumer registers a URL and by the delivery
//! worker before every attempt (for an address literal) and after DNS resolution (for
//! every address a name resolves to). Anything that is not a public unicast address is
//! refused: the ranges of IANA's IPv4 and IPv6 special-purpose address registries,
//! multicast, and the IPv6 forms that carry or reach an IPv4 address (mapped,
//! compatible, NAT64, 6to4), whose embedded address could be internal.
//!
//! This module must never allow a range because it is "probably fine": a webhook
//! target is chosen by whoever registers it, and an internal address reached from the
//! worker is a request forged on the operator's network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 ranges that are not public unicast: IANA's special-purpose registry (RFC 6890
/// and its updates), plus multicast and the limited broadcast.
pub const SPECIAL_IPV4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "this network"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private use"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared address space (CGNAT)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link local"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private use"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (
        Ipv4Addr::new(192, 0, 2, 0),
        24,
        "documentation (TEST-NET-1)",
    ),
    (Ipv4Addr::new(192, 31, 196, 0), 24, "AS112-v4"),
    (Ipv4Addr::new(192, 52, 193, 0), 24, "AMT"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private use"),
    (
        Ipv4Addr::new(192, 175, 48, 0),
        24,
        "direct delegation AS112",
    ),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation (TEST-NET-2)",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation (TEST-NET-3)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "limited broadcast"),
];

/// IPv6 ranges refused whatever follows the prefix. The forms that embed an IPv4
/// address and are decided by it (`::ffff:0:0/96`, `64:ff9b::/96`) are handled in
/// [`special_purpose`], not here.
pub const SPECIAL_IPV6: &[(Ipv6Addr, u8, &str)] = &[
    // Covers `::` and `::1` too; `::a.b.c.d` is deprecated and may reach 127.0.0.1.
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96, "IPv4-compatible"),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard only",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0),
        64,
        "dummy prefix",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    // Deprecated (RFC 7526); the relay it reaches is chosen by the embedded address,
    // which may be internal.
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16, "6to4"),
    (
        Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0),
        48,
        "direct delegation AS112",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation",
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        "segment routing (SRv6) SIDs",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique local",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link local"),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site local (deprecated)",
    ),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The IPv4 address carried in the low 32 bits of an IPv6 address.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32)
}

/// Why `ip` is not a public unicast address, or `None` when it is one.
///
/// IPv6 outside 2000::/3 (the only global unicast block IANA has allocated) is refused
/// as well, so a range added to the registry there later is refused before this table
/// learns of it.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => SPECIAL_IPV4
            .iter()
            .find(|(net, len, _)| in_v4(v4, *net, *len))
            .map(|(_, _, name)| *name),
        IpAddr::V6(v6) => {
            // Mapped (`::ffff:a.b.c.d`) and the well-known NAT64 prefix reach the
            // embedded IPv4 address: they are exactly as public as it is.
            let mapped = Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0);
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
            if in_v6(v6, mapped, 96) || in_v6(v6, nat64, 96) {
                return special_purpose(IpAddr::V4(low_v4(v6)));
            }
            if let Some((_, _, name)) = SPECIAL_IPV6
                .iter()
                .find(|(net, len, _)| in_v6(v6, *net, *len))
            {
                return Some(name);
            }
            let global_unicast = Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0);
            if !in_v6(v6, global_unicast, 3) {
                return Some("not global unicast");
            }
            None
        }
    }
}

/// True for addresses a webhook must not reach unless private targets are allowed.
pub fn is_private(ip: IpAddr) -> bool {
    special_purpose(ip).is_some()
}

/// Why a host name (as it appears in a URL, not an address literal) names this
/// machine or a local network, or `None`. A trailing dot (`localhost.`) is the same
/// name, fully qualified; case does not matter.
pub fn special_host_name(host: &str) -> Option<&'static str> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let is = |suffix: &str| name == suffix || name.ends_with(&format!(".{suffix}"));
    if name.is_empty() {
        Some("empty host name")
    } else if is("localhost") {
        Some("loopback name")
    } else if is("local") || is("home.arpa") || is("internal") {
        Some("local network name")
    } else if is("invalid") {
        Some("reserved name")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    fn last_v4(net: Ipv4Addr, len: u8) -> Ipv4Addr {
        let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        Ipv4Addr::from(u32::from(net) | host)
    }

    fn last_v6(net: Ipv6Addr, len: u8) -> Ipv6Addr {
        let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        Ipv6Addr::from(u128::from(net) | host)
    }

    #[test]
    fn first_and_last_address_of_every_ipv4_range_are_refused() {
        for (net, len, name) in SPECIAL_IPV4 {
            for ip in [*net, last_v4(*net, *len)] {
                assert!(is_private(IpAddr::V4(ip)), "{ip} ({name})");
                // The same address in every IPv6 form that reaches it.
                let o = ip.octets();
                let nat64 = Ipv6Addr::new(
                    0x64,
                    0xff9b,
                    0,
                    0,
                    0,
                    0,
                    u16::from_be_bytes([o[0], o[1]]),
                    u16::from_be_bytes([o[2], o[3]]),
                );
                assert!(is_private(IpAddr::V6(ip.to_ipv6_mapped())), "mapped {ip}");
                assert!(
                    is_private(IpAddr::V6(ip.to_ipv6_compatible())),
                    "compat {ip}"
                );
                assert!(is_private(IpAddr::V6(nat64)), "nat64 {nat64}");
            }
        }
    }

    #[test]
    fn first_and_last_address_of_every_ipv6_range_are_refused() {
        for (net, len, name) in SPECIAL_IPV6 {
            for ip in [*net, last_v6(*net, *len)] {
                assert!(is_private(IpAddr::V6(ip)), "{ip} ({name})");
            }
        }
    }

    #[test]
    fn named_cases_are_refused() {
        for ip in [
            v4("127.0.0.1"),
            v4("0.0.0.0"),
            v4("10.255.255.255"),
            v4("100.64.0.1"),
            v4("169.254.169.254"),
            v4("172.31.255.255"),
            v4("192.0.0.8"),
            v4("192.0.0.170"),
            v4("192.168.1.1"),
            v4("198.18.0.1"),
            v4("198.19.255.255"),
            v4("224.0.0.1"),
            v4("255.255.255.255"),
            v6("::"),
            v6("::1"),
            v6("::127.0.0.1"),
            v6("::ffff:127.0.0.1"),
            v6("::ffff:10.0.0.1"),
            v6("64:ff9b::127.0.0.1"),
            v6("64:ff9b::a9fe:a9fe"),
            v6("64:ff9b:1::8.8.8.8"),
            v6("2002:7f00:1::"),
            v6("2002:808:808::1"),
            v6("2001::1"),
            v6("2001:db8::1"),
            v6("fc00::1"),
            v6("fd12:3456::1"),
            v6("fe80::1"),
            v6("fec0::1"),
            v6("feff::1"),
            v6("ff02::1"),
            v6("100::1"),
            v6("4000::1"),
        ] {
            assert!(is_private(ip), "{ip} accepted");
        }
    }

    #[test]
    fn public_neighbours_are_accepted() {
        for ip in [
            v4("1.1.1.1"),
            v4("8.8.8.8"),
            v4("9.255.255.255"),
            v4("11.0.0.0"),
            v4("100.63.255.255"),
            v4("100.128.0.0"),
            v4("172.15.255.255"),
            v4("172.32.0.0"),
            v4("191.255.255.255"),
            v4("192.0.1.0"),
            v4("198.17.255.255"),
            v4("198.20.0.0"),
            v4("223.255.255.255"),
            v6("2606:4700:4700::1111"),
            v6("2a00:1450:4001::1"),
            v6("2001:200::1"),
            v6("2003::1"),
            v6("::ffff:8.8.8.8"),
            v6("64:ff9b::8.8.8.8"),
        ] {
            assert_eq!(special_purpose(ip), None, "{ip} refused");
        }
    }

    #[test]
    fn local_names_are_refused_with_or_without_the_trailing_dot() {
        for host in [
            "localhost",
            "localhost.",
            "LOCALHOST.",
            "a.b.localhost",
            "api.localhost.",
            "printer.local",
            "router.home.arpa.",
            "metadata.google.internal",
            "x.invalid",
            ".",
        ] {
            assert!(special_host_name(host).is_some(), "{host} accepted");
        }
        for host in [
            "hooks.example.com",
            "hooks.example.com.",
            "localhost.example.com",
            "notlocal",
        ] {
            assert_eq!(special_host_name(host), None, "{host} refused");
        }
    }
}
