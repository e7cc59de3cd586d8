//! Shared by the benches that drive a real `engine serve` (`serve_ack`, `pg_throughput`):
//! the Okta hook secret their config names and the events they send.

use serde_json::{json, Value};

/// `okta.hook_secret` of the benches' config.
pub const SECRET: &str = "bench-hook-secret";

/// Event `i` of a run: `iam` is a ThreatInsight detection from a distinct IP (it opens a
/// case), anything else a successful login no playbook takes.
pub fn event(workload: &str, i: usize, run: &str) -> Value {
    let kind = if workload == "iam" {
        "security.threat.detected"
    } else {
        "user.session.start"
    };
    let ip = format!("45.{}.{}.{}", 34 + (i >> 16) % 100, (i >> 8) & 255, i & 255);
    json!({
        "uuid": format!("{run}-{workload}-{i:08}"),
        "published": "2026-11-27T08:09:30.000Z",
        "eventType": kind,
        "version": "0",
        "severity": "WARN",
        "displayMessage": "Request from suspicious actor",
        "actor": {"id": ip, "type": "IP address", "alternateId": "unknown", "displayName": "unknown"},
        "client": {"ipAddress": ip, "zone": "null", "device": "Unknown"},
        "outcome": {"result": if workload == "iam" { "DENY" } else { "SUCCESS" }, "reason": "Password Spray"},
        "target": null
    })
}
