//! `engine cases`: list, show and change cases as a person.

use std::process::ExitCode;

use serde_json::Value;

use super::{
    bundled_config, load, open_store, open_store_with, output, runtime, CasesCommand, StoreArgs,
    StoreLocation,
};
use crate::cases::{Actor, Case, CaseChange, CaseId, CaseState, Severity, Timestamp};
use crate::persist::{CaseQuery, CaseSort, Store, WriteMeta};
use crate::schedule::Engine;
use crate::step::{Registry, Services};

/// Cases changed at or after `since`, most recently changed first.
pub async fn changed_since(store: &dyn Store, since: Timestamp) -> Result<Vec<Case>, crate::Error> {
    let q = CaseQuery {
        sort: "-updated_at".parse::<CaseSort>().unwrap_or_default(),
        limit: 500,
        ..CaseQuery::default()
    };
    let mut cases: Vec<Case> = store
        .query(&q)
        .await?
        .into_iter()
        .filter(|c| c.updated_at >= since)
        .collect();
    cases.sort_by_key(|c| c.id);
    Ok(cases)
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>()
        .map_err(|e| format!("invalid {what} `{s}`: {e}"))
}

pub fn run(command: CasesCommand, registry: Registry) -> Result<ExitCode, String> {
    let rt = runtime()?;
    match command {
        CasesCommand::List {
            state,
            severity,
            assignee,
            tag,
            limit,
            store: StoreArgs {
                data_dir,
                database_url,
            },
            json,
        } => {
            let at = StoreLocation {
                data_dir: &data_dir,
                database_url: database_url.as_deref(),
            };
            let store = open_store(&at, &rt)?;
            let q = CaseQuery {
                states: state
                    .iter()
                    .map(|s| parse::<CaseState>("state", s))
                    .collect::<Result<_, _>>()?,
                severity: severity
                    .as_deref()
                    .map(|s| parse::<Severity>("severity", s))
                    .transpose()?,
                assignee,
                tag,
                limit: limit.max(1),
                ..CaseQuery::default()
            };
            let cases = rt.block_on(store.query(&q)).map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&cases).unwrap_or_default()
                );
            } else if cases.is_empty() {
                println!("no cases");
            } else {
                for c in &cases {
                    output::case_line(c);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CasesCommand::Show {
            id,
            store: StoreArgs {
                data_dir,
                database_url,
            },
            json,
        } => {
            let at = StoreLocation {
                data_dir: &data_dir,
                database_url: database_url.as_deref(),
            };
            let store = open_store(&at, &rt)?;
            let id: CaseId = parse("case id", &id)?;
            match rt.block_on(store.get(id)).map_err(|e| e.to_string())? {
                None => Err(format!("no case {id}")),
                Some(c) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&c).unwrap_or_default());
                    } else {
                        output::case_detail(&c);
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        CasesCommand::Update {
            id,
            state,
            reason,
            assignee,
            severity,
            comment,
            actor,
            playbooks,
            store: StoreArgs {
                data_dir,
                database_url,
            },
            config,
            json,
        } => {
            let id: CaseId = parse("case id", &id)?;
            let mut changes = Vec::new();
            if let Some(s) = &severity {
                changes.push(CaseChange::SetSeverity(parse("severity", s)?));
            }
            if let Some(a) = assignee {
                changes.push(CaseChange::Assign(if a.is_empty() {
                    None
                } else {
                    Some(a)
                }));
            }
            if let Some(c) = comment {
                changes.push(CaseChange::AddComment(c));
            }
            if let Some(s) = &state {
                changes.push(CaseChange::SetState {
                    to: parse("state", s)?,
                    reason,
                });
            }
            if changes.is_empty() {
                return Err(
                    "nothing to change: give --state, --assignee, --severity or --comment".into(),
                );
            }
            // Load the playbooks first: an invalid bundle changes nothing.
            let bundle = if playbooks.is_empty() {
                None
            } else {
                match load(&playbooks, &registry) {
                    Ok(b) => Some(b),
                    Err(code) => return Ok(code),
                }
            };
            let config = config.or_else(|| bundled_config(&playbooks));
            let config = crate::config::load(config.as_deref()).map_err(|e| e.to_string())?;
            let at = StoreLocation {
                data_dir: &data_dir,
                database_url: database_url.as_deref(),
            };
            let store = open_store_with(&at, &config, &rt)?;
            let name = actor
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "cli".to_string());
            let meta = WriteMeta::new(Actor::Person { name }, Timestamp::now());
            let out = rt
                .block_on(store.update(id, changes, &meta))
                .map_err(|e| e.to_string())?;
            let mut runs = Vec::new();
            let outbox = super::open_outbox(&store, &data_dir, &rt)?;
            if let Some(bundle) = bundle {
                let mut services = Services::new()
                    .with_config(config)
                    .with_store(store.clone());
                services.insert(outbox.clone());
                let engine = Engine::new(bundle, services);
                runs = rt
                    .block_on(engine.drain_case_events())
                    .map_err(|e| e.to_string())?;
            }
            let case = rt
                .block_on(store.get(id))
                .map_err(|e| e.to_string())?
                .unwrap_or(out.case);
            if json {
                let v = serde_json::json!({
                    "case": case,
                    "runs": runs,
                    "notifications": outbox.sent(),
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                output::case_detail(&case);
                for r in &runs {
                    println!("run {} {} {:?}", r.playbook, r.run_id, r.status);
                }
                for n in outbox.sent() {
                    println!("notified {}: {}", n.to.join(", "), n.subject);
                }
            }
            let ok = runs
                .iter()
                .all(|r| r.status == crate::report::RunStatus::Succeeded);
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// Observables as `type value (verdict)`.
pub fn observables(c: &Case) -> Vec<String> {
    c.observables
        .iter()
        .map(|o| {
            let v = serde_json::to_value(o).unwrap_or(Value::Null);
            let kind = v
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            match &o.verdict {
                Some(verdict) => format!("{kind} {} ({})", o.value, verdict.as_str()),
                None => format!("{kind} {}", o.value),
            }
        })
        .collect()
}
