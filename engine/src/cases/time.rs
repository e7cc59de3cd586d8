//! `Timestamp`: a point in time as unix milliseconds, written as an RFC 3339 UTC string.
//!
//! Cases store times as integers so index keys can hold them big-endian; people and
//! playbooks read them as `2024-05-01T12:00:00.000Z`. The civil-date arithmetic is
//! Howard Hinnant's `days_from_civil` / `civil_from_days`, which keeps the crate free of a
//! date library for this one job.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;
/// `0000-01-01T00:00:00Z`, the earliest instant RFC 3339 can write.
const MIN_MS: i64 = -62_167_219_200_000;
/// `9999-12-31T23:59:59.999Z`, the latest instant RFC 3339 can write.
const MAX_MS: i64 = 253_402_300_799_999;

/// A point in time: milliseconds since the unix epoch, UTC.
///
/// Serialises as an RFC 3339 string with millisecond precision and a `Z` offset, so only
/// years 0000 to 9999 can be written; constructing one outside that range is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a string or a number is not a [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The text does not follow RFC 3339.
    #[error(
        "invalid timestamp `{text}`: {reason} (expected RFC 3339 such as `2024-05-01T12:00:00Z`)"
    )]
    Syntax {
        /// The offending input.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The instant cannot be written with a four-digit year.
    #[error("timestamp {0} ms is outside the years 0000 to 9999")]
    OutOfRange(i64),
}

impl Timestamp {
    /// The unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from unix milliseconds; errors outside the years 0000..=9999.
    pub fn from_unix_millis(ms: i64) -> Result<Self, TimestampError> {
        if (MIN_MS..=MAX_MS).contains(&ms) {
            Ok(Timestamp(ms))
        } else {
            Err(TimestampError::OutOfRange(ms))
        }
    }

