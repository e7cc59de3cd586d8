//! Steps: the actions a playbook runs, behind one small object-safe trait.
//!
//! A step type is registered in a [`Registry`] under its name (`cases.create`). Most steps
//! implement [`TypedStep`]: a typed input deserialized from the rendered `with:` block and a
//! JSON Schema of it (for validation at load time and for `engine schema`). Timeout, retry,
//! tracing and journaling are written once in the executor, never inside a step. A step gets
//! everything it needs (clients, store, clock, randomness, config) from its [`StepContext`].

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use rand::SeedableRng;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::cases::{Actor, Timestamp};
use crate::persist::{IdempotencyKey, Store, WriteMeta};

/// What kind of failure a step had; decides whether `retry` tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Worth trying again: network errors, 5xx, 429.
    Retryable,
    /// Will fail again the same way: 4xx, bad data, a rule that forbids the change.
    Permanent,
    /// The attempt ran out of time.
    Timeout,
    /// The rendered input does not fit the step's input type.
    InvalidInput,
}

/// A step failure: a kind and a message a person can act on.
#[derive(Debug, Clone, thiserror::Error, Serialize, serde::Deserialize, PartialEq)]
#[error("{message}")]
pub struct StepError {
    pub kind: ErrorKind,
    pub message: String,
}

impl StepError {
    pub fn retryable(message: impl fmt::Display) -> Self {
        StepError {
            kind: ErrorKind::Retryable,
            message: message.to_string(),
        }
    }
    pub fn permanent(message: impl fmt::Display) -> Self {
        StepError {
            kind: ErrorKind::Permanent,
            message: message.to_string(),
        }
    }
    pub fn timeout(message: impl fmt::Display) -> Self {
        StepError {
            kind: ErrorKind::Timeout,
            message: message.to_string(),
        }
    }
    pub fn invalid_input(message: impl fmt::Display) -> Self {
        StepError {
            kind: ErrorKind::InvalidInput,
            message: message.to_string(),
        }
    }
}

/// What `engine steps` and `engine schema` say about a step type.
#[derive(Debug, Clone, Serialize)]
pub struct StepSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the `with:` block.
    pub input_schema: Value,
    /// A `with:` block that validates; proven by a test.
    pub example: Value,
}

/// The object-safe trait every step type implements (usually through [`TypedStep`]).
#[async_trait]
pub trait Step: Send + Sync + 'static {
    fn spec(&self) -> StepSpec;
    async fn run(&self, input: Value, ctx: &StepContext) -> Result<Value, StepError>;
    /// Checks the parts of the config file this step type reads, before anything runs, so a
    /// bad value stops start-up with a clear message instead of failing (or being ignored)
    /// in the middle of a run. The message names the config key; it never shows a secret.
    fn check_config(&self, _config: &Value) -> Result<(), String> {
        Ok(())
    }
    /// True when running the step changes nothing outside the run: it only reads (the case
    /// store, a lookup API) or computes, so running it twice is harmless. The executor then
    /// does not wait for the journal's flush before starting it (see
    /// [`crate::schedule::journal`]); a step with any effect (a case change, a POST, a
    /// notification) must keep the default `false`. `with` is the step's `with:` block as
    /// written in the playbook, templates unrendered, for types whose effects depend on a
    /// literal setting (`http.request` with `method: GET`); decided once, when the playbook
    /// is compiled.
    fn effect_free(&self, _with: &Value) -> bool {
        false
    }
}

