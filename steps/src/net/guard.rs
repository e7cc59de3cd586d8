//! The outbound destination guard (SSRF protection).
//!
//! Two checks, both skipped for hosts in config `http.allow_hosts`:
//! - [`check_url`] before a request and on every redirect: only `http`/`https`, and an IP
//!   literal host must be a public address ([`check_ip`]). The `url` crate has already
//!   normalised numeric forms such as `2130706433`, `0x7f000001` and `0177.0.0.1` to
//!   `127.0.0.1` when it parsed an http(s) URL, so they are checked as the address they are.
//! - [`GuardedResolver`] when a host name is resolved: every address the name resolves to
//!   must be public, so `localhost` or a name pointing at `10.0.0.1` is refused. Checking at
//!   resolution, inside the connection, leaves no window between check and connect.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::Value;
use url::{Host, Url};

/// Why a destination was refused. Displays as `destination not allowed: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("destination not allowed: scheme `{0}` is not http or https")]
    Scheme(String),
    #[error("destination not allowed: the URL has no host")]
    NoHost,
    #[error("destination not allowed: `{host}` is {reason}")]
    Address { host: String, reason: &'static str },
    #[error("destination not allowed: `{host}` resolves to {ip}, {reason}")]
    Resolved {
        host: String,
        ip: IpAddr,
        reason: &'static str,
    },
    #[error("too many redirects (at most {0} are followed)")]
    TooManyRedirects(usize),
}

/// Hosts that skip the guard (config `http.allow_hosts`): names compared case-insensitively,
/// IP addresses compared as addresses (`::1` and `[::1]` are the same entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    names: Vec<String>,
    ips: Vec<IpAddr>,
}

impl AllowList {
    pub fn new<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = AllowList::default();
        for h in hosts {
            let h = h.as_ref().trim();
            let bare = h
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .unwrap_or(h);
            match bare.parse::<IpAddr>() {
                Ok(ip) => list.ips.push(ip),
                Err(_) => list
                    .names
                    .push(bare.trim_end_matches('.').to_ascii_lowercase()),
            }
        }
        list
    }

    /// The list in config `http.allow_hosts` (absent: empty). Entries that are not strings
    /// are ignored; [`super::ClientConfig::from_config`] reports them.
    pub fn from_config(config: &Value) -> Self {
        let hosts = config
            .pointer("/http/allow_hosts")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
            .unwrap_or_default();
        AllowList::new(hosts)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.ips.is_empty()
    }

    /// Whether a URL host is on the list.
    pub fn allows(&self, host: &Host<&str>) -> bool {
        match host {
            Host::Domain(d) => self.allows_name(d),
            Host::Ipv4(ip) => self.ips.contains(&IpAddr::V4(*ip)),
            Host::Ipv6(ip) => self.ips.contains(&IpAddr::V6(*ip)),
        }
    }

    /// Whether a host name (as the resolver sees it) is on the list.
    pub fn allows_name(&self, name: &str) -> bool {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return self.ips.contains(&ip);
        }
        let name = name.trim_end_matches('.');
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Check a URL before it is requested or a redirect to it is followed.
pub fn check_url(url: &Url, allow: &AllowList) -> Result<(), GuardError> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(GuardError::Scheme(other.to_string())),
    }
    let host = url.host().ok_or(GuardError::NoHost)?;
    if allow.allows(&host) {
        return Ok(());
    }
    check_host(&host)
}

/// Check a URL host without the allow list: IP literals by address, and names that always
/// mean this machine (`localhost`, `*.localhost`). Other names are checked on resolution.
pub fn check_host(host: &Host<&str>) -> Result<(), GuardError> {
    let refuse = |reason| GuardError::Address {
        host: host.to_string(),
        reason,
    };
    match host {
        Host::Ipv4(ip) => check_ip(IpAddr::V4(*ip)).map_err(refuse),
        Host::Ipv6(ip) => check_ip(IpAddr::V6(*ip)).map_err(refuse),
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                return Err(refuse("a loopback name"));
            }
            // `url` turns numeric IPv4 forms into `Host::Ipv4` for http(s); a name that
            // still parses as an address is checked as one anyway.
            match d.parse::<IpAddr>() {
                Ok(ip) => check_ip(ip).map_err(refuse),
                Err(_) => Ok(()),
            }
        }
    }
}

