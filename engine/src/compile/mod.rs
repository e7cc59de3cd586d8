//! Compile: turn validated playbooks into [`Plan`]s the scheduler can run.
//!
//! Templates are compiled once here (syntax errors become diagnostics), every template's
//! variable references are checked (`steps.<id>` must name a step, roots must be in
//! scope), implicit edges are added for `steps.<id>` references, and the steps become a
//! petgraph DAG whose cycles are reported by name. A `Plan` holds resolved references only
//! (indices and `Arc<dyn Step>`), so the runtime cannot meet an unresolved name.

pub mod lazy_json;
pub mod template;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;

use crate::error::{did_you_mean, Code, Diagnostic};
use crate::load::raw::{Condition, RawForEach, RawPlaybook, RawRetry, RetryOn};
use crate::load::yaml::Path;
use crate::load::{self, SourceFile};
use crate::step::{Registry, Step};
use crate::validate::{self, parse_duration, Reporter};
use template::{SyntaxError, TemplateRef, Templates, ValueTemplate};

/// Names a template may start with, by where it stands.
const ROOTS: &[&str] = &["event", "case", "steps", "vars", "secrets", "now", "run"];

/// A set of compiled playbooks sharing one template environment.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub playbooks: Vec<Arc<Plan>>,
}

impl Bundle {
    pub fn get(&self, name: &str) -> Option<&Arc<Plan>> {
        self.playbooks.iter().find(|p| p.name == name)
    }

    /// Every step type the playbooks use, once, sorted.
    pub fn step_types(&self) -> std::collections::BTreeSet<&str> {
        self.playbooks
            .iter()
            .flat_map(|p| p.steps.iter().map(|s| s.uses.as_str()))
            .collect()
    }
}

/// One compiled playbook.
#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    pub file: PathBuf,
    pub trigger: Trigger,
    pub concurrency: Option<ValueTemplate>,
    pub vars: Vec<(String, ValueTemplate)>,
    pub steps: Vec<StepPlan>,
    /// Edges point from a step to the steps that depend on it.
    pub graph: DiGraph<usize, Edge>,
    /// For each step, the steps it waits for (derived from `graph`).
    pub deps: Vec<Vec<usize>>,
    pub output: Option<ValueTemplate>,
    pub templates: Arc<Templates>,
}

/// Why one step waits for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Needs,
    Reference,
}

#[derive(Debug)]
pub struct Trigger {
    pub event: String,
    pub condition: Option<TemplateRef>,
}

/// One compiled step.
pub struct StepPlan {
    pub id: String,
    pub uses: String,
    pub step: Arc<dyn Step>,
    pub with: ValueTemplate,
    pub condition: Option<TemplateRef>,
    /// A literal `if: false` (or `true`).
    pub literal_condition: Option<bool>,
    pub for_each: Option<ForEach>,
    pub retry: RetryPolicy,
    pub timeout: Option<Duration>,
    pub on_error: OnError,
    /// Runs only when a step routes its failure here.
    pub is_handler: bool,
    /// The step cannot change anything outside the run ([`Step::effect_free`] of its
    /// `with:`): it starts without waiting for the journal's flush.
    pub effect_free: bool,
}

impl std::fmt::Debug for StepPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepPlan")
            .field("id", &self.id)
            .field("uses", &self.uses)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ForEach {
    pub items: ValueTemplate,
    pub concurrency: usize,
}

/// What happens when a step fails (after its retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The run fails; steps not yet started are cancelled.
    Fail,
    /// The failure is recorded and dependents run as if the step had succeeded.
    Continue,
    /// The handler step (an index) runs; the failed step's dependents are skipped.
    Handler(usize),
}

/// How a step's failed attempts are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub jitter: bool,
    pub on: Vec<RetryOn>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            jitter: true,
            on: vec![RetryOn::Retryable, RetryOn::Timeout],
        }
    }
}

