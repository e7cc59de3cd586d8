//! The config sections the `cases.*` steps read: `sla` (the resolution SLA per severity)
//! and `teams` (who can be assigned). Checked before anything runs (see
//! [`engine::Step::check_config`]), so a typo is an error at start-up rather than a
//! default silently used in its place.
//!
//! ```yaml
//! sla: { critical: 4h, high: 24h, medium: 72h, low: 7d }   # informational: none
//! teams:
//!   soc: [dana@acme.example, eli@acme.example]
//! ```

use std::time::Duration;

use engine::cases::Severity;
use serde_json::Value;

/// The default resolution SLA of a severity (`None` for informational).
pub fn default_sla(severity: Severity) -> Option<Duration> {
    let hours = match severity {
        Severity::Critical => 4,
        Severity::High => 24,
        Severity::Medium => 72,
        Severity::Low => 7 * 24,
        Severity::Informational => return None,
    };
    Some(Duration::from_secs(hours * 3600))
}

fn parse_sla(key: &str, v: &Value) -> Result<Option<Duration>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if matches!(s.trim(), "none" | "") => Ok(None),
        Value::String(s) => match humantime::parse_duration(s.trim()) {
            Ok(d) if d.is_zero() => Err(format!(
                "config `sla.{key}`: `{s}` is zero; write `none` for no SLA"
            )),
            Ok(d) => Ok(Some(d)),
            Err(e) => Err(format!(
                "config `sla.{key}`: `{s}` is not a duration ({e}); write e.g. `4h`, `3d` or `none`"
            )),
        },
        other => Err(format!(
            "config `sla.{key}`: expected a duration such as `24h`, found `{other}`"
        )),
    }
}

/// The SLA for `severity`: config `sla.<severity>` when set (`none` for no SLA), else the
/// default. An unreadable value is an error naming the key.
pub fn sla_for(config: &Value, severity: Severity) -> Result<Option<Duration>, String> {
    let name = severity.as_str();
    match config.get("sla").and_then(|s| s.get(name)) {
        Some(v) => parse_sla(name, v),
        None => Ok(default_sla(severity)),
    }
}

/// Every problem in config `sla`: unknown severities and unreadable durations.
pub fn check_sla(config: &Value) -> Result<(), String> {
    let sla = match config.get("sla") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "config `sla`: expected a map from severity to duration, found `{other}`"
            ))
        }
    };
    let mut problems = Vec::new();
    for (key, v) in sla {
        if key.parse::<Severity>().is_err() {
            problems.push(format!(
                "config `sla.{key}`: unknown severity (severities: critical, high, medium, low, informational)"
            ));
        } else if let Err(e) = parse_sla(key, v) {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The members of team `team` in config `teams` (empty when the team is not configured).
pub fn team_members(config: &Value, team: &str) -> Vec<String> {
    config
        .get("teams")
        .and_then(|t| t.get(team))
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Config `teams` is a map from team name to a list of people.
pub fn check_teams(config: &Value) -> Result<(), String> {
    let teams = match config.get("teams") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "config `teams`: expected a map from team name to a list of people, found `{other}`"
            ))
        }
    };
    let mut problems = Vec::new();
    for (team, members) in teams {
        match members {
            Value::Array(m)
                if m.iter()
                    .all(|p| p.as_str().is_some_and(|s| !s.trim().is_empty())) => {}
            Value::Array(_) => problems.push(format!(
                "config `teams.{team}`: every member must be a non-empty string"
            )),
            other => problems.push(format!(
                "config `teams.{team}`: expected a list of people, found `{other}`"
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_overrides() {
        let c = json!({"sla": {"high": "8h", "low": "none"}});
        assert_eq!(
            sla_for(&c, Severity::High),
            Ok(Some(Duration::from_secs(8 * 3600)))
        );
        assert_eq!(sla_for(&c, Severity::Low), Ok(None));
        assert_eq!(
            sla_for(&c, Severity::Critical),
            Ok(Some(Duration::from_secs(4 * 3600)))
        );
        assert_eq!(sla_for(&json!({}), Severity::Informational), Ok(None));
        assert_eq!(check_sla(&c), Ok(()));
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let c = json!({"sla": {"high": "tomorrow", "urgent": "1h", "low": 5, "medium": "0s"}});
        let e = check_sla(&c).unwrap_err();
        assert!(
            e.contains("`sla.high`: `tomorrow` is not a duration"),
            "{e}"
        );
        assert!(e.contains("`sla.urgent`: unknown severity"), "{e}");
        assert!(e.contains("`sla.low`: expected a duration"), "{e}");
        assert!(e.contains("`sla.medium`: `0s` is zero"), "{e}");
        assert!(sla_for(&c, Severity::High).is_err());
        assert!(check_sla(&json!({"sla": "24h"})).is_err());
    }

    #[test]
    fn teams() {
        let c = json!({"teams": {"soc": ["a@x", " "], "ir": "b@x"}});
        let e = check_teams(&c).unwrap_err();
        assert!(e.contains("`teams.soc`: every member"), "{e}");
        assert!(e.contains("`teams.ir`: expected a list"), "{e}");
        assert_eq!(
            team_members(&json!({"teams": {"soc": ["a@x"]}}), "soc"),
            ["a@x"]
        );
        assert!(team_members(&json!({}), "soc").is_empty());
        assert_eq!(check_teams(&json!({"teams": {"soc": ["a@x"]}})), Ok(()));
    }
}
