//! Local IP lists: netset/CIDR files (FireHOL style), each standing for one verdict.
//!
//! One entry per line: an address (`198.51.100.66`, `2001:db8::1`), a network
//! (`203.0.113.0/24`, `2001:db8:bad::/48`) or an inclusive range (`192.0.2.10-192.0.2.20`).
//! `#` starts a comment (also `;`, as in Spamhaus DROP files); blank lines are ignored.
//! A file is parsed once into sorted, merged ranges, so a lookup is a binary search however
//! long the list is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::json;

use super::{Provider, ProviderError, ProviderVerdict, Verdict};

/// A set of IPv4 and IPv6 addresses, as sorted, non-overlapping inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// A line of a list file that is not an address, network or range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub text: String,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {} (`{}`)", self.line, self.message, self.text)
    }
}

/// A list file that could not be loaded: unreadable, or with bad lines (all of them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("cannot read `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error("`{path}` has {} bad line(s): {}", .errors.len(), summary(.errors))]
    Lines {
        path: PathBuf,
        errors: Vec<LineError>,
    },
}

fn summary(errors: &[LineError]) -> String {
    const SHOWN: usize = 5;
    let mut s = errors
        .iter()
        .take(SHOWN)
        .map(LineError::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > SHOWN {
        s.push_str(&format!("; and {} more", errors.len() - SHOWN));
    }
    s
}

impl IpSet {
    /// Parse list text; every bad line is reported, not only the first.
    pub fn parse(text: &str) -> Result<IpSet, Vec<LineError>> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let entry = raw
                .split(['#', ';'])
                .next()
                .unwrap_or_default()
                .trim()
                .trim_start_matches('\u{feff}');
            if entry.is_empty() {
                continue;
            }
            match parse_entry(entry) {
                Ok(Range::V4(a, b)) => v4.push((a, b)),
                Ok(Range::V6(a, b)) => v6.push((a, b)),
                Err(message) => errors.push(LineError {
                    line: i + 1,
                    text: entry.chars().take(80).collect(),
                    message,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(IpSet {
            v4: merge(v4),
            v6: merge(v6),
        })
    }

    /// Read and parse a list file.
    pub fn load(path: &Path) -> Result<IpSet, ListError> {
        let text = std::fs::read_to_string(path).map_err(|e| ListError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        IpSet::parse(&text).map_err(|errors| ListError::Lines {
            path: path.to_path_buf(),
            errors,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Number of merged ranges (not addresses).
    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges() == 0
    }
}

enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

fn parse_entry(entry: &str) -> Result<Range, String> {
    if let Some((start, end)) = entry.split_once('-') {
        let start: IpAddr = start
            .trim()
            .parse()
            .map_err(|_| "not an IP address, network or range".to_string())?;
        let end: IpAddr = end
            .trim()
            .parse()
            .map_err(|_| "not an IP address, network or range".to_string())?;
        return match (start.to_canonical(), end.to_canonical()) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => Ok(Range::V4(a.into(), b.into())),
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => Ok(Range::V6(a.into(), b.into())),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Err("range ends before it starts".to_string())
            }
            _ => Err("range mixes IPv4 and IPv6".to_string()),
        };
    }
    let (addr, prefix) = match entry.split_once('/') {
        Some((a, p)) => (a.trim(), Some(p.trim())),
        None => (entry, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| "not an IP address, network or range".to_string())?;
    let prefix: Option<u32> = match prefix {
        None => None,
        Some(p) => Some(p.parse().map_err(|_| format!("bad prefix length `{p}`"))?),
    };
    // `::ffff:1.2.3.0/120` is an IPv4 network in IPv6 clothing; keep it as IPv4.
    match ip {
        IpAddr::V4(a) => v4_range(a, prefix.unwrap_or(32)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) if prefix.is_none_or(|p| p >= 96) => {
                v4_range(v4, prefix.map_or(32, |p| p - 96))
            }
            _ => v6_range(a, prefix.unwrap_or(128)),
        },
    }
}

fn v4_range(a: Ipv4Addr, prefix: u32) -> Result<Range, String> {
    if prefix > 32 {
        return Err(format!("prefix length {prefix} is longer than 32"));
    }
    // Host bits set (`10.0.0.1/8`) are cleared, as FireHOL's tools do.
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    let start = u32::from(a) & mask;
    Ok(Range::V4(start, start | !mask))
}

fn v6_range(a: Ipv6Addr, prefix: u32) -> Result<Range, String> {
    if prefix > 128 {
        return Err(format!("prefix length {prefix} is longer than 128"));
    }
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    let start = u128::from(a) & mask;
    Ok(Range::V6(start, start | !mask))
}

/// Sort and merge overlapping or adjacent ranges.
fn merge<T: Copy + Ord + num_like::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if last.1.succ().is_none_or(|next| start <= next) => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out
}

fn find<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    // The first range starting after `x`; the one before it is the only candidate.
    let i = ranges.partition_point(|&(start, _)| start <= x);
    i > 0 && ranges[i - 1].1 >= x
}

mod num_like {
    pub trait Successor: Sized {
        fn succ(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn succ(self) -> Option<u32> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn succ(self) -> Option<u128> {
            self.checked_add(1)
        }
    }
}

/// A list file standing for one verdict, as a [`Provider`]: a listed address gets the list's
/// verdict, any other `unknown`.
#[derive(Debug, Clone)]
pub struct LocalList {
    name: String,
    verdict: Verdict,
    set: IpSet,
}

impl LocalList {
    pub fn new(name: impl Into<String>, verdict: Verdict, set: IpSet) -> Self {
        LocalList {
            name: name.into(),
            verdict,
            set,
        }
    }

    pub fn load(name: impl Into<String>, verdict: Verdict, path: &Path) -> Result<Self, ListError> {
        Ok(LocalList::new(name, verdict, IpSet::load(path)?))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn lookup(&self, ip: IpAddr) -> ProviderVerdict {
        if self.set.contains(ip) {
            ProviderVerdict::new(self.verdict).with("listed", Some(json!(true)))
        } else {
            ProviderVerdict::new(Verdict::Unknown).with("listed", Some(json!(false)))
        }
    }
}

#[async_trait]
impl Provider for LocalList {
    fn name(&self) -> &str {
        &self.name
    }

    async fn check(&self, ip: IpAddr) -> Result<ProviderVerdict, ProviderError> {
        Ok(self.lookup(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let set =
            IpSet::parse("10.0.0.0/25\n10.0.0.128/25\n10.0.0.5\n10.0.2.0/24\n").unwrap_or_default();
        assert_eq!(set.ranges(), 2);
        assert!(set.contains(ip("10.0.0.255")));
        assert!(!set.contains(ip("10.0.1.0")));
        assert!(set.contains(ip("10.0.2.9")));
    }

    #[test]
    fn edges_of_the_address_space() {
        let set = IpSet::parse("0.0.0.0/0\n::/0\n").unwrap_or_default();
        assert!(set.contains(ip("255.255.255.255")));
        assert!(set.contains(ip("0.0.0.0")));
        assert!(set.contains(ip("ffff::1")));
        let set = IpSet::parse("255.255.255.255\n").unwrap_or_default();
        assert!(set.contains(ip("255.255.255.255")));
        assert!(!set.contains(ip("255.255.255.254")));
    }

    #[test]
    fn host_bits_are_cleared_and_mapped_v6_is_v4() {
        let set = IpSet::parse("192.0.2.77/24\n::ffff:198.51.100.0/120\n").unwrap_or_default();
        assert!(set.contains(ip("192.0.2.1")));
        assert!(set.contains(ip("198.51.100.200")));
        assert!(set.contains(ip("::ffff:198.51.100.1")));
    }
}
