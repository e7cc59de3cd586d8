//! Schedule: decide which playbooks an event starts, and run them.
//!
//! [`ready`] is the pure scheduling decision, [`retry`] the pure backoff rules, and
//! [`executor`] runs one plan on tokio. [`Engine`] ties them to events: it matches each
//! event against every playbook's trigger (`on.event` and `on.if`), serialises runs that
//! share a `concurrency` key, and runs the rest concurrently.

pub mod executor;
pub mod ready;
pub mod retry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minijinja::Value as MjValue;
use rand::Rng;
use serde_json::Value;

use crate::compile::{Bundle, Plan};
use crate::report::{RunReport, RunStatus};
use crate::step::Services;
pub use executor::{execute, RunInput};

/// Runs playbooks of a bundle for the events it is given.
pub struct Engine {
    bundle: Bundle,
    services: Arc<Services>,
    locks: KeyedLocks,
}

impl Engine {
    pub fn new(bundle: Bundle, services: Services) -> Self {
        Engine {
            bundle,
            services: Arc::new(services),
            locks: KeyedLocks::default(),
        }
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// The playbooks this event starts, with trigger-evaluation errors for the others.
    pub fn matching(&self, source: &str, event: &Value) -> (Vec<Arc<Plan>>, Vec<(String, String)>) {
        let mut hits = Vec::new();
        let mut errors = Vec::new();
        let ctx = MjValue::from_serialize(serde_json::json!({
            "event": event,
            "now": executor::rfc3339(self.services.clock.now()),
        }));
        for plan in &self.bundle.playbooks {
            if plan.trigger.event != source {
                continue;
            }
            match &plan.trigger.condition {
                None => hits.push(plan.clone()),
                Some(c) => match plan.templates.truth(c, &ctx) {
                    Ok(true) => hits.push(plan.clone()),
                    Ok(false) => {}
                    Err(e) => errors.push((plan.name.clone(), format!("`on.if`: {e}"))),
                },
            }
        }
        (hits, errors)
    }

    /// Run every playbook the event starts and wait for them.
    pub async fn dispatch(
        &self,
        source: &str,
        event: Value,
        case: Option<Value>,
    ) -> Vec<RunReport> {
        let (plans, errors) = self.matching(source, &event);
        for (playbook, e) in &errors {
            tracing::warn!(%playbook, error = %e, "trigger could not be evaluated");
        }
        let mut set = tokio::task::JoinSet::new();
        for plan in plans {
            let input = RunInput {
                run_id: new_run_id(),
                trigger: source.to_string(),
                event: event.clone(),
                case: case.clone(),
            };
            let services = self.services.clone();
            let key = self.concurrency_key(&plan, &event);
            let lock = key.as_ref().map(|k| self.locks.get(k));
            set.spawn(async move {
                let _guard = match &lock {
                    Some(l) => Some(l.lock().await),
                    None => None,
                };
                execute(plan, input, services).await
            });
        }
        let mut reports = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(report) => reports.push(report),
                Err(e) => tracing::error!(error = %e, "run task crashed"),
            }
        }
        reports.sort_by(|a, b| a.playbook.cmp(&b.playbook));
        reports
    }

    fn concurrency_key(&self, plan: &Plan, event: &Value) -> Option<String> {
        let t = plan.concurrency.as_ref()?;
        let mut ctx = serde_json::json!({
            "event": event,
            "now": executor::rfc3339(self.services.clock.now()),
        });
        // The key may use `vars`; a variable that cannot be rendered is left out, and the
        // run itself reports the error.
        let base = MjValue::from_serialize(&ctx);
        let mut vars = serde_json::Map::new();
        for (k, v) in &plan.vars {
            if let Ok(v) = plan.templates.render_tree(v, &base) {
                vars.insert(k.clone(), v);
            }
        }
        ctx["vars"] = Value::Object(vars);
        let ctx = MjValue::from_serialize(&ctx);
        match plan.templates.render_tree(t, &ctx) {
            Ok(Value::String(s)) => Some(s),
            Ok(other) => Some(other.to_string()),
            Err(e) => {
                // Without a key the run could overlap with others; serialise it with every
                // other keyless failure of this playbook instead.
                tracing::warn!(playbook = %plan.name, error = %e, "concurrency key could not be rendered");
                Some(format!("{}:<unrenderable>", plan.name))
            }
        }
    }
}

/// Whether all runs succeeded.
pub fn all_succeeded(reports: &[RunReport]) -> bool {
    reports.iter().all(|r| r.status == RunStatus::Succeeded)
}

/// A sortable, unique run id: milliseconds since the epoch and randomness, in hex.
pub fn new_run_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let r: u32 = rand::thread_rng().gen();
    format!("run-{ms:012x}{r:08x}")
}

/// One async mutex per key, dropped when no run holds or waits for it.
#[derive(Default)]
struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.to_string()).or_default().clone()
    }
}
