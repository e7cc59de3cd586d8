//! Caseflow's generic engine.
//!
//! The flow is the folder layout: [`load`] reads YAML files into documents with positions,
//! [`validate`] checks them against the playbook format and collects every problem,
//! [`compile`] turns them into [`compile::Plan`]s (templates compiled once, a petgraph DAG),
//! [`schedule`] matches events to playbooks and runs plans, and [`persist`] keeps cases and
//! run state. Steps plug in through [`step::Step`] and a [`step::Registry`]; the engine
//! knows nothing of Okta or IP intelligence. [`testing`] runs playbook tests
//! (`*.test.yaml`, `engine test`) against all of it with an in-memory store.

pub mod cases;
pub mod cli;
pub mod compile;
pub mod config;
pub mod error;
pub mod load;
pub mod notify;
pub mod persist;
pub mod report;
pub mod schedule;
pub mod schema;
pub mod serve;
pub mod step;
pub mod testing;
pub mod validate;

pub use compile::{load_paths, Bundle, Plan};
pub use error::{Code, Diagnostic, Error};
pub use report::{RunReport, RunStatus, StepReport};
pub use schedule::Engine;
pub use step::{ErrorKind, Registry, Services, Step, StepContext, StepError, StepSpec, TypedStep};