/// `Ok` for a public unicast address; otherwise what kind of address it is
/// (`"a loopback address"`), for messages. Shared with enrichment: an address this refuses
/// is never worth sending to an external reputation service either.
pub fn check_ip(ip: IpAddr) -> Result<(), &'static str> {
    match ip {
        IpAddr::V4(v4) => check_v4(v4),
        IpAddr::V6(v6) => check_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn check_v4(ip: Ipv4Addr) -> Result<(), &'static str> {
    const TABLE: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 32, "the unspecified address"),
        ([0, 0, 0, 0], 8, "a \"this network\" address"),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([10, 0, 0, 0], 8, "a private address"),
        ([172, 16, 0, 0], 12, "a private address"),
        ([192, 168, 0, 0], 16, "a private address"),
        ([100, 64, 0, 0], 10, "a shared (CGNAT) address"),
        ([169, 254, 169, 254], 32, "the cloud metadata address"),
        ([169, 254, 0, 0], 16, "a link-local address"),
        ([192, 0, 0, 0], 24, "an IETF protocol address"),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([255, 255, 255, 255], 32, "the broadcast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
    ];
    match TABLE.iter().find(|(net, p, _)| in_v4(ip, *net, *p)) {
        Some((_, _, reason)) => Err(reason),
        None => Ok(()),
    }
}

fn check_v6(ip: Ipv6Addr) -> Result<(), &'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return Err("the unspecified address");
    }
    if ip.is_loopback() {
        return Err("a loopback address");
    }
    // IPv4 inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64
    // (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::) reach the embedded IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return check_v4(v4);
    }
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if seg[..6] == [0, 0, 0, 0, 0, 0] {
        return check_v4(tail);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return check_v4(tail);
    }
    if seg[0] == 0x2002 {
        return check_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    if seg[0] & 0xffc0 == 0xfe80 {
        return Err("a link-local address");
    }
    if seg[0] & 0xffc0 == 0xfec0 {
        return Err("a site-local address");
    }
    if seg[0] & 0xfe00 == 0xfc00 {
        return Err("a unique-local address");
    }
    if seg[0] & 0xff00 == 0xff00 {
        return Err("a multicast address");
    }
    if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        return Err("a documentation address");
    }
    if seg[..4] == [0x100, 0, 0, 0] {
        return Err("a discard-only address");
    }
    Ok(())
}

/// A reqwest DNS resolver that refuses names resolving to non-public addresses, unless
/// the name is on the allow list. Lookup failures stay I/O errors (worth retrying).
#[derive(Debug, Clone, Default)]
pub struct GuardedResolver {
    allow: Arc<AllowList>,
}

impl GuardedResolver {
    pub fn new(allow: AllowList) -> Self {
        GuardedResolver {
            allow: Arc::new(allow),
        }
    }

    /// Resolve `host` and check every address (port 0: the caller sets the port).
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(ResolveError::Lookup)?
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::Lookup(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("`{host}` has no addresses"),
            )));
        }
        if !self.allow.allows_name(host) {
            for a in &addrs {
                if let Err(reason) = check_ip(a.ip()) {
                    return Err(ResolveError::Refused(GuardError::Resolved {
                        host: host.to_string(),
                        ip: a.ip(),
                        reason,
                    }));
                }
            }
        }
        Ok(addrs)
    }
}

/// Why [`GuardedResolver::lookup`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Refused(GuardError),
    #[error(transparent)]
    Lookup(std::io::Error),
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            match this.lookup(name.as_str()).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                // The refusal itself goes into the chain, so `step_error` can find it.
                Err(ResolveError::Refused(g)) => Err(Box::new(g) as _),
                Err(ResolveError::Lookup(e)) => Err(Box::new(e) as _),
            }
        })
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self
            .names
            .iter()
            .cloned()
            .chain(self.ips.iter().map(IpAddr::to_string))
            .collect();
        write!(f, "[{}]", all.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching_respects_the_prefix() {
        assert!(check_v4(Ipv4Addr::new(172, 31, 255, 255)).is_err());
        assert!(check_v4(Ipv4Addr::new(172, 32, 0, 0)).is_ok());
        assert!(check_v4(Ipv4Addr::new(100, 127, 255, 255)).is_err());
        assert!(check_v4(Ipv4Addr::new(100, 128, 0, 0)).is_ok());
        assert!(check_v4(Ipv4Addr::new(8, 8, 8, 8)).is_ok());
    }

    #[test]
    fn embedded_ipv4_is_checked_as_ipv4() {
        for s in [
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::192.168.0.1",
            "2002:a9fe:a9fe::",
        ] {
            let ip: Ipv6Addr = s.parse().unwrap();
            assert!(check_v6(ip).is_err(), "{s}");
        }
        for s in ["::ffff:8.8.8.8", "2606:4700::1111", "64:ff9b::8.8.8.8"] {
            let ip: Ipv6Addr = s.parse().unwrap();
            assert!(check_v6(ip).is_ok(), "{s}");
        }
    }
}
