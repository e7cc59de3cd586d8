//! The executor: runs one plan on tokio.
//!
//! One task owns the run's state and a `JoinSet` of running steps. It asks
//! [`super::ready::next_actions`] what to do, evaluates conditions, renders inputs, starts
//! steps, and on each completion records the result before releasing dependents. Timeout,
//! retry with backoff and jitter, `for_each` fan-out and tracing spans are applied here,
//! once, around every step.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use minijinja::Value as MjValue;
use rand::Rng;
use serde_json::Value;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::ready::{self, Action, Failure, Shape, Status};
use super::retry;
use crate::compile::{OnError, Plan, RetryPolicy};
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

/// Run a plan to the end and report.
pub async fn execute(plan: Arc<Plan>, input: RunInput, services: Arc<Services>) -> RunReport {
    let span = tracing::info_span!("run", run_id = %input.run_id, playbook = %plan.name);
    run(plan, input, services).instrument(span).await
}

async fn run(plan: Arc<Plan>, input: RunInput, services: Arc<Services>) -> RunReport {
    let started = Instant::now();
    let now = services.clock.now();
    let seed = services.seed.unwrap_or_else(|| rand::thread_rng().gen());
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
    let mut outputs: BTreeMap<String, MjValue> = BTreeMap::new();
    let mut handler_error: BTreeMap<usize, Value> = BTreeMap::new();

    let mut base: BTreeMap<&'static str, MjValue> = BTreeMap::new();
    base.insert("event", MjValue::from_serialize(&input.event));
    base.insert("now", MjValue::from(rfc3339(now)));
    let mut run_error = None;
    // Variables see the event and the time, nothing else.
    let mut vars = BTreeMap::new();
    for (k, t) in &plan.vars {
        match plan
            .templates
            .render_tree(t, &MjValue::from_iter(base.clone()))
        {
            Ok(v) => {
                vars.insert(k.clone(), v);
            }
            Err(e) => {
                run_error = Some(format!("`vars.{k}`: {e}"));
            }
        }
    }
    base.insert("vars", MjValue::from_serialize(&vars));
    base.insert(
        "case",
        input
            .case
            .as_ref()
            .map(MjValue::from_serialize)
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

    let mut running: JoinSet<Outcome> = JoinSet::new();
    if run_error.is_some() {
        for (i, s) in status.iter_mut().enumerate() {
            *s = Status::Cancelled;
            reports[i].status = Status::Cancelled;
            reports[i].reason = Some("the run failed before this step".into());
        }
    }
    loop {
        // Apply decisions until none is left; skips can make more steps ready.
        loop {
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
                        outputs.insert(plan.steps[i].id.clone(), MjValue::from(()));
                    }
                    Action::Consider(i) => {
                        let step = &plan.steps[i];
                        let mut ctx = base.clone();
                        ctx.insert("steps", MjValue::from_iter(outputs.clone()));
                        if let Some(e) = handler_error.get(&i) {
                            ctx.insert("error", MjValue::from_serialize(e));
                        }
                        let ctx_value = MjValue::from_iter(ctx.clone());
                        let go = match (&step.condition, step.literal_condition) {
                            (_, Some(b)) => Ok(b),
                            (Some(c), None) => plan.templates.truth(c, &ctx_value).map_err(|e| {
                                StepError::invalid_input(format!(
                                    "`if` could not be evaluated: {e}"
                                ))
                            }),
                            (None, None) => Ok(true),
                        };
                        match go {
                            Ok(false) => {
                                status[i] = Status::Skipped;
                                reports[i].status = Status::Skipped;
                                reports[i].reason = Some("`if` was false".into());
                                outputs.insert(step.id.clone(), MjValue::from(()));
                            }
                            Ok(true) => {
                                status[i] = Status::Running;
                                reports[i].status = Status::Running;
                                let fut = run_step(
                                    plan.clone(),
                                    i,
                                    ctx,
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
                                let span =
                                    tracing::info_span!("step", step = %step.id, uses = %step.uses);
                                running.spawn(fut.instrument(span));
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
                                    &mut outputs,
                                    &mut handler_error,
                                );
                            }
                        }
                    }
                }
            }
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok(o) => finish(
                &plan,
                o.index,
                o.result,
                o.attempts,
                o.duration,
                &mut status,
                &mut reports,
                &mut outputs,
                &mut handler_error,
            ),
            Err(e) => {
                // A step that panicked: record it against whichever step is still running.
                if let Some(i) = status.iter().position(|s| *s == Status::Running) {
                    let err = StepError::permanent(format!("step crashed: {e}"));
                    finish(
                        &plan,
                        i,
                        Err(err),
                        1,
                        Duration::ZERO,
                        &mut status,
                        &mut reports,
                        &mut outputs,
                        &mut handler_error,
                    );
                }
            }
        }
    }

    let failed = run_error.is_some() || ready::run_failed(&shape, &status);
    let mut output = None;
    if !failed {
        if let Some(t) = &plan.output {
            let mut ctx = base.clone();
            ctx.insert("steps", MjValue::from_iter(outputs));
            match plan.templates.render_tree(t, &MjValue::from_iter(ctx)) {
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
    RunReport {
        run_id: input.run_id,
        playbook: plan.name.clone(),
        trigger: input.trigger,
        status,
        started_at: rfc3339(now),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        steps: reports,
        output,
        error: run_error,
    }
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
    outputs: &mut BTreeMap<String, MjValue>,
    handler_error: &mut BTreeMap<usize, Value>,
) {
    let step = &plan.steps[i];
    reports[i].attempts = attempts;
    reports[i].duration_ms = duration.as_secs_f64() * 1000.0;
    match result {
        Ok(v) => {
            status[i] = Status::Succeeded;
            reports[i].status = Status::Succeeded;
            outputs.insert(step.id.clone(), MjValue::from_serialize(&v));
            reports[i].output = Some(v);
        }
        Err(e) => {
            tracing::warn!(step = %step.id, error = %e.message, "step failed");
            status[i] = Status::Failed;
            reports[i].status = Status::Failed;
            outputs.insert(step.id.clone(), MjValue::from(()));
            if let OnError::Handler(h) = step.on_error {
                handler_error.entry(h).or_insert_with(
                    || serde_json::json!({"step": step.id, "message": e.message, "kind": e.kind}),
                );
            }
            reports[i].error = Some(e);
        }
    }
}

async fn run_step(
    plan: Arc<Plan>,
    index: usize,
    ctx: BTreeMap<&'static str, MjValue>,
    sctx: StepContext,
) -> Outcome {
    let started = Instant::now();
    let step = &plan.steps[index];
    let (result, attempts) = match &step.for_each {
        None => {
            let ctx = MjValue::from_iter(ctx);
            match plan.templates.render_tree(&step.with, &ctx) {
                Ok(input) => {
                    attempts_loop(step.step.as_ref(), input, sctx, &step.retry, step.timeout).await
                }
                Err(e) => (
                    Err(StepError::invalid_input(format!(
                        "`with` could not be rendered: {e}"
                    ))),
                    0,
                ),
            }
        }
        Some(fe) => {
            let items = plan
                .templates
                .render_tree(&fe.items, &MjValue::from_iter(ctx.clone()));
            match items {
                Ok(Value::Array(items)) => {
                    for_each(&plan, index, ctx, items, fe.concurrency, sctx).await
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
    ctx: BTreeMap<&'static str, MjValue>,
    items: Vec<Value>,
    concurrency: usize,
    sctx: StepContext,
) -> (Result<Value, StepError>, u32) {
    let step = &plan.steps[index];
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut set = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut c = ctx.clone();
        c.insert("item", MjValue::from_serialize(&item));
        c.insert("index", MjValue::from(i));
        let input = plan
            .templates
            .render_tree(&step.with, &MjValue::from_iter(c));
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
    input: Value,
    mut ctx: StepContext,
    policy: &RetryPolicy,
    timeout: Option<Duration>,
) -> (Result<Value, StepError>, u32) {
    let mut attempt = 1;
    loop {
        ctx.attempt = attempt;
        let fut = step.run(input.clone(), &ctx);
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
