//! A JSON value as a template sees it, converted only where a template looks.
//!
//! `MjValue::from_serialize` converts a whole value up front: for a trigger's `on.if`,
//! which reads one or two fields of an Okta event of a hundred, that conversion was more
//! than half of the cost of matching the event (a twentieth of the server's CPU under
//! `engine bench --scenario ingest`). [`lazy`] wraps the value instead: maps and lists
//! become objects that convert the member a template asks for when it asks. What a
//! template sees is the same as with `from_serialize`: the same kinds, numbers as the same
//! integer or float, maps iterated (and printed, and serialised) in key order.

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value as MjValue};
use serde_json::Value;

/// `value` for a template context, converted on access.
pub fn lazy(value: Arc<Value>) -> MjValue {
    if value.is_object() || value.is_array() {
        MjValue::from_object(Node::root(value))
    } else {
        scalar_value(&value)
    }
}

/// One step from a container to a member.
#[derive(Clone, Debug)]
enum Step {
    Key(Arc<str>),
    Index(usize),
}

/// A map or a list inside the root value, by its path from the root.
#[derive(Debug)]
struct Node {
    root: Arc<Value>,
    path: Vec<Step>,
}

impl Node {
    fn root(root: Arc<Value>) -> Node {
        Node {
            root,
            path: Vec::new(),
        }
    }

    /// The value this node stands for. The path was taken from the (immutable) root, so
    /// it is always there; `Null` keeps this free of panics all the same.
    fn value(&self) -> &Value {
        let mut cur = &*self.root;
        for step in &self.path {
            cur = match step {
                Step::Key(k) => cur.get(&**k),
                Step::Index(i) => cur.get(*i),
            }
            .unwrap_or(&Value::Null);
        }
        cur
    }

    fn child(&self, step: Step) -> Node {
        let mut path = Vec::with_capacity(self.path.len() + 1);
        path.extend(self.path.iter().cloned());
        path.push(step);
        Node {
            root: self.root.clone(),
            path,
        }
    }

    /// Member `v` (at `step`) as a template value: a scalar converted, a container wrapped.
    fn member(&self, v: &Value, step: Step) -> MjValue {
        match v {
            Value::Object(_) | Value::Array(_) => MjValue::from_object(self.child(step)),
            scalar => scalar_value(scalar),
        }
    }
}

