//! The executor: runs one plan on tokio.
//!
//! One task owns the run's state and a `JoinSet` of running steps. It asks
//! [`super::ready::next_actions`] what to do, evaluates conditions, renders inputs, starts
//! steps, and on each completion records the result before releasing dependents. Timeout,
//! retry with backoff and jitter, `for_each` fan-out and tracing spans are applied here,
//! once, around every step. With a [`RunJournal`], each result is also journaled and made
//! durable before the next step starts (the rule is on [`super::journal`]), and a resumed
//! run starts from the journaled results of its earlier attempt ([`Execution::restored`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use minijinja::value::{Enumerator, Object};
use minijinja::Value as MjValue;
use rand::Rng;
use serde_json::Value;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::journal::RunJournal;
use super::ready::{self, Action, Failure, Shape, Status};
use super::retry;
use crate::compile::{lazy_json, OnError, Plan, RetryPolicy};
use crate::report::{RunReport, RunStatus, StepReport};
use crate::step::{Services, Step, StepContext, StepError};

/// What starts a run.
#[derive(Debug, Clone)]
pub struct RunInput {
    pub run_id: String,
    /// The event source or case event type that triggered the run.
    pub trigger: String,
    pub event: Value,
    /// The case the event is about, for case events.
    pub case: Option<Value>,
    /// How many runs led to this one: 0 for an outside event, parent + 1 for a case event
    /// caused by a run.
    pub depth: u32,
}