/// Load, validate and compile every playbook under `paths`.
pub fn load_paths(paths: &[PathBuf], registry: &Registry) -> Result<Bundle, Vec<Diagnostic>> {
    let files = load::discover(paths).map_err(|d| vec![d])?;
    let mut sources = Vec::new();
    let mut diags = Vec::new();
    for f in &files {
        match load::read_file(f) {
            Ok(s) => sources.push(s),
            Err(d) => diags.push(d),
        }
    }
    match compile_sources(&sources, registry) {
        Ok(b) if diags.is_empty() => Ok(b),
        Ok(_) => Err(diags),
        Err(mut more) => {
            diags.append(&mut more);
            Err(diags)
        }
    }
}

/// Validate and compile parsed files into one bundle.
pub fn compile_sources(
    sources: &[SourceFile],
    registry: &Registry,
) -> Result<Bundle, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut templates = Templates::new();
    let mut plans = Vec::new();
    let mut names: HashMap<String, (PathBuf, usize)> = HashMap::new();
    for file in sources {
        let first_of_file = diags.len();
        for doc in &file.documents {
            let mut r = Reporter {
                file,
                doc,
                playbook: None,
                diags: &mut diags,
            };
            let Some(raw) = validate::playbook(&mut r, registry) else {
                continue;
            };
            let name_path = Path::root().key("playbook");
            if let Some((first, line)) = names.get(&raw.playbook) {
                let at = if first == &file.path {
                    format!("line {line}")
                } else {
                    format!("`{}:{line}`", first.display())
                };
                r.at(
                    Code::DuplicatePlaybook,
                    &name_path,
                    None,
                    format!("duplicate playbook name `{}`", raw.playbook),
                )
                .help = Some(format!(
                    "first defined at {at}; playbook names must be unique across all loaded files"
                ));
                continue;
            }
            let line = doc.marks.value(&name_path).0.line;
            names.insert(raw.playbook.clone(), (file.path.clone(), line));
            if let Some(plan) = compile_playbook(&mut r, raw, registry, &mut templates) {
                plans.push(plan);
            }
        }
        // Passes report in their own order; people read a file top to bottom.
        diags[first_of_file..].sort_by_key(|d| d.pos);
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let templates = Arc::new(templates);
    let playbooks = plans
        .into_iter()
        .map(|mut p| {
            p.templates = templates.clone();
            Arc::new(p)
        })
        .collect();
    Ok(Bundle { playbooks })
}

struct Compiler<'r, 'a> {
    r: &'r mut Reporter<'a>,
    templates: &'r mut Templates,
    ids: BTreeMap<String, usize>,
    vars: BTreeSet<String>,
    ok: bool,
}

/// Where a template stands decides which names are in scope.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Trigger,
    /// The concurrency key: the event, the time and the playbook's `vars`.
    Key,
    Playbook,
    Step {
        for_each: bool,
        handler: bool,
    },
}

impl Compiler<'_, '_> {
    fn syntax(&mut self, e: SyntaxError, path: &Path, step: Option<&str>) {
        self.ok = false;
        let extra = if e.line > 1 {
            format!(" (template line {})", e.line)
        } else {
            String::new()
        };
        self.r.at(
            Code::TemplateSyntax,
            path,
            step,
            format!("template syntax error: {}{extra}", e.message),
        );
    }

