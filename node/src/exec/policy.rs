//! Which addresses HTTP actions may call.
//!
//! ```text
//!  url host ──IP literal──────────────► HttpPolicy::check ──denied──► Failed, no connection
//!           └─name──► DNS (resolver hook) ──every address──┘
//! ```
//!
//! A ScheduledJob author must not be able to make the node call its cloud
//! metadata service (credentials) or link-local services. The deny list is
//! checked on the addresses the connection will actually use, so a DNS name
//! pointing at a denied address is refused too.

use std::net::IpAddr;

use ipnet::IpNet;

/// Targets HTTP actions may not reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpPolicy {
    pub deny: Vec<IpNet>,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        Self {
            deny: default_deny(),
        }
    }
}

impl HttpPolicy {
    /// Refuses an address inside any denied network. An IPv4-mapped IPv6
    /// address (`::ffff:169.254.169.254`) is checked as the IPv4 address it
    /// reaches.
    pub fn check(&self, addr: &IpAddr) -> Result<(), String> {
        let mapped = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        for net in &self.deny {
            if net.contains(addr) || mapped.is_some_and(|m| net.contains(&m)) {
                return Err(format!(
                    "{addr} is in {net}, which the node's deny list (--http-deny) refuses"
                ));
            }
        }
        Ok(())
    }
}

/// Link-local and cloud-metadata addresses, and the unspecified addresses
/// (connecting to `0.0.0.0` or `::` reaches the local host).
pub fn default_deny() -> Vec<IpNet> {
    [
        "169.254.0.0/16", // IPv4 link-local, including 169.254.169.254 (AWS, GCP, Azure metadata)
        "fe80::/10",      // IPv6 link-local
        "100.100.100.200/32", // Alibaba Cloud metadata
        "fd00:ec2::254/128", // AWS metadata over IPv6
        "0.0.0.0/8",      // "this network"; 0.0.0.0 reaches the local host
        "::/128",         // the IPv6 unspecified address, likewise
    ]
    .iter()
    .map(|s| s.parse().expect("valid built-in CIDR"))
    .collect()
}

/// Loopback addresses: denied by the Helm chart's defaults
/// (`--http-deny-loopback`), allowed for a single-machine user.
pub fn loopback() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|s| s.parse().expect("valid built-in CIDR"))
        .collect()
}

/// Parses comma-separated CIDRs or bare IP addresses
/// (`10.0.0.0/8, 192.168.1.1, fd00::/8`). Empty items are ignored, so an
/// empty string denies nothing.
pub fn parse_cidrs(s: &str) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let net = if let Ok(net) = item.parse::<IpNet>() {
            net.trunc()
        } else if let Ok(ip) = item.parse::<IpAddr>() {
            IpNet::from(ip)
        } else {
            return Err(format!(
                "{item:?} is neither a CIDR (like 10.0.0.0/8 or fd00::/8) nor an IP address"
            ));
        };
        nets.push(net);
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_policy_refuses_metadata_and_link_local_addresses() {
        let policy = HttpPolicy::default();
        for denied in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "100.100.100.200",
            "fd00:ec2::254",
            "0.0.0.0",
            "::",
        ] {
            let err = policy.check(&ip(denied)).expect_err(denied);
            assert!(err.contains(denied) && err.contains("--http-deny"), "{err}");
        }
    }

    #[test]
    fn default_policy_allows_loopback_and_ordinary_addresses() {
        let policy = HttpPolicy::default();
        for allowed in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "100.100.100.201",
            "2001:db8::1",
            "fd00:ec2::253",
        ] {
            assert_eq!(policy.check(&ip(allowed)), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn loopback_list_refuses_both_loopback_families() {
        let policy = HttpPolicy { deny: loopback() };
        assert!(policy.check(&ip("127.0.0.1")).is_err());
        assert!(policy.check(&ip("127.255.0.9")).is_err());
        assert!(policy.check(&ip("::1")).is_err());
        assert!(policy.check(&ip("128.0.0.1")).is_ok());
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_is_checked_as_ipv4() {
        let policy = HttpPolicy::default();
        let err = policy.check(&ip("::ffff:169.254.169.254")).unwrap_err();
        assert!(err.contains("169.254.0.0/16"), "{err}");
        let policy = HttpPolicy { deny: loopback() };
        assert!(policy.check(&ip("::ffff:127.0.0.1")).is_err());
    }

    #[test]
    fn parse_cidrs_accepts_cidrs_and_bare_addresses() {
        let nets = parse_cidrs(" 10.0.0.0/8, 192.168.1.1 ,fd00::/8,::1,").unwrap();
        let want: Vec<IpNet> = ["10.0.0.0/8", "192.168.1.1/32", "fd00::/8", "::1/128"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(nets, want);
        assert_eq!(parse_cidrs("").unwrap(), vec![]);
    }

    #[test]
    fn parse_cidrs_normalises_host_bits() {
        assert_eq!(
            parse_cidrs("10.1.2.3/8").unwrap(),
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn parse_cidrs_names_the_bad_item() {
        let err = parse_cidrs("10.0.0.0/8, metadata.google.internal, ::1").unwrap_err();
        assert!(err.contains("\"metadata.google.internal\""), "{err}");
        let err = parse_cidrs("10.0.0.0/33").unwrap_err();
        assert!(err.contains("\"10.0.0.0/33\""), "{err}");
    }
}
