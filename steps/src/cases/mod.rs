//! `cases.*`: read and change cases in the engine's store. One step type per file; the
//! helpers here turn inputs into store calls and store errors into step errors.

pub mod assign;
pub mod config;
pub mod create;
pub mod query;
pub mod set_severity;
pub mod set_sla;
pub mod set_state;
pub mod update;

use engine::cases::{
    Case, CaseChange, CaseId, NewObservable, ObservableType, Severity, Timestamp, Verdict,
};
use engine::persist::{StoreError, WriteOutcome};
use engine::{StepContext, StepError};

pub use config::{check_sla, check_teams, sla_for, team_members};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An observable as a playbook gives it. A missing or empty value is dropped, so a
/// playbook can pass `{{ event | dig('client.ipAddress') }}` without checking it first.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservableInput {
    /// `ip`, `user`, `email`, `domain`, `url`, `hash` or `hostname`.
    #[serde(rename = "type")]
    pub kind: ObservableType,
    /// The value; normalised by the store (IPv6 canonical, logins lower-cased).
    #[serde(default)]
    pub value: Option<String>,
    /// A verdict to record (`benign`, `suspicious`, `malicious`, `unknown`).
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Enrichment data by provider, merged into what the observable has.
    #[serde(default)]
    pub enrichment: Map<String, Value>,
}

pub fn observables(inputs: &[ObservableInput]) -> Vec<NewObservable> {
    inputs
        .iter()
        .filter_map(|o| {
            let v = o.value.as_deref()?.trim();
            (!v.is_empty()).then(|| {
                let mut n = NewObservable::new(o.kind, v);
                n.verdict = o.verdict;
                n.enrichment = o.enrichment.clone();
                n
            })
        })
        .collect()
}

/// The output of steps that change one case.
#[derive(Debug, Serialize)]
pub struct CaseOutput {
    pub case: Case,
    /// Whether this step created the case (`cases.create`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

pub fn parse_id(s: &str) -> Result<CaseId, StepError> {
    s.trim()
        .parse()
        .map_err(|e| StepError::permanent(format!("invalid case id `{s}`: {e}")))
}

pub fn store_error(e: StoreError) -> StepError {
    match e {
        StoreError::Backend { .. } => StepError::retryable(e),
        _ => StepError::permanent(e),
    }
}

/// Read one case; a missing case is a permanent error naming it.
pub async fn load(ctx: &StepContext, id: &str) -> Result<Case, StepError> {
    let id = parse_id(id)?;
    ctx.store()?
        .get(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| StepError::permanent(format!("no case {id}")))
}

/// Apply changes to one case as this step (idempotent per run and step).
pub async fn change(
    ctx: &StepContext,
    id: &str,
    changes: Vec<CaseChange>,
) -> Result<WriteOutcome, StepError> {
    let id = parse_id(id)?;
    let store = ctx.store()?;
    store
        .update(id, changes, &ctx.write_meta())
        .await
        .map_err(store_error)
}

/// `created_at + d`.
pub fn due(from: Timestamp, d: std::time::Duration) -> Timestamp {
    from.add_millis(d.as_millis().min(i64::MAX as u128) as i64)
}

/// A `SetSla` change following the severity policy (`None` for a severity without one).
pub fn severity_sla(
    config: &Value,
    case: &Case,
    severity: Severity,
) -> Result<Option<CaseChange>, StepError> {
    let Some(d) = sla_for(config, severity).map_err(StepError::permanent)? else {
        return Ok(None);
    };
    Ok(Some(CaseChange::SetSla {
        policy: Some(format!("severity:{}", severity.as_str())),
        due_at: Some(due(case.created_at, d)),
    }))
}