/// A step with a typed input and output; implements [`Step`] for you.
#[async_trait]
pub trait TypedStep: Send + Sync + 'static {
    type Input: DeserializeOwned + JsonSchema + Send + 'static;
    type Output: Serialize + Send + 'static;
    /// The name playbooks use in `uses:`.
    const NAME: &'static str;
    /// One line for `engine steps`.
    fn description(&self) -> &'static str;
    /// A valid `with:` block.
    fn example(&self) -> Value;
    async fn run(&self, input: Self::Input, ctx: &StepContext) -> Result<Self::Output, StepError>;
    /// See [`Step::check_config`].
    fn check_config(&self, _config: &Value) -> Result<(), String> {
        Ok(())
    }
    /// See [`Step::effect_free`]: true for a type that never has effects.
    const EFFECT_FREE: bool = false;
    /// See [`Step::effect_free`], for a type whose effects depend on its `with:` block.
    fn effect_free(&self, _with: &Value) -> bool {
        Self::EFFECT_FREE
    }
}

#[async_trait]
impl<T: TypedStep> Step for T {
    fn check_config(&self, config: &Value) -> Result<(), String> {
        TypedStep::check_config(self, config)
    }

    fn effect_free(&self, with: &Value) -> bool {
        TypedStep::effect_free(self, with)
    }

    fn spec(&self) -> StepSpec {
        StepSpec {
            name: T::NAME.to_string(),
            description: self.description().to_string(),
            input_schema: schemars::schema_for!(T::Input).to_value(),
            example: self.example(),
        }
    }

    async fn run(&self, input: Value, ctx: &StepContext) -> Result<Value, StepError> {
        let input: T::Input = serde_path_to_error::deserialize(input).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                StepError::invalid_input(format!("invalid input: {}", e.inner()))
            } else {
                StepError::invalid_input(format!("invalid input `{path}`: {}", e.inner()))
            }
        })?;
        let out = TypedStep::run(self, input, ctx).await?;
        serde_json::to_value(out)
            .map_err(|e| StepError::permanent(format!("output is not JSON: {e}")))
    }
}

/// The step types a bundle of playbooks can use, by name.
#[derive(Clone, Default)]
pub struct Registry {
    steps: BTreeMap<String, RegisteredStep>,
}

/// A registered step type with its spec computed once.
#[derive(Clone)]
pub struct RegisteredStep {
    pub step: Arc<dyn Step>,
    pub spec: Arc<StepSpec>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a step type; a later registration under the same name replaces the earlier.
    pub fn register<S: Step>(&mut self, step: S) -> &mut Self {
        self.register_arc(Arc::new(step))
    }

    pub fn register_arc(&mut self, step: Arc<dyn Step>) -> &mut Self {
        let spec = Arc::new(step.spec());
        self.steps
            .insert(spec.name.clone(), RegisteredStep { step, spec });
        self
    }

    pub fn get(&self, name: &str) -> Option<&RegisteredStep> {
        self.steps.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.steps.keys().map(String::as_str)
    }

    pub fn specs(&self) -> impl Iterator<Item = &StepSpec> {
        self.steps.values().map(|s| s.spec.as_ref())
    }

    /// [`Step::check_config`] of each named step type (the ones a bundle uses), with each
    /// distinct problem once, as `(step type, message)`.
    pub fn check_config<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        config: &Value,
    ) -> Vec<(String, String)> {
        let mut seen = std::collections::BTreeSet::new();
        let mut problems = Vec::new();
        for name in names {
            let Some(s) = self.steps.get(name) else {
                continue;
            };
            if let Err(m) = s.step.check_config(config) {
                if seen.insert(m.clone()) {
                    problems.push((name.to_string(), m));
                }
            }
        }
        problems
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.steps.keys()).finish()
    }
}

/// The time source steps and the engine read; tests inject a fixed one.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Shared services for steps: the case store, typed clients (HTTP, ...), config, clock, seed.
#[derive(Clone)]
pub struct Services {
    extensions: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    /// What steps build once and share ([`Services::shared`]); clones share it.
    shared: Arc<std::sync::Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
    /// The case store; `None` for bundles that never touch cases.
    pub store: Option<Arc<dyn Store>>,
    /// The configuration file, as JSON (secrets already substituted).
    pub config: Arc<Value>,
    pub clock: Arc<dyn Clock>,
    /// Seed for step randomness; `None` draws a fresh seed per run.
    pub seed: Option<u64>,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            extensions: HashMap::new(),
            shared: Arc::default(),
            store: None,
            config: Arc::new(Value::Object(Default::default())),
            clock: Arc::new(SystemClock),
            seed: None,
        }
    }
}

