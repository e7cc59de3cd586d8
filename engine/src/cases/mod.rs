//! Cases: the model and its rules.
