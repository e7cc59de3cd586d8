//! [`Secret`]: a token or key that prints as `***` everywhere except where it is used.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string (API token, key, password).
///
/// `Debug`, `Display` and `Serialize` all give `***`, so a secret that ends up in a log
/// line, an error message, a run report or the store shows nothing. Call [`Secret::expose`]
/// only at the point of use (building a header), and never format the result.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub const REDACTED: &'static str = "***";

    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replace every occurrence of the secret in `text` (servers sometimes echo it back).
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            // Too short to search for without mangling ordinary words.
            return text.to_string();
        }
        text.replace(&self.0, Self::REDACTED)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretVisitor)
    }
}

/// Accepts a string; a scalar of another type is refused without echoing it (serde's
/// default message would quote a numeric token).
struct SecretVisitor;

impl SecretVisitor {
    fn refuse<E: serde::de::Error>(kind: &str) -> E {
        E::custom(format!("a secret must be a string, found a {kind}"))
    }
}

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(Self::refuse("boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(Self::refuse("number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(Self::refuse("number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(Self::refuse("number"))
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Err(Self::refuse("byte string"))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Self::REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_or_serializes_its_value() {
        let s: Secret = serde_json::from_value(serde_json::json!("hunter2")).unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.redact("bad key hunter2!"), "bad key ***!");
        assert_eq!(Secret::new("ab").redact("a cab"), "a cab");
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_an_error_without_the_value() {
        let e = serde_json::from_value::<Secret>(serde_json::json!(12345678)).unwrap_err();
        assert!(e.to_string().contains("must be a string"), "{e}");
        assert!(!e.to_string().contains("1234"), "{e}");
    }
}
