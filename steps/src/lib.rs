//! Caseflow's built-in steps: one step type per file, each a [`engine::TypedStep`].
//!
//! `register_builtin` is the one place that lists them. The case, Okta, enrichment and
//! notification steps join this list as they are built; the engine itself knows none of them.

pub mod cases;
pub mod duration;
pub mod http_request;
pub mod intel;
pub mod log;
pub mod net;
pub mod notify;
pub mod okta;
pub mod set;

use engine::Registry;

/// Register every built-in step type.
pub fn register_builtin(registry: &mut Registry) {
    registry
        .register(log::Log)
        .register(set::Set)
        .register(notify::Notify)
        .register(intel::step::EnrichIp::new())
        .register(cases::query::Query)
        .register(cases::create::Create)
        .register(cases::update::Update)
        .register(cases::set_severity::SetSeverity)
        .register(cases::set_sla::SetSla)
        .register(cases::set_state::SetState)
        .register(cases::assign::Assign)
        .register(okta::UserGroups)
        .register(okta::SuspendUser)
        .register(okta::ClearSessions)
        .register(http_request::HttpRequest);
}
