//! Mocked step results, as a wrapper step registered in place of each real one.
//!
//! [`wrap`] returns a registry whose every step type is a [`MockStep`] around the real one:
//! when a mock of the test applies to the step being run (by playbook, step id and step
//! type, the most specific mock winning), the wrapper returns the mock's output or error
//! without calling the real step; otherwise it calls the real step. The scheduler sees an
//! ordinary step, so timeouts, retries (a mocked error is returned on every attempt),
//! `on_error` and `for_each` (the mock answers each item) behave as in production.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::spec::Mock;
use crate::step::{Registry, Step, StepContext, StepError, StepSpec};

/// A registry like `registry`, whose steps answer from `mocks` where one applies.
pub fn wrap(registry: &Registry, mocks: &[Mock]) -> Registry {
    let mocks: Arc<[Mock]> = mocks.into();
    let mut out = Registry::new();
    for name in registry.names() {
        if let Some(reg) = registry.get(name) {
            out.register_arc(Arc::new(MockStep {
                uses: name.to_string(),
                inner: reg.step.clone(),
                mocks: mocks.clone(),
            }));
        }
    }
    out
}

/// A step type whose results can be replaced by a test's mocks.
pub struct MockStep {
    uses: String,
    inner: Arc<dyn Step>,
    mocks: Arc<[Mock]>,
}

impl MockStep {
    /// The mock for this step of this playbook, if any: the most specific, and the first
    /// written among equally specific ones.
    fn find(&self, playbook: &str, step: &str) -> Option<&Mock> {
        let mut best: Option<&Mock> = None;
        for m in self.mocks.iter() {
            if m.applies(playbook, step, &self.uses) && best.is_none_or(|b| m.rank() > b.rank()) {
                best = Some(m);
            }
        }
        best
    }
}

#[async_trait]
impl Step for MockStep {
    fn spec(&self) -> StepSpec {
        self.inner.spec()
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        self.inner.check_config(config)
    }

    async fn run(&self, input: Value, ctx: &StepContext) -> Result<Value, StepError> {
        match self.find(&ctx.playbook, &ctx.step) {
            Some(m) => m.result.clone(),
            None => self.inner.run(input, ctx).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mock(playbook: Option<&str>, step: Option<&str>, uses: Option<&str>, out: i64) -> Mock {
        Mock {
            playbook: playbook.map(str::to_string),
            step: step.map(str::to_string),
            uses: uses.map(str::to_string),
            result: Ok(json!(out)),
        }
    }

    struct Real;

    #[async_trait]
    impl Step for Real {
        fn spec(&self) -> StepSpec {
            StepSpec {
                name: "real".into(),
                description: String::new(),
                input_schema: json!({}),
                example: json!({}),
            }
        }
        async fn run(&self, _input: Value, _ctx: &StepContext) -> Result<Value, StepError> {
            Ok(json!("real"))
        }
    }

    #[test]
    fn the_most_specific_mock_wins() {
        let step = MockStep {
            uses: "real".into(),
            inner: Arc::new(Real),
            mocks: vec![
                mock(None, None, Some("real"), 1),
                mock(None, Some("a"), None, 2),
                mock(Some("p"), Some("a"), None, 3),
                mock(None, None, Some("other"), 4),
            ]
            .into(),
        };
        let out = |pb, id| step.find(pb, id).map(|m| m.result.clone());
        assert_eq!(out("p", "a"), Some(Ok(json!(3))));
        assert_eq!(out("q", "a"), Some(Ok(json!(2))));
        assert_eq!(out("q", "b"), Some(Ok(json!(1))));
        let none = MockStep {
            mocks: vec![mock(None, None, Some("other"), 4)].into(),
            ..step
        };
        assert!(none.find("p", "a").is_none());
    }
}
