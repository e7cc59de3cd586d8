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

use crate::cases::{Actor, Case, CaseChange, CaseEvent, CaseId, Timestamp};
use crate::compile::{Bundle, Plan};
use crate::persist::WriteMeta;
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
    /// cause start, until no case event is left. Returns every run, in order. The event
    /// always runs; see [`Engine::handle_once`] for deduplicated delivery.
    pub async fn handle(&self, source: &str, event: Value) -> Result<Vec<RunReport>, crate::Error> {
        Ok(self.handle_once(source, event, None).await?.runs)
    }

    /// Like [`Engine::handle`], but with a dedup key (see [`dedup_key`]) the event runs only
    /// the first time the store sees that key: the key is recorded durably before anything
    /// runs, and a later delivery with the same key is reported as a duplicate and runs
    /// nothing. Without a key, or without a store, the event always runs.
    pub async fn handle_once(
        &self,
        source: &str,
        event: Value,
        dedup_key: Option<&str>,
    ) -> Result<Handled, crate::Error> {
        if let (Some(key), Some(store)) = (dedup_key, &self.services.store) {
            if !store.record_incoming(key, self.now()).await? {
                tracing::info!(%key, "duplicate event skipped");
                return Ok(Handled {
                    duplicate: true,
                    runs: Vec::new(),
                });
            }
        }
        let mut runs = self.dispatch_at(source, event, None, 0).await;
        runs.extend(self.drain_case_events().await?);
        Ok(Handled {
            duplicate: false,
            runs,
        })
    }

    /// The SLA watcher: marks every open case whose SLA was due at or before `now` as
    /// breached (one `case.sla_breached` per case, also for deadlines that passed while
    /// the engine was stopped), then delivers the case events that causes.
    pub async fn check_sla(&self, now: Timestamp) -> Result<SlaSweep, crate::Error> {
        let mut sweep = SlaSweep::default();
        let Some(store) = self.services.store.clone() else {
            return Ok(sweep);
        };
        let mut failed = std::collections::HashSet::new();
        loop {
            let due: Vec<Case> = store
                .sla_due(now, 64 + failed.len())
                .await?
                .into_iter()
                .filter(|c| !failed.contains(&c.id))
                .collect();
            if due.is_empty() {
                break;
            }
            for c in due {
                let meta = WriteMeta::new(Actor::System, now);
                match store
                    .update(c.id, vec![CaseChange::MarkSlaBreached], &meta)
                    .await
                {
                    Ok(out) if !out.events.is_empty() => sweep.breached.push(c.id),
                    Ok(_) => {}
                    Err(e) => {
                        // One case that cannot be changed must not stop the others; it
                        // is tried again on the next sweep.
                        tracing::error!(case = %c.id, error = %e, "could not mark the SLA breached");
                        failed.insert(c.id);
                    }
                }
            }
        }
        sweep.runs = self.drain_case_events().await?;
        Ok(sweep)
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
                reports.extend(self.deliver_case_event(&ev).await?);
                store.ack_event(ev.id).await?;
            }
        }
    }

    /// Start the playbooks one case event triggers and wait for them, without
    /// acknowledging the event (the dispatcher, [`Engine::drain_case_events`], does that
    /// next). Each (event, playbook) pair is recorded in the store before its run starts,
    /// so a redelivery after a crash between the runs and the acknowledgement skips the
    /// playbooks already started: a pair never runs twice.
    pub async fn deliver_case_event(&self, ev: &CaseEvent) -> Result<Vec<RunReport>, crate::Error> {
        let depth = match &ev.actor {
            Actor::Playbook { run_id, .. } => self.depth_of(run_id) + 1,
            _ => 1,
        };
        let payload = ev.to_payload();
        let (plans, errors) = self.matching(ev.kind.as_str(), &payload);
        for (playbook, e) in &errors {
            tracing::warn!(%playbook, error = %e, "trigger could not be evaluated");
        }
        let mut starts = Vec::with_capacity(plans.len());
        for plan in plans {
            let run_id = new_run_id();
            if let Some(store) = &self.services.store {
                if !store.start_delivery(ev.id, &plan.name, &run_id).await? {
                    tracing::info!(
                        event = ev.id,
                        playbook = %plan.name,
                        "case event already delivered to this playbook; not running it again"
                    );
                    continue;
                }
            }
            starts.push((plan, run_id));
        }
        if starts.is_empty() {
            return Ok(Vec::new());
        }
        if depth > self.max_depth {
            return Ok(self.loop_guard(ev, depth, starts).await);
        }
        let case = serde_json::to_value(&ev.case).ok();
        Ok(self
            .run_plans(starts, ev.kind.as_str(), payload, case, depth)
            .await)
    }

    fn now(&self) -> Timestamp {
        let ms = self
            .services
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp::from_unix_millis(ms).unwrap_or_else(|_| Timestamp::now())
    }

    fn depth_of(&self, run_id: &str) -> u32 {
        let depths = match self.depths.lock() {
            Ok(d) => d,
            Err(poisoned) => poisoned.into_inner(),
        };
        depths.get(run_id).copied().unwrap_or(0)
    }

    /// Too deep: fail the runs the event would start, and say so on the case.
    async fn loop_guard(
        &self,
        ev: &CaseEvent,
        depth: u32,
        starts: Vec<(Arc<Plan>, String)>,
    ) -> Vec<RunReport> {
        let names: Vec<&str> = starts.iter().map(|(p, _)| p.name.as_str()).collect();
        let message = format!(
            "loop guard: `{}` on {} would start {} at depth {depth}, beyond the limit of {} (a playbook keeps re-triggering itself through case events; raise `engine.max_depth` only if the chain is meant to be this long)",
            ev.kind.as_str(),
            ev.case_id,
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            self.max_depth
        );
        tracing::error!(case = %ev.case_id, %message);
        if let Some(store) = &self.services.store {
            let meta = WriteMeta::new(Actor::System, self.now());
            let change = CaseChange::AddComment(message.clone());
            if let Err(e) = store.update(ev.case_id, vec![change], &meta).await {
                tracing::error!(error = %e, "could not record the loop guard on the case");
            }
        }
        let started = executor::rfc3339(self.services.clock.now());
        starts
            .into_iter()
            .map(|(p, run_id)| RunReport {
                run_id,
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
        let starts = plans.into_iter().map(|p| (p, new_run_id())).collect();
        self.run_plans(starts, source, event, case, depth).await
    }

    /// Runs each plan under its run id, concurrently except where concurrency keys say
    /// otherwise, and waits for all of them.
    async fn run_plans(
        &self,
        starts: Vec<(Arc<Plan>, String)>,
        source: &str,
        event: Value,
        case: Option<Value>,
        depth: u32,
    ) -> Vec<RunReport> {
        let mut set = tokio::task::JoinSet::new();
        for (plan, run_id) in starts {
            let input = RunInput {
                run_id,
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

/// What [`Engine::handle_once`] did with one incoming event.
#[derive(Debug, Default)]
pub struct Handled {
    /// The event's dedup key was seen before: nothing ran.
    pub duplicate: bool,
    /// Every run it caused, in order.
    pub runs: Vec<RunReport>,
}

/// What one [`Engine::check_sla`] sweep did.
#[derive(Debug, Default)]
pub struct SlaSweep {
    /// The cases marked breached, in deadline order.
    pub breached: Vec<CaseId>,
    /// The runs their `case.sla_breached` events (and what those caused) started.
    pub runs: Vec<RunReport>,
}

/// The dedup key of an incoming event: `<source>:<uuid>` when the event has a non-empty
/// string `uuid` (Okta System Log events do), else `None` (such events always run).
pub fn dedup_key(source: &str, event: &Value) -> Option<String> {
    match event.get("uuid") {
        Some(Value::String(u)) if !u.trim().is_empty() => Some(format!("{source}:{}", u.trim())),
        _ => None,
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
