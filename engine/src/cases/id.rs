//! `CaseId`: the short, sortable, human-friendly case number (`CASE-000123`).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A case number. Stored as a `u64` (big-endian in keys, so byte order is creation order)
/// and written `CASE-` followed by at least six digits, so ids up to 999 999 also sort
/// as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CaseId(pub u64);

/// Why a string is not a [`CaseId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid case id `{text}`: {reason} (expected `CASE-` and digits, such as `CASE-000123`)")]
pub struct ParseCaseIdError {
    /// The offending input.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl CaseId {
    /// Key encoding: big-endian, so byte order is numeric order.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CASE-{:06}", self.0)
    }
}

impl FromStr for CaseId {
    type Err = ParseCaseIdError;

    /// Accepts `CASE-000123`, case-insensitively and with surrounding spaces, and a bare
    /// number (`123`) for people typing at a prompt.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseCaseIdError {
            text: s.to_string(),
            reason,
        };
        let t = s.trim();
        let digits = match t.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("case-") => &t[5..],
            _ if t.bytes().next().is_some_and(|b| b.is_ascii_digit()) => t,
            _ => return Err(err("missing the `CASE-` prefix")),
        };
        if digits.is_empty() {
            return Err(err("no digits after `CASE-`"));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("only digits may follow `CASE-`"));
        }
        digits
            .parse::<u64>()
            .map(CaseId)
            .map_err(|_| err("number too large"))
    }
}

impl Serialize for CaseId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CaseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for CaseId {
    fn schema_name() -> Cow<'static, str> {
        "CaseId".into()
    }

    fn json_schema(_gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^CASE-[0-9]{6,}$" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_with_six_digits_at_least() {
        assert_eq!(CaseId(123).to_string(), "CASE-000123");
        assert_eq!(CaseId(0).to_string(), "CASE-000000");
        assert_eq!(CaseId(1_234_567).to_string(), "CASE-1234567");
        assert_eq!(CaseId(u64::MAX).to_string(), format!("CASE-{}", u64::MAX));
    }

    #[test]
    fn parses_what_it_prints() {
        for n in [0, 1, 999_999, 1_000_000, u64::MAX] {
            assert_eq!(CaseId(n).to_string().parse::<CaseId>().unwrap(), CaseId(n));
        }
        assert_eq!(" case-42 ".parse::<CaseId>().unwrap(), CaseId(42));
        assert_eq!("42".parse::<CaseId>().unwrap(), CaseId(42));
    }

    #[test]
    fn sorts_as_text_like_numbers() {
        let mut ids: Vec<String> = [5u64, 40, 300, 999_999]
            .iter()
            .map(|n| CaseId(*n).to_string())
            .collect();
        let sorted = ids.clone();
        ids.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let e = "TICKET-1".parse::<CaseId>().unwrap_err();
        assert!(e.to_string().contains("missing the `CASE-` prefix"), "{e}");
        let e = "CASE-".parse::<CaseId>().unwrap_err();
        assert!(e.to_string().contains("no digits"), "{e}");
        let e = "CASE-12a".parse::<CaseId>().unwrap_err();
        assert!(e.to_string().contains("only digits"), "{e}");
        let e = "CASE-+12".parse::<CaseId>().unwrap_err();
        assert!(e.to_string().contains("only digits"), "{e}");
        let e = "CASE-99999999999999999999999"
            .parse::<CaseId>()
            .unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        assert!("CASÉ-1".parse::<CaseId>().is_err());
    }

    #[test]
    fn serde_uses_the_display_form() {
        assert_eq!(
            serde_json::to_string(&CaseId(7)).unwrap(),
            "\"CASE-000007\""
        );
        assert_eq!(
            serde_json::from_str::<CaseId>("\"CASE-000007\"").unwrap(),
            CaseId(7)
        );
        assert!(serde_json::from_str::<CaseId>("\"nope\"").is_err());
    }
}