/// A scalar as `from_serialize` gives it.
fn scalar_value(v: &Value) -> MjValue {
    match v {
        Value::Null => MjValue::from(()),
        Value::Bool(b) => MjValue::from(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                MjValue::from(u)
            } else if let Some(i) = n.as_i64() {
                MjValue::from(i)
            } else {
                MjValue::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => MjValue::from(s.as_str()),
        // Containers are wrapped by the callers; converting one here is only a fallback.
        other => MjValue::from_serialize(other),
    }
}

impl Object for Node {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.value() {
            Value::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        match self.value() {
            Value::Object(map) => {
                let k = key.as_str()?;
                let (k, v) = map.get_key_value(k)?;
                Some(self.member(v, Step::Key(Arc::from(k.as_str()))))
            }
            Value::Array(items) => {
                let i = usize::try_from(key.as_i64()?).ok()?;
                Some(self.member(items.get(i)?, Step::Index(i)))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.value() {
            Value::Object(map) => {
                // `from_serialize` makes a `BTreeMap`, which iterates in key order and
                // enumerates its pairs as this does (what `reverse` makes of a map
                // depends on it).
                let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
                pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let pairs: Vec<(MjValue, MjValue)> = pairs
                    .into_iter()
                    .map(|(k, v)| {
                        let key = MjValue::from(k.as_str());
                        (key, self.member(v, Step::Key(Arc::from(k.as_str()))))
                    })
                    .collect();
                Enumerator::RevKeyValueIter(Box::new(pairs.into_iter()))
            }
            Value::Array(items) => Enumerator::Seq(items.len()),
            _ => Enumerator::Empty,
        }
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        match self.value() {
            Value::Object(map) => Some(map.len()),
            Value::Array(items) => Some(items.len()),
            _ => Some(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::{Environment, UndefinedBehavior};
    use proptest::prelude::*;
    use serde_json::json;

    /// What templates can do with a value, each printed or its error kind.
    const PROBES: &[&str] = &[
        "{{ v }}",
        "{{ v | tojson }}",
        "{{ v | length }}",
        "{% for x in v %}{{ x }};{% endfor %}",
        "{{ v is mapping }} {{ v is sequence }} {{ v is string }} {{ v is number }} {{ v is iterable }}",
        "{% if v %}t{% else %}f{% endif %}",
        "{{ v == w }} {{ w == v }}",
        "{{ v.a }}",
        "{{ v['b'] }}",
        "{{ v.a.b }}",
        "{{ v[0] }}",
        "{{ v[-1] }}",
        "{{ v[1:] }}",
        "{{ v | first }}",
        "{{ v | list }}",
        "{{ v | items | list }}",
        "{{ v | dictsort }}",
        "{{ 'x' in v }}",
        "{{ v | map('string') | join(',') }}",
        "{{ v | select | list }}",
        "{{ v.items() }}",
        "{{ v | string }} {{ v | lower }}",
        "{{ v | sort }}",
        "{{ v | unique | list }}",
        "{{ v | batch(2) | list }}",
        "{{ v | reverse | list }}",
        "{% for k, x in v | items %}{{ k }}={{ x }};{% endfor %}",
        "{{ v | join('|') }}",
        "{{ v | max }} {{ v | min }}",
    ];

    fn probe(env: &Environment, src: &str, v: MjValue, w: MjValue) -> String {
        match env.render_str(src, minijinja::context! { v => v, w => w }) {
            Ok(s) => s,
            Err(e) => format!("error: {:?}", e.kind()),
        }
    }

    fn same_as_converted(value: &Value) {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for src in PROBES {
            let converted = MjValue::from_serialize(value);
            let eager = probe(&env, src, converted.clone(), converted.clone());
            let lazy_v = lazy(Arc::new(value.clone()));
            let lazily = probe(&env, src, lazy_v, converted);
            assert_eq!(lazily, eager, "{src} on {value}");
        }
    }

    /// The engine's own environment (strict, fuel, `dig`), typed and untyped templates.
    #[test]
    fn the_engines_templates_see_the_same() {
        use crate::compile::template::Templates;
        let value = json!({
            "eventType": "user.session.start",
            "actor": {"alternateId": "a@b", "id": "00u1"},
            "client": {"ipAddress": "45.100.0.1", "geo": null},
            "target": [{"id": "00u1"}, {"id": "00u2"}],
            "case": {"tags": ["iam", "okta"], "severity": "high"},
        });
        let mut t = Templates::new();
        let probes = [
            "{{ event | dig('client.ipAddress') }}",
            "{{ event | dig('target.1.id') }}",
            "{{ event | dig('client.geo.city') }}",
            "{{ event.target }}",
            "{{ event.case }}",
            "{{ event.target | map(attribute='id') | list }}",
            "{{ 'iam' in event.case.tags }}",
            "{{ (event | dig('eventType')) in ['user.session.start'] }}",
            "{{ event.case.tags | length }}",
            "{{ event.nope }}",
            "event {{ event.actor.alternateId }} from {{ event.client.ipAddress }}",
        ];
        for src in probes {
            let v = t.value(src).unwrap();
            let eager = minijinja::context! { event => MjValue::from_serialize(&value) };
            let lazily = minijinja::context! { event => lazy(Arc::new(value.clone())) };
            let a = t.render_tree(&v, &eager).map_err(|e| e.to_string());
            let b = t.render_tree(&v, &lazily).map_err(|e| e.to_string());
            assert_eq!(b, a, "{src}");
        }
    }

    #[test]
    fn an_okta_event_looks_the_same() {
        same_as_converted(&json!({
            "uuid": "2b0a7c5e-8f5f-11ee-a2d5-c7c6b0b2f0f1",
            "eventType": "user.session.start",
            "a": {"b": [1, -2, 2.5, null, true, "s"]},
            "b": [],
            "outcome": {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"},
            "target": [{"id": "00u1", "type": "User"}, {"id": "00u2", "alternateId": "x@y"}],
            "big": 18446744073709551615u64,
            "neg": -9223372036854775808i64,
        }));
        same_as_converted(&json!([{"a": 1}, [2], "x", 0, false]));
        same_as_converted(&json!({}));
        same_as_converted(&json!([]));
        same_as_converted(&json!("plain"));
        same_as_converted(&json!(null));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                prop::collection::btree_map("[a-c]{1,2}|x", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn any_value_looks_the_same(value in json_value()) {
            same_as_converted(&value);
        }
    }
}