/// The scheduler's view of a plan.
pub fn shape(plan: &Plan) -> Shape {
    Shape {
        deps: plan.deps.clone(),
        on_error: plan
            .steps
            .iter()
            .map(|s| match s.on_error {
                OnError::Fail => Failure::FailRun,
                OnError::Continue => Failure::Continue,
                OnError::Handler(h) => Failure::Handler(h),
            })
            .collect(),
        is_handler: plan.steps.iter().map(|s| s.is_handler).collect(),
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

struct Outcome {
    index: usize,
    result: Result<Value, StepError>,
    attempts: u32,
    duration: Duration,
}

/// How a run is executed beyond its input.
#[derive(Default)]
pub struct Execution {
    /// Where step results are journaled; `None` runs without a journal.
    pub journal: Option<RunJournal>,
    /// Steps an earlier attempt of this run finished (from its journal), in the order they
    /// did: their results are taken as they are and they do not run again. Steps that are
    /// not in the plan, or were cancelled, are ignored.
    pub restored: Vec<StepReport>,
    /// The run's seed for step randomness; `None`: the services' seed, else a fresh one.
    pub seed: Option<u64>,
}

/// Run a plan to the end and report.
pub async fn execute(plan: Arc<Plan>, input: RunInput, services: Arc<Services>) -> RunReport {
    execute_with(plan, input, services, Execution::default()).await
}

/// Run a plan to the end with a journal, or resume it from one, and report.
pub async fn execute_with(
    plan: Arc<Plan>,
    input: RunInput,
    services: Arc<Services>,
    execution: Execution,
) -> RunReport {
    execute_returning_input(plan, input, services, execution)
        .await
        .0
}

/// [`execute_with`], handing back the input's event and case (the scheduler stores them
/// with the run's final record; this way they are neither copied nor converted whole for
/// the templates, which read them where they look: [`lazy_json`]).
pub(crate) async fn execute_returning_input(
    plan: Arc<Plan>,
    input: RunInput,
    services: Arc<Services>,
    execution: Execution,
) -> (RunReport, Value, Option<Value>) {
    let span = tracing::info_span!("run", run_id = %input.run_id, playbook = %plan.name);
    run(plan, input, services, execution).instrument(span).await
}

/// Every step's output in one run, shared by all the template contexts of the run.
///
/// A step's context shows the outputs recorded before the step was considered, as the
/// old per-step copy of a map did, but without copying: each output is written once with
/// a sequence number, and a [`StepsView`] shows those numbered up to its own. That keeps
/// building a step's context O(1) instead of O(steps) (a 50-step chain used to spend most
/// of its time re-collecting the map).
#[derive(Debug)]
struct Outputs {
    plan: Arc<Plan>,
    /// Step indices in id order: `steps` enumerates like a sorted map, lookups bisect.
    by_id: Vec<usize>,
    /// `(sequence number, output)`, set when the step finishes or is skipped.
    slots: Vec<OnceLock<(u64, MjValue)>>,
    /// Outputs recorded so far; only the run's own task advances it.
    recorded: AtomicU64,
}

impl Outputs {
    fn new(plan: Arc<Plan>) -> Self {
        let mut by_id: Vec<usize> = (0..plan.steps.len()).collect();
        by_id.sort_by(|a, b| plan.steps[*a].id.cmp(&plan.steps[*b].id));
        let slots = (0..plan.steps.len()).map(|_| OnceLock::new()).collect();
        Outputs {
            plan,
            by_id,
            slots,
            recorded: AtomicU64::new(0),
        }
    }

    /// Record a step's output; each step finishes once.
    fn record(&self, i: usize, v: MjValue) {
        let seq = self.recorded.load(Ordering::Relaxed) + 1;
        if self.slots[i].set((seq, v)).is_ok() {
            self.recorded.store(seq, Ordering::Relaxed);
        }
    }

    /// `steps` as it stands now.
    fn view(self: &Arc<Self>) -> MjValue {
        MjValue::from_object(StepsView {
            outputs: self.clone(),
            upto: self.recorded.load(Ordering::Relaxed),
        })
    }
}

/// `steps` in one context: the outputs recorded up to `upto`.
#[derive(Debug)]
struct StepsView {
    outputs: Arc<Outputs>,
    upto: u64,
}

impl StepsView {
    fn visible(&self, i: usize) -> Option<&MjValue> {
        match self.outputs.slots[i].get() {
            Some((seq, v)) if *seq <= self.upto => Some(v),
            _ => None,
        }
    }
}

impl Object for StepsView {
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<MjValue> {
        let o = &self.outputs;
        let k = o
            .by_id
            .binary_search_by(|i| o.plan.steps[*i].id.as_str().cmp(key))
            .ok()?;
        self.visible(o.by_id[k]).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let o = &self.outputs;
        Enumerator::Values(
            o.by_id
                .iter()
                .filter(|i| self.visible(**i).is_some())
                .map(|i| MjValue::from(o.plan.steps[*i].id.as_str()))
                .collect(),
        )
    }
}

/// The root of a template context: the names fixed for the run (`event`, `now`, `vars`,
/// `case`, `secrets`, `run`) and those one step adds. Cloning it clones a few `Arc`s.
#[derive(Debug, Clone, Default)]
struct Scope {
    base: Arc<BTreeMap<&'static str, MjValue>>,
    steps: Option<MjValue>,
    error: Option<MjValue>,
    item: Option<MjValue>,
    index: Option<MjValue>,
}

impl Scope {
    fn value(&self) -> MjValue {
        MjValue::from_object(self.clone())
    }

    fn extra(&self) -> [(&'static str, Option<&MjValue>); 4] {
        [
            ("steps", self.steps.as_ref()),
            ("error", self.error.as_ref()),
            ("item", self.item.as_ref()),
            ("index", self.index.as_ref()),
        ]
    }
}

impl Object for Scope {
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<MjValue> {
        match self.extra().into_iter().find(|(k, _)| *k == key) {
            Some((_, v)) => v.cloned(),
            None => self.base.get(key).cloned(),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<&'static str> = self.base.keys().copied().collect();
        keys.extend(self.extra().into_iter().filter_map(|(k, v)| v.map(|_| k)));
        keys.sort_unstable();
        Enumerator::Values(keys.into_iter().map(MjValue::from).collect())
    }
}

async fn run(
    plan: Arc<Plan>,
    input: RunInput,
    services: Arc<Services>,
    execution: Execution,
) -> (RunReport, Value, Option<Value>) {
    let started = Instant::now();
    let now = services.clock.now();
    let seed = execution
        .seed
        .or(services.seed)
        .unwrap_or_else(|| rand::thread_rng().gen());
    let mut journal = execution.journal;
    let n = plan.steps.len();
    let shape = shape(&plan);
    let mut status = vec![Status::Pending; n];
    let mut reports: Vec<StepReport> = plan
        .steps
        .iter()
        .map(|s| StepReport {
            id: s.id.clone(),
            uses: s.uses.clone(),
            status: Status::Pending,
            attempts: 0,
            duration_ms: 0.0,
            output: None,
            error: None,
            reason: None,
        })
        .collect();
    let outputs = Arc::new(Outputs::new(plan.clone()));
    let mut handler_error: BTreeMap<usize, Value> = BTreeMap::new();
    restore(
        &plan,
        execution.restored,
        &mut status,
        &mut reports,
        &outputs,
        &mut handler_error,
    );

    let event = Arc::new(input.event);
    let case = input.case.map(Arc::new);
    let mut base: BTreeMap<&'static str, MjValue> = BTreeMap::new();
    base.insert("event", lazy_json::lazy(event.clone()));
    base.insert("now", MjValue::from(rfc3339(now)));
    let mut run_error = None;
    // Variables see the event and the time, nothing else.
    let mut vars = BTreeMap::new();
    if !plan.vars.is_empty() {
        let ctx = MjValue::from_iter(base.clone());
        for (k, t) in &plan.vars {
            match plan.templates.render_tree(t, &ctx) {
                Ok(v) => {
                    vars.insert(k.clone(), v);
                }
                Err(e) => {
                    run_error = Some(format!("`vars.{k}`: {e}"));
                }
            }
        }
    }
    base.insert("vars", MjValue::from_serialize(&vars));
    base.insert(
        "case",
        case.as_ref()
            .map(|c| lazy_json::lazy(c.clone()))
            .unwrap_or(MjValue::from(())),
    );
    let secrets = services
        .config
        .get("secrets")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    base.insert("secrets", MjValue::from_serialize(&secrets));
    base.insert(
        "run",
        MjValue::from_serialize(
            serde_json::json!({"id": input.run_id, "playbook": plan.name, "depth": input.depth}),
        ),
    );
    let base = Arc::new(base);

    let mut running: JoinSet<Outcome> = JoinSet::new();
    // Which step each task runs, so a task that panicked is blamed on its own step.
    let mut tasks: HashMap<tokio::task::Id, usize> = HashMap::new();
    if run_error.is_some() {
        for (i, s) in status.iter_mut().enumerate() {
            if !s.is_terminal() {
                *s = Status::Cancelled;
                reports[i].status = Status::Cancelled;
                reports[i].reason = Some("the run failed before this step".into());
            }
        }
    }
    // Set when the journal cannot be written: nothing new starts, the run fails, and its
    // record stays `running` so the next start-up resumes it.
    let mut halted: Option<String> = None;
    loop {
        // Apply decisions until none is left; skips can make more steps ready. Steps to
        // start are collected and started together once the journal is durable.
        let mut to_start: Vec<(usize, Scope)> = Vec::new();
        while halted.is_none() {
            let actions = ready::next_actions(&shape, &status);
            if actions.is_empty() {
                break;
            }
            for action in actions {
                match action {
                    Action::Cancel(i) => {
                        status[i] = Status::Cancelled;
                        reports[i].status = Status::Cancelled;
                        reports[i].reason = Some("the run failed before this step started".into());
                    }
                    Action::Skip(i, why) => {
                        status[i] = Status::Skipped;
                        reports[i].status = Status::Skipped;
                        reports[i].reason = Some(why.into());
                        outputs.record(i, MjValue::from(()));
                        if let Some(j) = journal.as_mut() {
                            j.push(i, false);
                        }
                    }
                    Action::Consider(i) => {
                        let step = &plan.steps[i];
                        let scope = Scope {
                            base: base.clone(),
                            steps: Some(outputs.view()),
                            error: handler_error.get(&i).map(MjValue::from_serialize),
                            item: None,
                            index: None,
                        };
                        let go = match (&step.condition, step.literal_condition) {
                            (_, Some(b)) => Ok(b),
                            (Some(c), None) => {
                                plan.templates.truth(c, &scope.value()).map_err(|e| {
                                    StepError::invalid_input(format!(
                                        "`if` could not be evaluated: {e}"
                                    ))
                                })
                            }
                            (None, None) => Ok(true),
                        };
                        match go {
                            Ok(false) => {
                                status[i] = Status::Skipped;
                                reports[i].status = Status::Skipped;
                                reports[i].reason = Some("`if` was false".into());
                                outputs.record(i, MjValue::from(()));
                                if let Some(j) = journal.as_mut() {
                                    j.push(i, false);
                                }
                            }
                            Ok(true) => {
                                status[i] = Status::Running;
                                reports[i].status = Status::Running;
                                to_start.push((i, scope));
                            }
                            Err(e) => {
                                finish(
                                    &plan,
                                    i,
                                    Err(e),
                                    0,
                                    Duration::ZERO,
                                    &mut status,
                                    &mut reports,
                                    &outputs,
                                    &mut handler_error,
                                );
                                if let Some(j) = journal.as_mut() {
                                    j.push(i, false);
                                }
                            }
                        }
                    }
                }
            }
        }
        if to_start.is_empty() && running.is_empty() {
            // The run is over. Its last entries go with its final record
            // (`Runs::finish_run`, written and flushed as a sync would be, before anything
            // learns that the run ended), so a sync here would be a commit and a flush
            // more for nothing; a crash before that record resumes the run, as it would
            // after any step whose end was not synced yet.
            break;
        }
        if let Some(j) = journal.as_mut() {
            // Before a step with outside effects starts, the run's record and every
            // finished step's entry are on disk, and the end of a step with effects is
            // flushed at the next decision whether or not something starts: such a step,
            // once journaled, is never run again after a crash (DESIGN §5). Concurrent runs
            // share the flush. Starting only effect-free steps (`set`, `cases.query`)
            // commits without waiting for the disk: what a crash could take back then is
            // work that is harmless to redo (see `journal`).
            let effects = to_start.iter().any(|(i, _)| !plan.steps[*i].effect_free);
            let written = j.before_start(&reports, effects).await;
            if let Err(e) = written {
                tracing::error!(error = %e, "the run journal cannot be written; stopping the run");
                halted = Some(format!("the run journal cannot be written: {e}"));
                for (i, _) in to_start.drain(..) {
                    status[i] = Status::Pending;
                    reports[i].status = Status::Pending;
                }
                for (i, s) in status.iter_mut().enumerate() {
                    if *s == Status::Pending {
                        *s = Status::Cancelled;
                        reports[i].status = Status::Cancelled;
                        reports[i].reason =
                            Some("the run stopped: its journal cannot be written".into());
                    }
                }
            }
        }
        for (i, scope) in to_start {
            let step = &plan.steps[i];
            let fut = run_step(
                plan.clone(),
                i,
                scope,
                StepContext {
                    run_id: input.run_id.clone(),
                    playbook: plan.name.clone(),
                    step: step.id.clone(),
                    attempt: 1,
                    item_index: None,
                    services: services.clone(),
                    seed,
                },
            );
            let span = tracing::info_span!("step", step = %step.id, uses = %step.uses);
            let task = running.spawn(fut.instrument(span));
            tasks.insert(task.id(), i);
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        let done = match joined {
            Ok((id, o)) => {
                tasks.remove(&id);
                finish(
                    &plan,
                    o.index,
                    o.result,
                    o.attempts,
                    o.duration,
                    &mut status,
                    &mut reports,
                    &outputs,
                    &mut handler_error,
                );
                Some(o.index)
            }
            Err(e) => {
                // A step that panicked.
                let i = tasks.remove(&e.id());
                if let Some(i) = i {
                    let err = StepError::permanent(format!("step crashed: {e}"));
                    finish(
                        &plan,
                        i,
                        Err(err),
                        1,
                        Duration::ZERO,
                        &mut status,
                        &mut reports,
                        &outputs,
                        &mut handler_error,
                    );
                }
                i
            }
        };
        if let (Some(i), Some(j)) = (done, journal.as_mut()) {
            j.push(i, !plan.steps[i].effect_free);
        }
    }
    if run_error.is_none() {
        run_error = halted;
    }

    let failed = run_error.is_some() || ready::run_failed(&shape, &status);
    let mut output = None;
    if !failed {
        if let Some(t) = &plan.output {
            let scope = Scope {
                base: base.clone(),
                steps: Some(outputs.view()),
                ..Scope::default()
            };
            match plan.templates.render_tree(t, &scope.value()) {
                Ok(v) => output = Some(v),
                Err(e) => run_error = Some(format!("`output`: {e}")),
            }
        }
    }
    if failed && run_error.is_none() {
        run_error = reports
            .iter()
            .find(|r| r.status == Status::Failed)
            .map(|r| {
                format!(
                    "step `{}` failed: {}",
                    r.id,
                    r.error.as_ref().map(|e| e.message.as_str()).unwrap_or("")
                )
            });
    }
    let status = if run_error.is_some() {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    tracing::info!(status = ?status, "run finished");
    let report = RunReport {
        run_id: input.run_id,
        playbook: plan.name.clone(),
        trigger: input.trigger,
        status,
        started_at: rfc3339(now),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        steps: reports,
        output,
        error: run_error,
        event_key: None,
        inbox_seq: None,
    };
    // Every context is gone with the run's steps, and with them the other references.
    drop(base);
    let event = Arc::try_unwrap(event).unwrap_or_else(|shared| (*shared).clone());
    let case = case.map(|c| Arc::try_unwrap(c).unwrap_or_else(|shared| (*shared).clone()));
    (report, event, case)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    plan: &Plan,
    i: usize,
    result: Result<Value, StepError>,
    attempts: u32,
    duration: Duration,
    status: &mut [Status],
    reports: &mut [StepReport],
    outputs: &Outputs,
    handler_error: &mut BTreeMap<usize, Value>,
) {
    let step = &plan.steps[i];
    reports[i].attempts = attempts;
    reports[i].duration_ms = duration.as_secs_f64() * 1000.0;
    match result {
        Ok(v) => {
            status[i] = Status::Succeeded;
            reports[i].status = Status::Succeeded;
            outputs.record(i, MjValue::from_serialize(&v));
            reports[i].output = Some(v);
        }
        Err(e) => {
            tracing::warn!(step = %step.id, error = %e.message, "step failed");
            status[i] = Status::Failed;
            reports[i].status = Status::Failed;
            outputs.record(i, MjValue::from(()));
            if let OnError::Handler(h) = step.on_error {
                handler_error.entry(h).or_insert_with(
                    || serde_json::json!({"step": step.id, "message": e.message, "kind": e.kind}),
                );
            }
            reports[i].error = Some(e);
        }
    }
}

/// Takes the journaled results of an earlier attempt of the run as finished steps.
fn restore(
    plan: &Plan,
    restored: Vec<StepReport>,
    status: &mut [Status],
    reports: &mut [StepReport],
    outputs: &Outputs,
    handler_error: &mut BTreeMap<usize, Value>,
) {
    for r in restored {
        let Some(i) = plan.steps.iter().position(|s| s.id == r.id) else {
            tracing::warn!(step = %r.id, "journaled step is not in the playbook any more; ignored");
            continue;
        };
        if !r.status.is_terminal() || r.status == Status::Cancelled || status[i].is_terminal() {
            continue;
        }
        status[i] = r.status;
        match (&r.status, &r.output) {
            (Status::Succeeded, Some(v)) => outputs.record(i, MjValue::from_serialize(v)),
            _ => outputs.record(i, MjValue::from(())),
        }
        if let (Status::Failed, OnError::Handler(h), Some(e)) =
            (r.status, plan.steps[i].on_error, &r.error)
        {
            handler_error.entry(h).or_insert_with(
                || serde_json::json!({"step": r.id, "message": e.message, "kind": e.kind}),
            );
        }
        reports[i] = r;
    }
}

async fn run_step(plan: Arc<Plan>, index: usize, scope: Scope, sctx: StepContext) -> Outcome {
    let started = Instant::now();
    let step = &plan.steps[index];
    let (result, attempts) = match &step.for_each {
        None => match plan.templates.render_tree(&step.with, &scope.value()) {
            Ok(input) => {
                attempts_loop(step.step.as_ref(), input, sctx, &step.retry, step.timeout).await
            }
            Err(e) => (
                Err(StepError::invalid_input(format!(
                    "`with` could not be rendered: {e}"
                ))),
                0,
            ),
        },
        Some(fe) => {
            let items = plan.templates.render_tree(&fe.items, &scope.value());
            match items {
                Ok(Value::Array(items)) => {
                    for_each(&plan, index, scope, items, fe.concurrency, sctx).await
                }
                Ok(other) => (
                    Err(StepError::invalid_input(format!(
                        "`for_each` must give a list, got {}",
                        short(&other)
                    ))),
                    0,
                ),
                Err(e) => (
                    Err(StepError::invalid_input(format!(
                        "`for_each` could not be rendered: {e}"
                    ))),
                    0,
                ),
            }
        }
    };
    Outcome {
        index,
        result,
        attempts,
        duration: started.elapsed(),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(77).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

async fn for_each(
    plan: &Arc<Plan>,
    index: usize,
    scope: Scope,
    items: Vec<Value>,
    concurrency: usize,
    sctx: StepContext,
) -> (Result<Value, StepError>, u32) {
    let step = &plan.steps[index];
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let c = Scope {
            item: Some(MjValue::from_serialize(&item)),
            index: Some(MjValue::from(i)),
            ..scope.clone()
        };
        let input = plan.templates.render_tree(&step.with, &c.value());
        let mut sctx = sctx.clone();
        sctx.item_index = Some(i);
        let limit = limit.clone();
        let plan = plan.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let step = &plan.steps[index];
            let r = match input {
                Ok(input) => {
                    attempts_loop(step.step.as_ref(), input, sctx, &step.retry, step.timeout).await
                }
                Err(e) => (
                    Err(StepError::invalid_input(format!(
                        "`with` could not be rendered: {e}"
                    ))),
                    0,
                ),
            };
            (i, r)
        });
    }
    let mut results: BTreeMap<usize, Value> = BTreeMap::new();
    let mut first_error: Option<(usize, StepError)> = None;
    let mut max_attempts = 0;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, (r, attempts))) => {
                max_attempts = max_attempts.max(attempts);
                match r {
                    Ok(v) => {
                        results.insert(i, v);
                    }
                    Err(e) => {
                        if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                            first_error = Some((i, e));
                        }
                    }
                }
            }
            Err(e) => {
                first_error = Some((
                    usize::MAX,
                    StepError::permanent(format!("item crashed: {e}")),
                ))
            }
        }
    }
    match first_error {
        Some((i, e)) => (
            Err(StepError {
                kind: e.kind,
                message: format!("item {i}: {}", e.message),
            }),
            max_attempts,
        ),
        None => (
            Ok(Value::Array(results.into_values().collect())),
            max_attempts,
        ),
    }
}

