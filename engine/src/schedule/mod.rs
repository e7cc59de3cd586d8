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

use crate::cases::Actor;
use crate::compile::{Bundle, Plan};
use crate::report::{RunReport, RunStatus};
use crate::step::Services;
pub use executor::{execute, RunInput};

/// How deep a chain of case-event runs may go before the loop guard stops it.
pub const DEFAULT_MAX_DEPTH: u32 = 8;

/// Runs playbooks of a bundle for the events it is given.
pub struct Engine {
    bundle: Bundle,
    services: Arc<Services>,
    locks: KeyedLocks,
    /// Depth of each run this engine started, for the lineage of the case events it causes.
    depths: Mutex<HashMap<String, u32>>,
    max_depth: u32,
}

impl Engine {
    pub fn new(bundle: Bundle, services: Services) -> Self {
        let max_depth = services
            .config
            .get("engine")
            .and_then(|e| e.get("max_depth"))
            .and_then(Value::as_u64)
            .map(|d| d.clamp(1, 100) as u32)
            .unwrap_or(DEFAULT_MAX_DEPTH);
        Engine {
            bundle,
            services: Arc::new(services),
            locks: KeyedLocks::default(),
            depths: Mutex::new(HashMap::new()),
            max_depth,
        }
    }

    /// Run the playbooks an outside event starts, then every playbook the case events they
    /// cause start, until no case event is left. Returns every run, in order.
    pub async fn handle(&self, source: &str, event: Value) -> Result<Vec<RunReport>, crate::Error> {
        let mut reports = self.dispatch_at(source, event, None, 0).await;
        reports.extend(self.drain_case_events().await?);
        Ok(reports)
    }

    /// Deliver pending case events to the playbooks they trigger, until none is left.
    /// An event is acknowledged once every run it started has finished.
    pub async fn drain_case_events(&self) -> Result<Vec<RunReport>, crate::Error> {
        let Some(store) = self.services.store.clone() else {
            return Ok(Vec::new());
        };
        let mut reports = Vec::new();
        loop {
            let pending = store.pending_events(64).await?;
            if pending.is_empty() {
                return Ok(reports);
            }
            for ev in pending {
                let depth = match &ev.actor {
                    Actor::Playbook { run_id, .. } => self.depth_of(run_id) + 1,
                    _ => 1,
                };
                let payload = ev.to_payload();
                let case = serde_json::to_value(&ev.case).ok();
                if depth > self.max_depth {
                    reports.extend(self.loop_guard(&ev, depth).await);
                } else {
                    reports.extend(
                        self.dispatch_at(ev.kind.as_str(), payload, case, depth)
                            .await,
                    );
                }
                store.ack_event(ev.id).await?;
            }
        }
    }

    fn depth_of(&self, run_id: &str) -> u32 {
        let depths = match self.depths.lock() {
            Ok(d) => d,
            Err(poisoned) => poisoned.into_inner(),
        };
        depths.get(run_id).copied().unwrap_or(0)
    }

    /// Too deep: fail the runs the event would start, and say so on the case.
    async fn loop_guard(&self, ev: &crate::cases::CaseEvent, depth: u32) -> Vec<RunReport> {
        let (plans, _) = self.matching(ev.kind.as_str(), &ev.to_payload());
        if plans.is_empty() {
            return Vec::new();
        }
        let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
        let message = format!(
            "loop guard: `{}` on {} would start {} at depth {depth}, beyond the limit of {} (a playbook keeps re-triggering itself through case events)",
            ev.kind.as_str(),
            ev.case_id,
            names.join(", "),
            self.max_depth
        );
        tracing::error!(case = %ev.case_id, %message);
        if let Some(store) = &self.services.store {
            let now = crate::cases::Timestamp::now();
            let meta = crate::persist::WriteMeta::new(Actor::System, now);
            let change = crate::cases::CaseChange::AddComment(message.clone());
            if let Err(e) = store.update(ev.case_id, vec![change], &meta).await {
                tracing::error!(error = %e, "could not record the loop guard on the case");
            }
        }
        let started = executor::rfc3339(self.services.clock.now());
        plans
            .iter()
            .map(|p| RunReport {
                run_id: new_run_id(),
                playbook: p.name.clone(),
                trigger: ev.kind.as_str().to_string(),
                status: RunStatus::Failed,
                started_at: started.clone(),
                duration_ms: 0.0,
                steps: Vec::new(),
                output: None,
                error: Some(message.clone()),
            })
            .collect()
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

    /// Run every playbook the event starts and wait for them (case events they cause are
    /// left in the store's outbox; see [`Engine::handle`]).
    pub async fn dispatch(
        &self,
        source: &str,
        event: Value,
        case: Option<Value>,
    ) -> Vec<RunReport> {
        self.dispatch_at(source, event, case, 0).await
    }

    async fn dispatch_at(
        &self,
        source: &str,
        event: Value,
        case: Option<Value>,
        depth: u32,
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
                depth,
            };
            if let Ok(mut depths) = self.depths.lock() {
                depths.insert(input.run_id.clone(), depth);
            }
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
