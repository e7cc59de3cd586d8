//! `cases.query`: find cases by observable, state, severity, assignee, tag and time.

use async_trait::async_trait;
use engine::cases::{Case, CaseState, Severity, Timestamp};
use engine::persist::{CaseQuery, CaseSort};
use engine::{StepContext, StepError, TypedStep};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{store_error, ObservableInput};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Cases with this observable. A missing value matches nothing.
    #[serde(default)]
    pub observable: Option<ObservableInput>,
    /// Cases in one of these states.
    #[serde(default)]
    pub state: Vec<CaseState>,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    /// RFC 3339 time, or a duration back from now such as `24h`.
    #[serde(default)]
    pub created_after: Option<String>,
    #[serde(default)]
    pub created_before: Option<String>,
    /// `created_at`, `-created_at` (default: newest first), `updated_at`, `-updated_at`, `severity`, `-severity`.
    #[serde(default)]
    pub sort: Option<String>,
    /// At most this many cases (default 10, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub cases: Vec<Case>,
    pub count: usize,
}

pub struct Query;

fn time(ctx: &StepContext, s: &str) -> Result<Timestamp, StepError> {
    if let Ok(d) = humantime::parse_duration(s.trim()) {
        return Ok(ctx
            .timestamp()
            .add_millis(-(d.as_millis().min(i64::MAX as u128) as i64)));
    }
    s.parse().map_err(|_| {
        StepError::permanent(format!(
            "invalid time `{s}`: use RFC 3339 or a duration like `24h`"
        ))
    })
}

#[async_trait]
impl TypedStep for Query {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "cases.query";
    // Reads the case store only.
    const EFFECT_FREE: bool = true;

    fn description(&self) -> &'static str {
        "Find cases by observable, state, severity, assignee, tag and creation time; output `cases` and `count`."
    }

    fn example(&self) -> Value {
        json!({
            "observable": {"type": "user", "value": "{{ vars.user }}"},
            "state": ["new", "in_progress", "on_hold"],
            "sort": "-created_at",
            "limit": 1
        })
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<Output, StepError> {
        let observable = match &input.observable {
            None => None,
            Some(o) => match o.value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                Some(v) => Some((o.kind, v.to_string())),
                None => {
                    return Ok(Output {
                        cases: vec![],
                        count: 0,
                    })
                }
            },
        };
        let sort = match input.sort.as_deref() {
            None => CaseSort::default(),
            Some(s) => s
                .parse()
                .map_err(|e| StepError::permanent(format!("invalid `sort`: {e}")))?,
        };
        let q = CaseQuery {
            observable,
            states: input.state,
            severity: input.severity,
            assignee: input.assignee,
            tag: input.tag,
            created_after: input
                .created_after
                .as_deref()
                .map(|s| time(ctx, s))
                .transpose()?,
            created_before: input
                .created_before
                .as_deref()
                .map(|s| time(ctx, s))
                .transpose()?,
            sort,
            limit: input.limit.unwrap_or(10).clamp(1, 1000),
        };
        let cases = ctx.store()?.query(&q).await.map_err(store_error)?;
        Ok(Output {
            count: cases.len(),
            cases,
        })
    }
}
