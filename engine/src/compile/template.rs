//! Templates: minijinja, compiled once when a bundle is compiled, rendered with bounds.
//!
//! A string in a playbook is a template when it contains `{{` or `{%`. A string that is one
//! whole `{{ expression }}` keeps the type of the expression (a list stays a list); any
//! other template renders to a string. Conditions (`if:`) are expressions, with or without
//! the braces. Only playbook text is ever compiled: values coming from events are data in
//! the context and are never rendered as templates themselves.
//!
//! Every render is bounded: fuel (instructions), the recursion limit, and a cap on the
//! size of the output, so a pathological template fails fast instead of hanging a run.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;

use minijinja::{Environment, UndefinedBehavior, Value as MjValue};
use serde_json::Value;

/// Instructions one render may execute.
pub const FUEL: u64 = 200_000;
/// Largest rendered string.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Deepest nesting of template calls and data.
pub const RECURSION_LIMIT: usize = 100;

const RESULT_VAR: &str = "__caseflow_value";

/// A handle to one compiled template in a [`Templates`] set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    name: String,
    /// Evaluates to a typed value rather than rendering to a string.
    typed: bool,
    /// Dotted variable paths the template reads (`steps.existing.cases`, `event.actor.id`).
    pub variables: BTreeSet<String>,
}

/// A value from a playbook with its templates compiled: the shape of `with:`, `output:`.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    Literal(Value),
    Template(TemplateRef),
    Array(Vec<ValueTemplate>),
    Object(Vec<(String, ValueTemplate)>),
}

impl ValueTemplate {
    /// Every variable path any template inside reads.
    pub fn variables(&self, out: &mut BTreeSet<String>) {
        match self {
            ValueTemplate::Literal(_) => {}
            ValueTemplate::Template(t) => out.extend(t.variables.iter().cloned()),
            ValueTemplate::Array(items) => items.iter().for_each(|i| i.variables(out)),
            ValueTemplate::Object(fields) => fields.iter().for_each(|(_, v)| v.variables(out)),
        }
    }

    pub fn is_literal(&self) -> bool {
        matches!(self, ValueTemplate::Literal(_))
    }
}

/// A template failed to compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    /// 1-based line inside the template text.
    pub line: usize,
}

/// A render failed: undefined variable, out of fuel, output too large, bad operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// All templates of a bundle, owned by one environment.
pub struct Templates {
    env: Environment<'static>,
    next: usize,
    cache: HashMap<(String, bool), TemplateRef>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Templates({})", self.next)
    }
}