    /// Unix milliseconds.
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time. Library code should take time from its context (so
    /// tests can fix it); this is for the edges (CLI, server) that own the clock.
    pub fn now() -> Self {
        Self::from_system_time(std::time::SystemTime::now())
    }

    /// A clock reading as a timestamp (millisecond precision), clamped to the representable
    /// range: the one conversion from a `Clock`'s `SystemTime`.
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        let ms = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(MAX_MS),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(-MIN_MS),
        };
        Timestamp(ms.clamp(MIN_MS, MAX_MS))
    }

    /// This timestamp moved by `ms` milliseconds, saturating at the representable range.
    pub fn add_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms).clamp(MIN_MS, MAX_MS))
    }

    /// Index-key encoding: big-endian with the sign bit flipped, so byte order is time
    /// order for negative times too.
    pub fn to_key_bytes(self) -> [u8; 8] {
        ((self.0 as u64) ^ (1 << 63)).to_be_bytes()
    }

    /// Inverse of [`Timestamp::to_key_bytes`]; errors for bytes no timestamp encodes to.
    pub fn from_key_bytes(b: [u8; 8]) -> Result<Self, TimestampError> {
        Self::from_unix_millis((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl Timestamp {
    /// The RFC 3339 text, `YYYY-MM-DDTHH:MM:SS.mmmZ` (always 24 ASCII bytes: the year is
    /// 0000 to 9999). Written by hand: `write!` with padded fields was 1.4% of an IAM
    /// chain's CPU, a case carrying a dozen timestamps that are written with every record.
    fn rfc3339(self) -> [u8; 24] {
        fn put(out: &mut [u8], mut v: u32) {
            for b in out.iter_mut().rev() {
                *b = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        let days = self.0.div_euclid(DAY_MS);
        let ms_of_day = self.0.rem_euclid(DAY_MS);
        let (y, mo, d) = civil_from_days(days);
        // Both are in range by construction (years 0000 to 9999, ms of a day).
        let y = u32::try_from(y).unwrap_or(0);
        let ms_of_day = u32::try_from(ms_of_day).unwrap_or(0);
        let secs = ms_of_day / 1000;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        put(&mut out[0..4], y);
        put(&mut out[5..7], mo);
        put(&mut out[8..10], d);
        put(&mut out[11..13], secs / 3600);
        put(&mut out[14..16], (secs / 60) % 60);
        put(&mut out[17..19], secs % 60);
        put(&mut out[20..23], ms_of_day % 1000);
        out
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.rfc3339();
        // ASCII digits and separators only.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

/// A tiny cursor over ASCII input for the RFC 3339 parser.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let s = self.b.get(self.i..self.i + n)?;
        let mut v = 0u32;
        for c in s {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        self.i += n;
        Some(v)
    }

    fn eat(&mut self, pred: impl Fn(u8) -> bool) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        if pred(c) {
            self.i += 1;
            Some(c)
        } else {
            None
        }
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `t`, `z` and a space separator
    /// are accepted as RFC 3339 allows. Fractions beyond milliseconds are truncated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| TimestampError::Syntax {
            text: s.to_string(),
            reason,
        };
        let mut c = Cursor {
            b: s.as_bytes(),
            i: 0,
        };
        let y = c.digits(4).ok_or_else(|| err("bad year"))?;
        c.eat(|b| b == b'-')
            .ok_or_else(|| err("expected `-` after the year"))?;
        let mo = c.digits(2).ok_or_else(|| err("bad month"))?;
        c.eat(|b| b == b'-')
            .ok_or_else(|| err("expected `-` after the month"))?;
        let d = c.digits(2).ok_or_else(|| err("bad day"))?;
        c.eat(|b| matches!(b, b'T' | b't' | b' '))
            .ok_or_else(|| err("expected `T` between date and time"))?;
        let h = c.digits(2).ok_or_else(|| err("bad hour"))?;
        c.eat(|b| b == b':')
            .ok_or_else(|| err("expected `:` after the hour"))?;
        let mi = c.digits(2).ok_or_else(|| err("bad minute"))?;
        c.eat(|b| b == b':')
            .ok_or_else(|| err("expected `:` after the minute"))?;
        let sec = c.digits(2).ok_or_else(|| err("bad second"))?;
        let mut ms = 0i64;
        if c.eat(|b| b == b'.').is_some() {
            let mut n = 0;
            while let Some(digit) = c.eat(|b| b.is_ascii_digit()) {
                if n < 3 {
                    ms = ms * 10 + i64::from(digit - b'0');
                }
                n += 1;
            }
            if n == 0 {
                return Err(err("expected digits after `.`"));
            }
            for _ in n..3 {
                ms *= 10;
            }
        }
        let offset_min: i64 = match c.eat(|b| matches!(b, b'Z' | b'z' | b'+' | b'-')) {
            Some(b'Z' | b'z') => 0,
            Some(sign) => {
                let oh = c.digits(2).ok_or_else(|| err("bad offset hour"))?;
                c.eat(|b| b == b':')
                    .ok_or_else(|| err("expected `:` in the offset"))?;
                let om = c.digits(2).ok_or_else(|| err("bad offset minute"))?;
                if oh > 23 || om > 59 {
                    return Err(err("offset out of range"));
                }
                let v = i64::from(oh * 60 + om);
                if sign == b'-' {
                    -v
                } else {
                    v
                }
            }
            None => return Err(err("missing offset (`Z` or `+HH:MM`)")),
        };
        if c.i != s.len() {
            return Err(err("unexpected text after the offset"));
        }
        let y = i64::from(y);
        if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
            return Err(err("no such date"));
        }
        // 60 allows a leap second, which unix time folds into the next second.
        if h > 23 || mi > 59 || sec > 60 {
            return Err(err("no such time of day"));
        }
        let secs = days_from_civil(y, mo, d) * 86_400
            + i64::from(h) * 3600
            + i64::from(mi) * 60
            + i64::from(sec)
            - offset_min * 60;
        Timestamp::from_unix_millis(secs * 1000 + ms)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.rfc3339();
        match std::str::from_utf8(&text) {
            Ok(t) => s.serialize_str(t),
            Err(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        let t = Timestamp::from_unix_millis(1_714_564_800_123).unwrap();
        assert_eq!(t.to_string(), "2024-05-01T12:00:00.123Z");
        let before = Timestamp::from_unix_millis(-1).unwrap();
        assert_eq!(before.to_string(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            Timestamp::from_unix_millis(MIN_MS).unwrap().to_string(),
            "0000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(MAX_MS).unwrap().to_string(),
            "9999-12-31T23:59:59.999Z"
        );
        assert!(Timestamp::from_unix_millis(MAX_MS + 1).is_err());
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let t: Timestamp = "2024-05-01T14:00:00.5+02:00".parse().unwrap();
        assert_eq!(t.unix_millis(), 1_714_564_800_500);
        let t: Timestamp = "2024-05-01t12:00:00.123456z".parse().unwrap();
        assert_eq!(t.unix_millis(), 1_714_564_800_123);
        let t: Timestamp = "2024-05-01 07:30:00-04:30".parse().unwrap();
        assert_eq!(t.unix_millis(), 1_714_564_800_000);
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00Zjunk",
            "２０２４-05-01T12:00:00Z",
        ] {
            let e = bad.parse::<Timestamp>().unwrap_err();
            assert!(e.to_string().contains("invalid timestamp"), "{bad}: {e}");
        }
        assert!("2024-02-29T00:00:00Z".parse::<Timestamp>().is_ok());
    }

    #[test]
    fn serde_round_trip() {
        let t = Timestamp::from_unix_millis(1_714_564_800_123).unwrap();
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(j, "\"2024-05-01T12:00:00.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&j).unwrap(), t);
    }

    proptest! {
        #[test]
        fn writes_what_padded_formatting_writes(ms in MIN_MS..=MAX_MS) {
            let t = Timestamp(ms);
            let days = ms.div_euclid(DAY_MS);
            let ms_of_day = ms.rem_euclid(DAY_MS);
            let (y, mo, d) = civil_from_days(days);
            let secs = ms_of_day / 1000;
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                y, mo, d, secs / 3600, (secs / 60) % 60, secs % 60, ms_of_day % 1000
            );
            prop_assert_eq!(t.to_string(), expected.clone());
            prop_assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{expected}\""));
        }

        #[test]
        fn display_parse_round_trip(ms in MIN_MS..=MAX_MS) {
            let t = Timestamp::from_unix_millis(ms).unwrap();
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }

        #[test]
        fn key_bytes_sort_like_time(a in MIN_MS..=MAX_MS, b in MIN_MS..=MAX_MS) {
            let (ta, tb) = (Timestamp(a), Timestamp(b));
            prop_assert_eq!(ta.cmp(&tb), ta.to_key_bytes().cmp(&tb.to_key_bytes()));
            prop_assert_eq!(Timestamp::from_key_bytes(ta.to_key_bytes()).unwrap(), ta);
        }
    }
}
