//! Caseflow's generic engine.
pub mod cases;
pub mod persist;
