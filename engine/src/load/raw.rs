//! The playbook format as written: plain serde structs that mirror the YAML keys.
//!
//! References are still strings here (`needs: [existing]`, `uses: cases.create`); the
//! compiler resolves them into a [`crate::compile::Plan`]. These structs are also the
//! source of the JSON Schema that `engine schema` prints.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One playbook: a trigger and a DAG of steps.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPlaybook {
    /// Unique name of the playbook, e.g. `iam-preprocess`.
    pub playbook: String,
    /// What the playbook is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The event that starts a run.
    pub on: RawTrigger,
    /// A template giving a key; runs with the same key never overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<String>,
    /// Values (templates allowed, with `event` and `now` in scope) available as `vars.*`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub vars: Map<String, Value>,
    /// The steps; edges come from `needs` and from `steps.<id>` references in templates.
    pub steps: Vec<RawStep>,
    /// What a finished run returns (templates over `steps`, `event`, `vars`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

/// `on:` — which events start the playbook.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrigger {
    /// An event source (`okta`, any other name) or a case event (`case.created`, ...).
    pub event: String,
    /// A filter over `event`; the playbook runs only when it is true.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// A condition: an expression (with or without `{{ }}`) or a literal boolean.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Condition {
    Literal(bool),
    Expression(String),
}

/// One step of a playbook.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Unique id within the playbook; templates refer to its output as `steps.<id>`.
    pub id: String,
    /// The step type, e.g. `cases.create` (see `engine steps`).
    pub uses: String,
    /// The step's inputs; strings may be templates.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub with: Map<String, Value>,
    /// Run the step only when this is true; otherwise it is skipped.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Steps that must finish first (besides those referenced in templates).
    #[serde(default, skip_serializing_if = "Needs::is_empty")]
    pub needs: Needs,
    /// Run the step once per item of a list; `item` and `index` are in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<RawForEach>,
    /// Retry retryable failures with exponential backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RawRetry>,
    /// Longest one attempt may take, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `fail` (default), `continue`, or the id of a handler step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
}

/// `needs: a` or `needs: [a, b]`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Default, PartialEq)]
#[serde(untagged)]
pub enum Needs {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Needs {
    pub fn is_empty(&self) -> bool {
        match self {
            Needs::None => true,
            Needs::One(_) => false,
            Needs::Many(v) => v.is_empty(),
        }
    }
    pub fn ids(&self) -> Vec<&str> {
        match self {
            Needs::None => vec![],
            Needs::One(s) => vec![s.as_str()],
            Needs::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `for_each: "{{ ... }}"`, a literal list, or `{ items: ..., concurrency: 4 }`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawForEach {
    Spec(ForEachSpec),
    Items(Value),
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEachSpec {
    /// A template giving a list, or a literal list.
    pub items: Value,
    /// How many items run at once (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// `retry:` — how failed attempts are retried.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Total attempts including the first (1..=20).
    pub attempts: u32,
    /// First delay, doubled after each attempt (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// Largest delay (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<String>,
    /// Randomise each delay between half and all of it (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
    /// Which errors are retried (default `[retryable, timeout]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<RetryOn>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// Errors the step marks as retryable (network errors, 5xx, 429).
    Retryable,
    /// An attempt that ran out of time.
    Timeout,
    /// Every error, permanent ones included.
    Any,
}

/// The keys each object of the format accepts, for "unknown key, did you mean" messages.
pub const PLAYBOOK_KEYS: &[&str] = &[
    "playbook",
    "description",
    "on",
    "concurrency",
    "vars",
    "steps",
    "output",
];
pub const TRIGGER_KEYS: &[&str] = &["event", "if"];
pub const STEP_KEYS: &[&str] = &[
    "id", "uses", "with", "if", "needs", "for_each", "retry", "timeout", "on_error",
];
pub const RETRY_KEYS: &[&str] = &["attempts", "backoff", "max_backoff", "jitter", "on"];
pub const FOR_EACH_KEYS: &[&str] = &["items", "concurrency"];
