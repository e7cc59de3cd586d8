//! Caseflow as a library: the generic engine, the built-in steps, and a registry with
//! every built-in step registered.
//!
//! ```no_run
//! let registry = caseflow::builtin_registry();
//! let bundle = caseflow::engine::load_paths(&["playbooks".into()], &registry);
//! ```

pub use engine;
pub use steps;

/// A registry holding every built-in step type.
pub fn builtin_registry() -> engine::Registry {
    let mut r = engine::Registry::new();
    steps::register_builtin(&mut r);
    r
}

/// What `engine serve` plugs into its engine from the steps crate: the notification
/// outbox retry and the purge of expired enrichment answers (tick hooks of the worker).
pub fn serve_hooks() -> Vec<engine::serve::EngineHook> {
    vec![
        std::sync::Arc::new(steps::notify::register_retry),
        std::sync::Arc::new(steps::intel::register_cache_purge),
    ]
}