/// Does this string hold template syntax?
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// `{{ expr }}` as a whole string: the inner expression.
fn whole_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    Some(inner.trim())
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_keep_trailing_newline(true);
        env.add_filter("dig", dig);
        Templates {
            env,
            next: 0,
            cache: HashMap::new(),
        }
    }

    /// Compile a string from a playbook: a literal when it holds no template syntax.
    pub fn value(&mut self, s: &str) -> Result<ValueTemplate, SyntaxError> {
        if !is_template(s) {
            return Ok(ValueTemplate::Literal(Value::String(s.to_string())));
        }
        match whole_expression(s) {
            Some(expr) => self.expression(expr).map(ValueTemplate::Template),
            None => self.text(s).map(ValueTemplate::Template),
        }
    }

    /// Compile a condition: `expr` or `{{ expr }}`.
    pub fn condition(&mut self, s: &str) -> Result<TemplateRef, SyntaxError> {
        match whole_expression(s) {
            Some(expr) => self.expression(expr),
            None if is_template(s) => Err(SyntaxError {
                message: "a condition is one expression, like `{{ x > 1 }}` or `x > 1`".into(),
                line: 1,
            }),
            None => self.expression(s),
        }
    }

    /// Compile a JSON tree, turning each templated string into a template.
    pub fn tree(&mut self, v: &Value) -> Result<ValueTemplate, SyntaxError> {
        Ok(match v {
            Value::String(s) => self.value(s)?,
            Value::Array(items) => {
                let items = items
                    .iter()
                    .map(|i| self.tree(i))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(ValueTemplate::is_literal) {
                    ValueTemplate::Literal(v.clone())
                } else {
                    ValueTemplate::Array(items)
                }
            }
            Value::Object(map) => {
                let fields = map
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.tree(v)?)))
                    .collect::<Result<Vec<_>, SyntaxError>>()?;
                if fields.iter().all(|(_, v)| v.is_literal()) {
                    ValueTemplate::Literal(v.clone())
                } else {
                    ValueTemplate::Object(fields)
                }
            }
            other => ValueTemplate::Literal(other.clone()),
        })
    }

    fn expression(&mut self, expr: &str) -> Result<TemplateRef, SyntaxError> {
        // `set` keeps the expression's type; the value is read back from the state.
        // Parentheses keep filters and `if` expressions whole; the newline ends a
        // trailing `#` comment-free expression cleanly.
        let src = format!("{{% set {RESULT_VAR} = ({expr}\n) %}}");
        self.add(src, true).map_err(|wrapped| {
            // The wrapper is ours: report the error as the author's `{{ expr }}` gives it.
            match self.env.template_from_str(&format!("{{{{ {expr} }}}}")) {
                Err(e) => SyntaxError {
                    message: e.detail().unwrap_or("invalid template").to_string(),
                    line: e.line().unwrap_or(1),
                },
                Ok(_) => wrapped,
            }
        })
    }

    fn text(&mut self, s: &str) -> Result<TemplateRef, SyntaxError> {
        self.add(s.to_string(), false)
    }

    fn add(&mut self, src: String, typed: bool) -> Result<TemplateRef, SyntaxError> {
        if let Some(t) = self.cache.get(&(src.clone(), typed)) {
            return Ok(t.clone());
        }
        let name = format!("t{}", self.next);
        self.next += 1;
        self.env
            .add_template_owned(name.clone(), src.clone())
            .map_err(|e| SyntaxError {
                message: e.detail().unwrap_or("invalid template").to_string(),
                line: e.line().unwrap_or(1),
            })?;
        let tmpl = self.env.get_template(&name).map_err(|e| SyntaxError {
            message: e.to_string(),
            line: 1,
        })?;
        let mut variables: BTreeSet<String> = tmpl.undeclared_variables(true).into_iter().collect();
        variables.remove(RESULT_VAR);
        let r = TemplateRef {
            name,
            typed,
            variables,
        };
        self.cache.insert((src, typed), r.clone());
        Ok(r)
    }

    /// What the playbook's author wrote: the expression of a condition or whole-expression
    /// value (without braces), the text of any other template. For display (the web
    /// view's playbooks page), never for rendering.
    pub fn source(&self, t: &TemplateRef) -> Option<String> {
        let src = self.env.get_template(&t.name).ok()?.source().to_string();
        if !t.typed {
            return Some(src);
        }
        let prefix = format!("{{% set {RESULT_VAR} = (");
        Some(
            src.strip_prefix(&prefix)
                .and_then(|s| s.strip_suffix("\n) %}"))
                .map(|s| s.trim().to_string())
                .unwrap_or(src),
        )
    }

    /// Render one template against a context.
    pub fn render(&self, t: &TemplateRef, ctx: &MjValue) -> Result<Value, RenderError> {
        let tmpl = self
            .env
            .get_template(&t.name)
            .map_err(|e| RenderError(e.to_string()))?;
        if t.typed {
            let captured = tmpl
                .render_captured_to(ctx, std::io::sink())
                .map_err(render_error)?;
            let v = captured
                .state()
                .lookup(RESULT_VAR)
                .ok_or_else(|| RenderError("expression gave no value".into()))?;
            if v.is_undefined() {
                return Err(RenderError("expression is undefined".into()));
            }
            serde_json::to_value(&v).map_err(|e| RenderError(e.to_string()))
        } else {
            let mut out = CappedWriter::default();
            tmpl.render_captured_to(ctx, &mut out)
                .map_err(render_error)?;
            String::from_utf8(out.buf)
                .map(Value::String)
                .map_err(|e| RenderError(e.to_string()))
        }
    }

    /// Render a compiled tree.
    pub fn render_tree(&self, v: &ValueTemplate, ctx: &MjValue) -> Result<Value, RenderError> {
        Ok(match v {
            ValueTemplate::Literal(v) => v.clone(),
            ValueTemplate::Template(t) => self.render(t, ctx)?,
            ValueTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.render_tree(i, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            ValueTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_tree(v, ctx)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }

    /// Evaluate a condition to a boolean (Jinja truthiness).
    pub fn truth(&self, t: &TemplateRef, ctx: &MjValue) -> Result<bool, RenderError> {
        let v = self.render(t, ctx)?;
        Ok(MjValue::from_serialize(&v).is_true())
    }
}

/// `value | dig('a.b.c')`: the value at a dotted path, or none when any part is missing
/// or null. Real events leave fields out; this reads them without `is defined` chains.
fn dig(value: MjValue, path: &str) -> MjValue {
    let mut cur = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let next = match part.parse::<usize>() {
            Ok(i) if cur.kind() == minijinja::value::ValueKind::Seq => {
                cur.get_item_by_index(i).ok()
            }
            _ => cur.get_attr(part).ok(),
        };
        match next {
            Some(v) if !v.is_undefined() && !v.is_none() => cur = v,
            _ => return MjValue::from(()),
        }
    }
    cur
}

fn render_error(e: minijinja::Error) -> RenderError {
    let mut msg = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if e.kind() == minijinja::ErrorKind::WriteFailure {
        msg = format!("template output larger than {MAX_OUTPUT_BYTES} bytes");
    }
    RenderError(msg)
}

#[derive(Default)]
struct CappedWriter {
    buf: Vec<u8>,
}

impl Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT_BYTES {
            return Err(std::io::Error::other("output too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: Value) -> MjValue {
        MjValue::from_serialize(&v)
    }

    #[test]
    fn whole_expressions_keep_their_type() {
        let mut t = Templates::new();
        let v = t.value("{{ event.ips }}").unwrap();
        let out = t
            .render_tree(&v, &ctx(json!({"event": {"ips": ["1.2.3.4", "5.6.7.8"]}})))
            .unwrap();
        assert_eq!(out, json!(["1.2.3.4", "5.6.7.8"]));
        let n = t.value("{{ steps.q.cases | length }}").unwrap();
        let out = t
            .render_tree(&n, &ctx(json!({"steps": {"q": {"cases": [1, 2, 3]}}})))
            .unwrap();
        assert_eq!(out, json!(3));
    }

    #[test]
    fn sources_are_what_the_author_wrote() {
        let mut t = Templates::new();
        let c = t.condition("{{ event.to == 'in_progress' }}").unwrap();
        assert_eq!(t.source(&c).as_deref(), Some("event.to == 'in_progress'"));
        let c = t.condition("event.n > 1").unwrap();
        assert_eq!(t.source(&c).as_deref(), Some("event.n > 1"));
        let ValueTemplate::Template(v) = t.value("hi {{ event.user }}").unwrap() else {
            panic!("a template")
        };
        assert_eq!(t.source(&v).as_deref(), Some("hi {{ event.user }}"));
    }

    #[test]
    fn mixed_text_renders_to_a_string() {
        let mut t = Templates::new();
        let v = t
            .value("user {{ event.user }} from {{ event.ip }}")
            .unwrap();
        let out = t
            .render_tree(&v, &ctx(json!({"event": {"user": "a", "ip": "1.2.3.4"}})))
            .unwrap();
        assert_eq!(out, json!("user a from 1.2.3.4"));
    }

    #[test]
    fn variables_are_dotted_paths() {
        let mut t = Templates::new();
        let v = t
            .value("{{ steps.existing.cases[0].id }} {{ event.actor.id }}")
            .unwrap();
        let mut vars = BTreeSet::new();
        v.variables(&mut vars);
        assert!(vars.contains("steps.existing.cases"), "{vars:?}");
        assert!(vars.contains("event.actor.id"), "{vars:?}");
    }

    #[test]
    fn event_data_is_never_rendered_as_a_template() {
        let mut t = Templates::new();
        let v = t.value("{{ event.note }}").unwrap();
        let out = t
            .render_tree(&v, &ctx(json!({"event": {"note": "{{ 7*7 }}"}})))
            .unwrap();
        assert_eq!(out, json!("{{ 7*7 }}"));
        let v = t.value("note: {{ event.note }}").unwrap();
        let out = t
            .render_tree(&v, &ctx(json!({"event": {"note": "{{ 7*7 }}"}})))
            .unwrap();
        assert_eq!(out, json!("note: {{ 7*7 }}"));
    }

    #[test]
    fn undefined_is_an_error() {
        let mut t = Templates::new();
        let v = t.value("{{ event.missing.deeper }}").unwrap();
        assert!(t.render_tree(&v, &ctx(json!({"event": {}}))).is_err());
    }

    #[test]
    fn dig_reads_missing_and_null_fields_as_none() {
        let mut t = Templates::new();
        let v = t
            .value("{{ [event | dig('client.ipAddress'), event | dig('request.ipChain.0.ip'), event | dig('actor.x')] }}")
            .unwrap();
        let out = t
            .render_tree(
                &v,
                &ctx(
                    json!({"event": {"client": null, "request": {"ipChain": [{"ip": "1.2.3.4"}]}}}),
                ),
            )
            .unwrap();
        assert_eq!(out, json!([null, "1.2.3.4", null]));
    }

    #[test]
    fn conditions_with_or_without_braces() {
        let mut t = Templates::new();
        let a = t.condition("{{ event.n > 1 }}").unwrap();
        let b = t.condition("event.n > 1").unwrap();
        let c = ctx(json!({"event": {"n": 2}}));
        assert!(t.truth(&a, &c).unwrap());
        assert!(t.truth(&b, &c).unwrap());
        assert!(!t.truth(&b, &ctx(json!({"event": {"n": 0}}))).unwrap());
    }

    #[test]
    fn syntax_errors_are_reported() {
        let mut t = Templates::new();
        assert!(t.value("{{ event.x | }}").is_err());
        assert!(t.value("{% if %}").is_err());
        // The typed-expression wrapper never shows in a message.
        let e = t.value("{{ event.x | }}").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(!e.message.contains(')'), "{}", e.message);
    }

    #[test]
    fn pathological_templates_fail_fast() {
        let mut t = Templates::new();
        let started = std::time::Instant::now();
        let loops = t
            .value(
                "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
            )
            .unwrap();
        assert!(t.render_tree(&loops, &ctx(json!({}))).is_err());
        let big = t
            .value("{% for a in range(5000) %}{{ 'x' * 1000 }}{% endfor %}")
            .unwrap();
        assert!(t.render_tree(&big, &ctx(json!({}))).is_err());
        let rec = t
            .value("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
            .unwrap();
        assert!(t.render_tree(&rec, &ctx(json!({}))).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
