//! Durations in the config file: humantime strings (`1h`, `30s`, `500ms`) or whole seconds.
//! Use with `#[serde(with = "crate::duration")]`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Secs(u64),
    Text(String),
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration `{t}` ({e}); e.g. `1h`"))
        }),
    }
}
