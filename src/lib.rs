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

/// Background tasks `engine serve` runs beside the server: the notification outbox retry.
pub fn background_tasks() -> Vec<engine::serve::BackgroundTask> {
    vec![steps::notify::background_task()]
}
