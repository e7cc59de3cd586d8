//! Persistence: the store trait and its implementations.