/// One step's attempts: timeout per attempt, retries with backoff for retryable errors.
async fn attempts_loop(
    step: &dyn Step,
    mut input: Value,
    mut ctx: StepContext,
    policy: &RetryPolicy,
    timeout: Option<Duration>,
) -> (Result<Value, StepError>, u32) {
    let mut attempt = 1;
    loop {
        ctx.attempt = attempt;
        // The last attempt allowed takes the input; only one that may be retried copies it.
        let this_input = if attempt >= policy.attempts {
            std::mem::take(&mut input)
        } else {
            input.clone()
        };
        let fut = step.run(this_input, &ctx);
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => Err(StepError::timeout(format!(
                    "timed out after {}",
                    humantime::format_duration(t)
                ))),
            },
            None => fut.await,
        };
        match result {
            Ok(v) => return (Ok(v), attempt),
            Err(e) if retry::should_retry(policy, e.kind, attempt) => {
                let unit: f64 = ctx.rng().gen::<f64>();
                let wait = retry::delay(policy, attempt, unit);
                tracing::warn!(attempt, error = %e.message, wait_ms = wait.as_millis() as u64, "attempt failed, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return (Err(e), attempt),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Behaviour of whole runs: what each step sees and how the report comes out. These pin
    //! the template context (`steps`, `vars`, `error`, `item`) that the executor builds.

    use super::*;
    use crate::step::{Registry, TypedStep};
    use crate::RunStatus;
    use async_trait::async_trait;
    use serde_json::{json, Map};

    /// Returns its input.
    struct Echo;

    #[async_trait]
    impl TypedStep for Echo {
        type Input = Map<String, Value>;
        type Output = Map<String, Value>;
        const NAME: &'static str = "echo";
        fn description(&self) -> &'static str {
            "returns its input"
        }
        fn example(&self) -> Value {
            json!({})
        }
        async fn run(
            &self,
            input: Map<String, Value>,
            ctx: &StepContext,
        ) -> Result<Map<String, Value>, StepError> {
            if let Some(ms) = input.get("sleep_ms").and_then(Value::as_u64) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if input.get("panic") == Some(&Value::Bool(true)) {
                panic!("asked to panic");
            }
            if let Some(until) = input.get("fail_until").and_then(Value::as_u64) {
                if u64::from(ctx.attempt) < until {
                    return Err(StepError::retryable("not yet"));
                }
            }
            if let Some(m) = input.get("fail").and_then(Value::as_str) {
                return Err(StepError::permanent(m));
            }
            Ok(input)
        }
    }

    fn plan(yaml: &str) -> Arc<Plan> {
        let mut registry = Registry::new();
        registry.register(Echo);
        let source = crate::load::parse_source(std::path::Path::new("t.yaml"), yaml.into())
            .unwrap_or_else(|d| panic!("{d:?}"));
        let bundle = crate::compile::compile_sources(&[source], &registry)
            .unwrap_or_else(|d| panic!("{d:?}"));
        bundle.playbooks[0].clone()
    }

    async fn run_yaml(yaml: &str, event: Value) -> RunReport {
        let input = RunInput {
            run_id: "r1".into(),
            trigger: "t".into(),
            event,
            case: None,
            depth: 0,
        };
        let mut services = Services::default();
        services.seed = Some(1);
        execute(plan(yaml), input, Arc::new(services)).await
    }

    fn out(r: &RunReport, id: &str) -> Value {
        r.step(id)
            .and_then(|s| s.output.clone())
            .unwrap_or(Value::Null)
    }

    fn status(r: &RunReport, id: &str) -> Status {
        r.step(id).map(|s| s.status).unwrap_or(Status::Pending)
    }

    #[tokio::test]
    async fn outputs_flow_down_a_chain_and_into_the_run_output() {
        let r = run_yaml(
            r#"
playbook: p
on: { event: t }
vars:
  base: "{{ event.n * 10 }}"
steps:
  - id: a
    uses: echo
    with: { n: "{{ event.n }}", v: "{{ vars.base }}", run: "{{ run.id }}" }
  - id: b
    uses: echo
    with: { n: "{{ steps.a.n + 1 }}", text: "a gave {{ steps.a.n }}" }
output:
  n: "{{ steps.b.n }}"
  text: "{{ steps.b.text }}"
"#,
            json!({"n": 4}),
        )
        .await;
        assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
        assert_eq!(out(&r, "a"), json!({"n": 4, "v": 40, "run": "r1"}));
        assert_eq!(r.output, Some(json!({"n": 5, "text": "a gave 4"})));
    }

    #[tokio::test]
    async fn steps_holds_what_finished_before_a_step_was_considered() {
        // `c` waits for `a` and the skipped `b`; `late` runs beside them and finishes after
        // `c` starts, so `c` must not see it. The run output sees everything.
        let r = run_yaml(
            r#"
playbook: p
on: { event: t }
steps:
  - id: a
    uses: echo
    with: { n: 1 }
  - id: b
    uses: echo
    if: "{{ steps.a.n > 5 }}"
    with: { n: 2 }
  - id: late
    uses: echo
    with: { sleep_ms: 50 }
  - id: c
    uses: echo
    needs: [a, b]
    with:
      keys: "{{ steps | list }}"
      count: "{{ steps | length }}"
      b_is_none: "{{ steps.b is none }}"
      is_map: "{{ steps is mapping }}"
      pairs: "{{ steps | dictsort | map(attribute=0) | list }}"
output:
  keys: "{{ steps | list }}"
  all: "{{ steps }}"
"#,
            json!({}),
        )
        .await;
        assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
        assert_eq!(status(&r, "b"), Status::Skipped);
        assert_eq!(
            out(&r, "c"),
            json!({"keys": ["a", "b"], "count": 2, "b_is_none": true, "is_map": true, "pairs": ["a", "b"]})
        );
        let output = r.output.clone().unwrap_or(Value::Null);
        assert_eq!(output["keys"], json!(["a", "b", "c", "late"]));
        assert_eq!(output["all"]["b"], Value::Null);
        assert_eq!(output["all"]["a"], json!({"n": 1}));
    }

    #[tokio::test]
    async fn a_step_skipped_by_if_is_visible_to_the_rest_of_its_batch() {
        // `a` and `b` are considered together; `b` reads `steps` after `a` was skipped.
        let r = run_yaml(
            r#"
playbook: p
on: { event: t }
steps:
  - id: a
    uses: echo
    if: false
  - id: b
    uses: echo
    with: { keys: "{{ steps | list }}" }
"#,
            json!({}),
        )
        .await;
        assert_eq!(status(&r, "a"), Status::Skipped);
        assert_eq!(out(&r, "b"), json!({"keys": ["a"]}));
    }

    #[tokio::test]
    async fn exclusive_branches_join_once() {
        let yaml = r#"
playbook: p
on: { event: t }
steps:
  - id: existing
    uses: echo
    with: { found: "{{ event.found }}" }
  - id: update
    uses: echo
    if: "{{ steps.existing.found }}"
    with: { what: update }
  - id: create
    uses: echo
    if: "{{ not steps.existing.found }}"
    with: { what: create }
  - id: escalate
    uses: echo
    with: { via: "{{ (steps.update or steps.create).what }}" }
"#;
        for (found, via, skipped) in [(true, "update", "create"), (false, "create", "update")] {
            let r = run_yaml(yaml, json!({"found": found})).await;
            assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
            assert_eq!(out(&r, "escalate"), json!({"via": via}));
            assert_eq!(status(&r, skipped), Status::Skipped);
            assert_eq!(r.step("escalate").map(|s| s.attempts), Some(1));
        }
    }

    #[tokio::test]
    async fn a_failure_cancels_pending_steps_and_fails_the_run() {
        let r = run_yaml(
            r#"
playbook: p
on: { event: t }
steps:
  - id: a
    uses: echo
    with: { fail: "no way" }
  - id: b
    uses: echo
    with: { n: "{{ steps.a.n }}" }
output:
  never: "{{ steps.b }}"
"#,
            json!({}),
        )
        .await;
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(status(&r, "a"), Status::Failed);
        assert_eq!(status(&r, "b"), Status::Cancelled);
        assert_eq!(r.output, None);
        assert_eq!(r.error.as_deref(), Some("step `a` failed: no way"));
    }

    #[tokio::test]
    async fn continue_and_handlers() {
        let r = run_yaml(
            r#"
playbook: p
on: { event: t }
steps:
  - id: soft
    uses: echo
    on_error: continue
    with: { fail: "soft failure" }
  - id: after_soft
    uses: echo
    with: { soft_is_none: "{{ steps.soft is none }}" }
  - id: hard
    uses: echo
    on_error: handle
    with: { fail: "hard failure" }
  - id: after_hard
    uses: echo
    with: { n: "{{ steps.hard.n }}" }
  - id: handle
    uses: echo
    with: { failed: "{{ error.step }}", message: "{{ error.message }}", kind: "{{ error.kind }}" }
"#,
            json!({}),
        )
        .await;
        assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
        assert_eq!(out(&r, "after_soft"), json!({"soft_is_none": true}));
        assert_eq!(status(&r, "after_hard"), Status::Skipped);
        assert_eq!(
            out(&r, "handle"),
            json!({"failed": "hard", "message": "hard failure", "kind": "permanent"})
        );
    }

    #[tokio::test]
    async fn for_each_sees_item_index_and_earlier_steps() {
        let r = run_yaml(
            r#"
playbook: p
on: { event: t }
steps:
  - id: a
    uses: echo
    with: { tag: x }
  - id: each
    uses: echo
    for_each: { items: "{{ event.ips }}", concurrency: 2 }
    with: { ip: "{{ item }}", i: "{{ index }}", tag: "{{ steps.a.tag }}" }
"#,
            json!({"ips": ["1.1.1.1", "2.2.2.2", "3.3.3.3"]}),
        )
        .await;
        assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
        assert_eq!(
            out(&r, "each"),
            json!([
                {"ip": "1.1.1.1", "i": 0, "tag": "x"},
                {"ip": "2.2.2.2", "i": 1, "tag": "x"},
                {"ip": "3.3.3.3", "i": 2, "tag": "x"}
            ])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_retry_gets_the_same_input() {
        let r = run_yaml(
            r#"
playbook: p
on: { event: t }
steps:
  - id: a
    uses: echo
    retry: { attempts: 3 }
    with: { fail_until: 3, n: "{{ event.n }}" }
"#,
            json!({"n": 9}),
        )
        .await;
        assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
        assert_eq!(r.step("a").map(|s| s.attempts), Some(3));
        assert_eq!(out(&r, "a"), json!({"fail_until": 3, "n": 9}));
    }

    #[tokio::test]
    async fn render_errors_fail_the_step() {
        let r = run_yaml(
            r#"
playbook: p
on: { event: t }
steps:
  - id: a
    uses: echo
    with: { n: "{{ event.missing.deeper }}" }
"#,
            json!({}),
        )
        .await;
        assert_eq!(status(&r, "a"), Status::Failed);
        let e = r.step("a").and_then(|s| s.error.clone());
        assert_eq!(e.map(|e| e.kind), Some(crate::ErrorKind::InvalidInput));
    }

    #[tokio::test]
    async fn a_panicking_step_is_reported_against_itself() {
        // `slow` is still running, and comes first, when `boom` panics.
        let r = run_yaml(
            r#"
playbook: p
on: { event: t }
steps:
  - id: slow
    uses: echo
    with: { sleep_ms: 100 }
  - id: boom
    uses: echo
    with: { panic: true }
"#,
            json!({}),
        )
        .await;
        assert_eq!(status(&r, "slow"), Status::Succeeded);
        assert_eq!(status(&r, "boom"), Status::Failed);
        let msg = r
            .step("boom")
            .and_then(|s| s.error.clone())
            .map(|e| e.message);
        assert!(msg.is_some_and(|m| m.starts_with("step crashed")));
        assert_eq!(r.status, RunStatus::Failed);
    }
}
