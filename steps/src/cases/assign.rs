//! `cases.assign`: assign a case to a person, or to a member of a team from config `teams`.

use async_trait::async_trait;
use engine::cases::CaseChange;
use engine::persist::CaseQuery;
use engine::{StepContext, StepError, TypedStep};
use rand::seq::SliceRandom;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{change, parse_id, store_error};

#[derive(Debug, Default, Deserialize, JsonSchema, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// A member at random (seeded per run, so `--seed` makes it reproducible).
    #[default]
    Random,
    /// Members in turn, by case number.
    RoundRobin,
    /// The member with the fewest open cases (`new`, `in_progress`, `on_hold`); a tie is
    /// broken at random (seeded like `random`).
    LeastLoaded,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub case: String,
    /// Assign to this person directly.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Choose from this team of config `teams` (default `soc`).
    #[serde(default)]
    pub team: Option<String>,
    /// How to choose from the team: `random` (default, seeded per run), `round_robin` (by
    /// case number) or `least_loaded` (fewest open cases).
    #[serde(default)]
    pub strategy: Strategy,
    /// Do not choose the current assignee (default true).
    #[serde(default = "yes")]
    pub exclude_current: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub case: engine::cases::Case,
    pub assignee: String,
}

pub struct Assign;

#[async_trait]
impl TypedStep for Assign {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "cases.assign";

    fn description(&self) -> &'static str {
        "Assign a case to a person, or to an eligible member of a team from config `teams` (random, round_robin or least_loaded)."
    }

    fn example(&self) -> Value {
        json!({"case": "{{ case.id }}", "team": "soc", "strategy": "random"})
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        super::check_teams(config)
    }

    async fn run(&self, input: Input, ctx: &StepContext) -> Result<Output, StepError> {
        let assignee = match input.assignee.filter(|a| !a.trim().is_empty()) {
            Some(a) => a,
            None => {
                let team = input.team.as_deref().unwrap_or("soc");
                let members = super::team_members(ctx.config(), team);
                let id = parse_id(&input.case)?;
                let current = ctx
                    .store()?
                    .get(id)
                    .await
                    .map_err(store_error)?
                    .and_then(|c| c.assignee);
                let eligible: Vec<&String> = members
                    .iter()
                    .filter(|m| !(input.exclude_current && current.as_ref() == Some(*m)))
                    .collect();
                if eligible.is_empty() {
                    return Err(StepError::permanent(format!(
                        "no eligible assignee in team `{team}` (config `teams.{team}` has {} member(s))",
                        members.len()
                    )));
                }
                let chosen = match input.strategy {
                    Strategy::Random => eligible.choose(&mut ctx.rng()).copied(),
                    Strategy::RoundRobin => eligible.get((id.0 as usize) % eligible.len()).copied(),
                    Strategy::LeastLoaded => {
                        let store = ctx.store()?;
                        let mut loads = Vec::with_capacity(eligible.len());
                        for m in &eligible {
                            let q = CaseQuery {
                                assignee: Some((*m).clone()),
                                ..CaseQuery::open()
                            };
                            loads.push(store.count(&q).await.map_err(store_error)?);
                        }
                        let least = loads.iter().copied().min().unwrap_or(0);
                        let tied: Vec<&String> = eligible
                            .iter()
                            .zip(&loads)
                            .filter(|(_, l)| **l == least)
                            .map(|(m, _)| *m)
                            .collect();
                        tied.choose(&mut ctx.rng()).copied()
                    }
                };
                chosen.cloned().unwrap_or_default()
            }
        };
        let out = change(
            ctx,
            &input.case,
            vec![CaseChange::Assign(Some(assignee.clone()))],
        )
        .await?;
        Ok(Output {
            case: out.case,
            assignee,
        })
    }
}