impl Services {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    pub fn with_config(mut self, config: Value) -> Self {
        self.config = Arc::new(config);
        self
    }
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    pub fn insert<T: Any + Send + Sync>(&mut self, value: Arc<T>) -> &mut Self {
        self.extensions.insert(TypeId::of::<T>(), value);
        self
    }
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.extensions
            .get(&TypeId::of::<T>())
            .and_then(|v| v.clone().downcast::<T>().ok())
    }

    /// The one `T` of these services, made by `make` on first use: state steps keep
    /// across calls for the life of the engine (an HTTP client with its connection pool,
    /// say), rather than in a static that would outlive the engine and its runtime. An
    /// `engine serve` process has one; each playbook test has its own.
    pub fn shared<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        let mut map = self
            .shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(v) = map
            .get(&TypeId::of::<T>())
            .and_then(|v| v.clone().downcast::<T>().ok())
        {
            return v;
        }
        let v = Arc::new(make());
        map.insert(TypeId::of::<T>(), v.clone());
        v
    }
}

/// What a step sees of the run it belongs to.
#[derive(Clone)]
pub struct StepContext {
    pub run_id: String,
    pub playbook: String,
    pub step: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Item index inside `for_each`, if any.
    pub item_index: Option<usize>,
    pub services: Arc<Services>,
    pub(crate) seed: u64,
}

impl StepContext {
    /// Stable across attempts of the same step of the same run (and the same item):
    /// send it as `Idempotency-Key` so the far side can drop duplicates.
    pub fn idempotency_key(&self) -> String {
        match self.item_index {
            Some(i) => format!("{}:{}:{i}", self.run_id, self.step),
            None => format!("{}:{}", self.run_id, self.step),
        }
    }

    /// Randomness seeded from the run's seed and this step: deterministic under a fixed seed.
    pub fn rng(&self) -> rand::rngs::StdRng {
        let mut h: u64 = self.seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in self.step.bytes() {
            h = h.rotate_left(5) ^ u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= self.item_index.unwrap_or(0) as u64;
        rand::rngs::StdRng::seed_from_u64(h)
    }

    pub fn now(&self) -> SystemTime {
        self.services.clock.now()
    }

    pub fn config(&self) -> &Value {
        &self.services.config
    }

    pub fn service<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.services.get::<T>()
    }

    /// See [`Services::shared`].
    pub fn shared<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        self.services.shared(make)
    }

    /// The case store, or a permanent error when the engine runs without one.
    pub fn store(&self) -> Result<Arc<dyn Store>, StepError> {
        self.services
            .store
            .clone()
            .ok_or_else(|| StepError::permanent("this engine has no case store"))
    }

    /// The current time as a case timestamp.
    pub fn timestamp(&self) -> Timestamp {
        Timestamp::from_system_time(self.now())
    }

    /// This step of this run, as the actor of case changes.
    pub fn actor(&self) -> Actor {
        Actor::Playbook {
            run_id: self.run_id.clone(),
            playbook: self.playbook.clone(),
            step: self.step.clone(),
        }
    }

    /// Who, when, and the idempotency key of a case change made by this step: a retried
    /// attempt, or a resumed run, replays the committed result instead of changing twice.
    pub fn write_meta(&self) -> WriteMeta {
        WriteMeta {
            actor: self.actor(),
            at: self.timestamp(),
            idempotency: Some(IdempotencyKey {
                run_id: self.run_id.clone(),
                step_id: match self.item_index {
                    Some(i) => format!("{}[{i}]", self.step),
                    None => self.step.clone(),
                },
            }),
            journaled: true,
        }
    }
}
