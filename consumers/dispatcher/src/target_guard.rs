//! Where webhooks may go: target URLs checked when the config loads (scheme, no userinfo) and
//! every resolved address checked at connect time by a DNS resolver of our own, so a name that
//! rebinds to a link-local or cloud-metadata address cannot slip through. `allow_networks`
//! opens ranges; `public_only` also refuses private, loopback and shared ranges.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// An address range `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a single address.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Link-local and cloud metadata: refused unless allowed explicitly.
const ALWAYS_REFUSED: &[&str] = &[
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "0.0.0.0/8",
];
/// Refused too under `public_only`.
const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
];

/// The address policy of webhook deliveries.
#[derive(Debug, Clone)]
pub struct Guard {
    refused: Vec<Network>,
    allowed: Vec<Network>,
}

impl Guard {
    /// `allow` must hold valid networks (checked by the config's validation).
    pub fn new(allow: &[String], public_only: bool) -> Self {
        let mut refused: Vec<Network> = ALWAYS_REFUSED
            .iter()
            .filter_map(|n| Network::parse(n))
            .collect();
        if public_only {
            refused.extend(PRIVATE.iter().filter_map(|n| Network::parse(n)));
        }
        Self {
            refused,
            allowed: allow.iter().filter_map(|n| Network::parse(n)).collect(),
        }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allowed.iter().any(|n| n.contains(ip)) || !self.refused.iter().any(|n| n.contains(ip))
    }
}

/// Why a target URL is refused at config load, or `None` when it is fine.
pub fn check_url(url: &str, guard: &Guard) -> Option<String> {
    let Ok(u) = reqwest::Url::parse(url) else {
        return Some("is not a valid URL".into());
    };
    if !matches!(u.scheme(), "http" | "https") {
        return Some(format!("scheme {} is not http or https", u.scheme()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Some("must not carry userinfo (put credentials in headers)".into());
    }
    // An address literal never reaches the resolver: check it here.
    let Some(host) = u.host_str() else {
        return Some("has no host".into());
    };
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    match literal {
        Some(ip) if !guard.permits(ip) => Some(format!(
            "address {ip} is refused (link-local, metadata or private; see webhooks.allow_networks)"
        )),
        _ => None,
    }
}

/// Resolves names with the system resolver and drops refused addresses; a name with only
/// refused addresses fails the attempt.
pub struct GuardedResolver(pub Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| guard.permits(a.ip()))
                .collect();
            if ok.is_empty() {
                return Err(format!(
                    "{host} resolves only to refused addresses {addrs:?} (webhooks.allow_networks)"
                )
                .into());
            }
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn metadata_and_link_local_are_refused_private_allowed_by_default() {
        let g = Guard::new(&[], false);
        assert!(!g.permits(ip("169.254.169.254")));
        assert!(!g.permits(ip("fd00:ec2::254")));
        assert!(!g.permits(ip("::ffff:169.254.169.254")));
        assert!(g.permits(ip("10.1.2.3")));
        assert!(g.permits(ip("127.0.0.1")));
        assert!(g.permits(ip("93.184.216.34")));
    }

    #[test]
    fn public_only_refuses_private_and_the_allow_list_opens_ranges() {
        let g = Guard::new(&["10.20.0.0/16".into(), "169.254.10.0/24".into()], true);
        assert!(!g.permits(ip("10.1.2.3")));
        assert!(g.permits(ip("10.20.5.5")));
        assert!(!g.permits(ip("127.0.0.1")));
        assert!(g.permits(ip("169.254.10.7")));
        assert!(!g.permits(ip("169.254.169.254")));
        assert!(g.permits(ip("8.8.8.8")));
    }

    #[test]
    fn urls_are_checked_for_scheme_userinfo_and_literal_addresses() {
        let g = Guard::new(&[], false);
        assert_eq!(check_url("https://example.com/h", &g), None);
        assert!(check_url("ftp://example.com/h", &g)
            .unwrap()
            .contains("scheme"));
        assert!(check_url("http://u:p@example.com/h", &g)
            .unwrap()
            .contains("userinfo"));
        assert!(check_url("http://169.254.169.254/latest", &g)
            .unwrap()
            .contains("refused"));
        assert!(check_url("http://[fd00:ec2::254]/", &g)
            .unwrap()
            .contains("refused"));
        assert!(Network::parse("10.0.0.0/33").is_none());
    }
}
