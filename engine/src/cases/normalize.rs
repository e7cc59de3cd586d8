//! Observable normalisation: one canonical spelling per value, so lookups by observable
//! match whatever form an alert or a person used.

use std::net::IpAddr;

use super::ObservableType;

/// Why an observable value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} observable `{value}`: {reason}")]
pub struct InvalidObservable {
    /// The declared type.
    pub kind: ObservableType,
    /// The raw value.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The canonical form of an observable value.
///
/// - `ip`: parsed with `std::net` and printed back, so IPv6 is compressed lower case
///   (`2001:DB8:0::1` -> `2001:db8::1`) and IPv4-mapped addresses stay in Rust's
///   `::ffff:1.2.3.4` form; `[..]` brackets are accepted around IPv6. Anything else is an
///   error.
/// - `user`, `email`: trimmed, lower case.
/// - `domain`, `hostname`: trimmed, lower case, one trailing dot removed.
/// - `hash`: trimmed; lower-cased when it is hexadecimal.
/// - `url`: trimmed; scheme and authority lower-cased, path and query kept.
///
/// Empty values and values with whitespace or control characters inside are errors.
pub fn normalize_observable(kind: ObservableType, raw: &str) -> Result<String, InvalidObservable> {
    let err = |reason| InvalidObservable {
        kind,
        value: raw.to_string(),
        reason,
    };
    let v = raw.trim();
    if v.is_empty() {
        return Err(err("the value is empty"));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("the value contains whitespace or control characters"));
    }
    match kind {
        ObservableType::Ip => {
            let inner = v
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .unwrap_or(v);
            inner
                .parse::<IpAddr>()
                .map(|ip| ip.to_string())
                .map_err(|_| err("not an IPv4 or IPv6 address"))
        }
        ObservableType::User => Ok(v.to_lowercase()),
        ObservableType::Email => {
            let v = v.to_lowercase();
            match v.rsplit_once('@') {
                Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(v),
                _ => Err(err("expected `local@domain`")),
            }
        }
        ObservableType::Domain | ObservableType::Hostname => {
            let v = v.to_lowercase();
            let v = v.strip_suffix('.').unwrap_or(&v);
            if v.is_empty() || v.starts_with('.') || v.ends_with('.') || v.contains("..") {
                return Err(err("empty label in the name"));
            }
            Ok(v.to_string())
        }
        ObservableType::Hash => {
            if v.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(v.to_ascii_lowercase())
            } else {
                Ok(v.to_string())
            }
        }
        ObservableType::Url => Ok(normalize_url(v)),
    }
}

/// Lower-cases the scheme and the authority of a URL; leaves the rest alone because
/// paths and queries are case-sensitive.
fn normalize_url(v: &str) -> String {
    let Some((scheme, rest)) = v.split_once("://") else {
        return v.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        authority.to_lowercase(),
        tail
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ObservableType::*;

    fn n(kind: ObservableType, v: &str) -> String {
        normalize_observable(kind, v).unwrap()
    }

    #[test]
    fn ips_are_canonical() {
        assert_eq!(n(Ip, " 10.0.0.1 "), "10.0.0.1");
        assert_eq!(n(Ip, "2001:DB8:0:0::1"), "2001:db8::1");
        assert_eq!(n(Ip, "[2001:db8::1]"), "2001:db8::1");
        assert_eq!(n(Ip, "0:0:0:0:0:0:0:1"), "::1");
        assert_eq!(n(Ip, "::FFFF:192.0.2.1"), "::ffff:192.0.2.1");
        assert_eq!(n(Ip, "::ffff:c000:0201"), "::ffff:192.0.2.1");
    }

    #[test]
    fn invalid_ips_are_errors() {
        for bad in [
            "10.0.0.256",
            "10.0.0",
            "::g",
            "fe80::1%eth0",
            "010.0.0.1",
            "host",
        ] {
            let e = normalize_observable(Ip, bad).unwrap_err();
            assert_eq!(e.reason, "not an IPv4 or IPv6 address", "{bad}");
            assert!(e.to_string().starts_with("invalid ip observable"));
        }
    }

    #[test]
    fn names_are_lower_case_and_trimmed() {
        assert_eq!(n(User, "  Alice@Corp "), "alice@corp");
        assert_eq!(n(Email, "Alice@Example.COM"), "alice@example.com");
        assert_eq!(n(Domain, "Example.COM."), "example.com");
        assert_eq!(n(Hostname, "WS-042.corp.local."), "ws-042.corp.local");
        assert_eq!(
            n(Hash, "D41D8CD98F00B204E9800998ECF8427E"),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            n(Hash, "3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C"),
            "3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C"
        );
        assert_eq!(
            n(Url, "HTTPS://Example.COM/Path?Q=A"),
            "https://example.com/Path?Q=A"
        );
        assert_eq!(n(Url, "mailto:X@Y"), "mailto:X@Y");
        assert!(normalize_observable(Domain, "example.com..").is_err());
    }

    #[test]
    fn rejects_empty_and_malformed_values() {
        assert!(normalize_observable(User, "   ").is_err());
        assert!(normalize_observable(User, "a b").is_err());
        assert!(normalize_observable(Email, "no-at-sign").is_err());
        assert!(normalize_observable(Email, "@example.com").is_err());
        assert!(normalize_observable(Domain, ".").is_err());
        assert!(normalize_observable(Domain, "a..b").is_err());
        assert!(normalize_observable(Hostname, "a\0b").is_err());
    }

    #[test]
    fn normalisation_is_idempotent() {
        for (k, v) in [
            (Ip, "2001:DB8::1"),
            (Domain, "Example.com."),
            (Url, "HTTP://A.b/C"),
            (Hash, "ABC"),
        ] {
            let once = n(k, v);
            assert_eq!(n(k, &once), once);
        }
    }
}