    /// Compile a value's templates, reporting each problem at the string it is in.
    fn tree(
        &mut self,
        v: &Value,
        path: &Path,
        step: Option<&str>,
        scope: Scope,
    ) -> Option<ValueTemplate> {
        let before = self.ok;
        self.ok = true;
        self.check_leaves(v, path, step, scope);
        let leaves_ok = self.ok;
        self.ok = before && leaves_ok;
        if !leaves_ok {
            return None;
        }
        // Every string compiled above; this assembles the tree from the cache.
        match self.templates.tree(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.syntax(e, path, step);
                None
            }
        }
    }

    fn check_leaves(&mut self, v: &Value, path: &Path, step: Option<&str>, scope: Scope) {
        match v {
            Value::String(s) => match self.templates.value(s) {
                Ok(t) => {
                    let mut vars = BTreeSet::new();
                    t.variables(&mut vars);
                    self.check_vars(&vars, path, step, scope);
                }
                Err(e) => self.syntax(e, path, step),
            },
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.check_leaves(item, &path.index(i), step, scope);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    self.check_leaves(item, &path.key(k), step, scope);
                }
            }
            _ => {}
        }
    }

    fn condition(
        &mut self,
        c: &Condition,
        path: &Path,
        step: Option<&str>,
        scope: Scope,
    ) -> (Option<TemplateRef>, Option<bool>) {
        match c {
            Condition::Literal(b) => (None, Some(*b)),
            Condition::Expression(s) => match self.templates.condition(s) {
                Ok(t) => {
                    self.check_vars(&t.variables, path, step, scope);
                    (Some(t), None)
                }
                Err(e) => {
                    self.syntax(e, path, step);
                    (None, None)
                }
            },
        }
    }

    fn check_vars(
        &mut self,
        vars: &BTreeSet<String>,
        path: &Path,
        step: Option<&str>,
        scope: Scope,
    ) {
        let mut allowed: Vec<&str> = match scope {
            Scope::Trigger => vec!["event", "now"],
            Scope::Key => vec!["event", "now", "vars"],
            Scope::Playbook => ROOTS.to_vec(),
            Scope::Step { .. } => ROOTS.to_vec(),
        };
        if let Scope::Step { for_each, handler } = scope {
            if for_each {
                allowed.extend(["item", "index"]);
            }
            if handler {
                allowed.push("error");
            }
        }
        for var in vars {
            let mut parts = var.split('.');
            let root = parts.next().unwrap_or_default();
            if root == "loop" || is_builtin(root) {
                continue;
            }
            if !allowed.contains(&root) {
                self.ok = false;
                let d = self.r.at(
                    Code::UnknownVariable,
                    path,
                    step,
                    format!("unknown variable `{root}`"),
                );
                narrow(d, root);
                d.help = Some(match did_you_mean(root, allowed.iter().copied()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => format!(
                        "in scope here: {}",
                        allowed
                            .iter()
                            .map(|a| format!("`{a}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
                continue;
            }
            let Some(second) = parts.next() else { continue };
            if root == "steps" && !self.ids.contains_key(second) {
                self.ok = false;
                let d = self.r.at(
                    Code::UnknownStepReference,
                    path,
                    step,
                    format!("template refers to unknown step `{second}`"),
                );
                narrow(d, &format!("steps.{second}"));
                d.help = Some(
                    match did_you_mean(second, self.ids.keys().map(String::as_str)) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!("steps in this playbook: {}", backticked(self.ids.keys())),
                    },
                );
            }
            if root == "vars" && !self.vars.contains(second) {
                self.ok = false;
                let d = self.r.at(
                    Code::UnknownVariable,
                    path,
                    step,
                    format!("unknown variable `vars.{second}`"),
                );
                narrow(d, &format!("vars.{second}"));
                d.help = Some(
                    match did_you_mean(second, self.vars.iter().map(String::as_str)) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None if self.vars.is_empty() => {
                            "this playbook defines no `vars`".to_string()
                        }
                        None => format!("defined vars: {}", backticked(self.vars.iter())),
                    },
                );
            }
        }
    }
}

/// Move the caret from the whole template string to `needle` inside it, when it is there
/// on the same line.
fn narrow(d: &mut Diagnostic, needle: &str) {
    let Some(line) = &d.line_text else { return };
    let byte_at = |col: usize| {
        line.char_indices()
            .nth(col)
            .map(|(i, _)| i)
            .unwrap_or(line.len())
    };
    let start = byte_at(d.pos.col.saturating_sub(1));
    let end = byte_at(d.pos.col.saturating_sub(1) + d.width);
    let Some(found) = line.get(start..end).and_then(|hay| hay.find(needle)) else {
        return;
    };
    d.pos.col = line[..start + found].chars().count() + 1;
    d.width = needle.chars().count();
}

fn backticked<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names minijinja provides everywhere (functions and constants), not context variables.
fn is_builtin(name: &str) -> bool {
    matches!(
        name,
        "range"
            | "dict"
            | "namespace"
            | "debug"
            | "true"
            | "false"
            | "none"
            | "True"
            | "False"
            | "None"
    )
}

fn compile_playbook(
    r: &mut Reporter<'_>,
    raw: RawPlaybook,
    registry: &Registry,
    templates: &mut Templates,
) -> Option<Plan> {
    let root = Path::root();
    let ids: BTreeMap<String, usize> = raw
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let handlers: BTreeSet<usize> = raw
        .steps
        .iter()
        .filter_map(|s| s.on_error.as_deref().and_then(|h| ids.get(h).copied()))
        .collect();
    let mut c = Compiler {
        r,
        templates,
        ids: ids.clone(),
        vars: raw.vars.keys().cloned().collect(),
        ok: true,
    };

    let trigger_cond = match &raw.on.condition {
        Some(cond) => c.condition(cond, &root.key("on").key("if"), None, Scope::Trigger),
        None => (None, None),
    };
    if trigger_cond.1.is_some() {
        c.r.at(
            Code::InvalidValue,
            &root.key("on").key("if"),
            None,
            "`on.if` must be an expression, not a literal boolean".into(),
        );
        c.ok = false;
    }
    let concurrency = raw.concurrency.as_ref().and_then(|k| {
        c.tree(
            &Value::String(k.clone()),
            &root.key("concurrency"),
            None,
            Scope::Key,
        )
    });
    let mut vars = Vec::new();
    for (k, v) in &raw.vars {
        // Variables may use the event, never each other or steps.
        if let Some(t) = c.tree(v, &root.key("vars").key(k), None, Scope::Trigger) {
            vars.push((k.clone(), t));
        }
    }
    let output = raw
        .output
        .as_ref()
        .and_then(|o| c.tree(o, &root.key("output"), None, Scope::Playbook));

    let mut steps = Vec::new();
    let mut edges: Vec<(usize, usize, Edge)> = Vec::new();
    for (i, s) in raw.steps.iter().enumerate() {
        let p = root.key("steps").index(i);
        let sid = Some(s.id.as_str());
        let scope = Scope::Step {
            for_each: s.for_each.is_some(),
            handler: handlers.contains(&i),
        };
        let mut refs = BTreeSet::new();
        let with = c.tree(&Value::Object(s.with.clone()), &p.key("with"), sid, scope);
        if let Some(w) = &with {
            w.variables(&mut refs);
        }
        let (condition, literal_condition) = match &s.condition {
            Some(cond) => c.condition(
                cond,
                &p.key("if"),
                sid,
                Scope::Step {
                    for_each: false,
                    handler: scope_handler(scope),
                },
            ),
            None => (None, None),
        };
        if let Some(t) = &condition {
            refs.extend(t.variables.iter().cloned());
        }
        let for_each = match &s.for_each {
            None => None,
            Some(fe) => {
                let (items, conc, items_path) = match fe {
                    RawForEach::Items(v) => (v.clone(), None, p.key("for_each")),
                    RawForEach::Spec(spec) => (
                        spec.items.clone(),
                        spec.concurrency,
                        p.key("for_each").key("items"),
                    ),
                };
                let t = c.tree(
                    &items,
                    &items_path,
                    sid,
                    Scope::Step {
                        for_each: false,
                        handler: scope_handler(scope),
                    },
                );
                if let Some(t) = &t {
                    t.variables(&mut refs);
                }
                t.map(|items| ForEach {
                    items,
                    concurrency: conc.unwrap_or(4).max(1) as usize,
                })
            }
        };
        for r in &refs {
            let mut parts = r.split('.');
            if parts.next() == Some("steps") {
                if let Some(&j) = parts.next().and_then(|id| ids.get(id)) {
                    edges.push((j, i, Edge::Reference));
                }
            }
        }
        for n in s.needs.ids() {
            if let Some(&j) = ids.get(n) {
                edges.push((j, i, Edge::Needs));
            }
        }
        let on_error = match s.on_error.as_deref() {
            None | Some("fail") => OnError::Fail,
            Some("continue") => OnError::Continue,
            Some(h) => ids
                .get(h)
                .map(|&j| OnError::Handler(j))
                .unwrap_or(OnError::Fail),
        };
        let Some(reg) = registry.get(&s.uses) else {
            c.ok = false;
            continue;
        };
        let Some(with) = with else { continue };
        steps.push(StepPlan {
            id: s.id.clone(),
            uses: s.uses.clone(),
            step: reg.step.clone(),
            with,
            condition,
            literal_condition,
            for_each,
            retry: retry_policy(s.retry.as_ref()),
            timeout: s.timeout.as_deref().and_then(|t| parse_duration(t).ok()),
            on_error,
            is_handler: handlers.contains(&i),
            effect_free: reg.step.effect_free(&Value::Object(s.with.clone())),
        });
    }
    if !c.ok || steps.len() != raw.steps.len() {
        return None;
    }

    let mut graph: DiGraph<usize, Edge> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..steps.len()).map(|i| graph.add_node(i)).collect();
    let mut seen = BTreeSet::new();
    for (from, to, kind) in edges {
        if seen.insert((from, to)) {
            graph.add_edge(nodes[from], nodes[to], kind);
        }
    }
    let mut cyclic = false;
    for scc in tarjan_scc(&graph) {
        let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
        if scc.len() > 1 || self_loop {
            cyclic = true;
            let mut members: Vec<usize> = scc.iter().map(|n| graph[*n]).collect();
            members.sort_unstable();
            let first = members[0];
            let names: Vec<String> = cycle_order(&graph, &nodes, &members)
                .iter()
                .map(|i| format!("`{}`", steps[*i].id))
                .collect();
            c.r.at(
                Code::Cycle,
                &root.key("steps").index(first).key("id"),
                Some(&steps[first].id),
                format!(
                    "steps depend on each other in a cycle: {} -> {}",
                    names.join(" -> "),
                    names[0]
                ),
            )
            .help = Some(
                "edges come from `needs` and from `steps.<id>` references in templates".into(),
            );
        }
    }
    if cyclic {
        return None;
    }
    let deps = (0..steps.len())
        .map(|i| {
            let mut d: Vec<usize> = graph
                .neighbors_directed(nodes[i], petgraph::Direction::Incoming)
                .map(|n| graph[n])
                .collect();
            d.sort_unstable();
            d
        })
        .collect();
    Some(Plan {
        name: raw.playbook,
        description: raw.description,
        file: c.r.file.path.clone(),
        trigger: Trigger {
            event: raw.on.event,
            condition: trigger_cond.0,
        },
        concurrency,
        vars,
        steps,
        graph,
        deps,
        output,
        templates: Arc::new(Templates::new()),
    })
}

fn scope_handler(s: Scope) -> bool {
    matches!(s, Scope::Step { handler: true, .. })
}

/// The members of a cycle in dependency order, starting from the lowest index.
fn cycle_order(graph: &DiGraph<usize, Edge>, nodes: &[NodeIndex], members: &[usize]) -> Vec<usize> {
    let set: BTreeSet<usize> = members.iter().copied().collect();
    let mut order = vec![members[0]];
    let mut cur = members[0];
    while order.len() < members.len() {
        let next = graph
            .neighbors_directed(nodes[cur], petgraph::Direction::Outgoing)
            .map(|n| graph[n])
            .filter(|n| set.contains(n) && !order.contains(n))
            .min();
        match next {
            Some(n) => {
                order.push(n);
                cur = n;
            }
            None => break,
        }
    }
    order
}

fn retry_policy(r: Option<&RawRetry>) -> RetryPolicy {
    let d = RetryPolicy::default();
    let Some(r) = r else { return d };
    RetryPolicy {
        attempts: r.attempts.max(1),
        backoff: r
            .backoff
            .as_deref()
            .and_then(|b| parse_duration(b).ok())
            .unwrap_or(d.backoff),
        max_backoff: r
            .max_backoff
            .as_deref()
            .and_then(|b| parse_duration(b).ok())
            .unwrap_or(d.max_backoff),
        jitter: r.jitter.unwrap_or(true),
        on: r.on.clone().unwrap_or(d.on),
    }
}
