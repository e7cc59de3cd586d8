//! Outbound HTTP for every step that talks to the network, and the secret type they use.
//!
//! Data flows one way: a step reads its section of the config, wraps tokens in [`Secret`],
//! builds a [`GuardedClient`] (or gets the embedder's through `ctx.service`), and sends
//! requests only through it. The client checks each URL with [`check_url`] before sending,
//! resolves host names through [`GuardedResolver`] (so a name pointing at `127.0.0.1` is
//! refused like the literal), and re-checks every redirect target. Hosts listed in config
//! `http.allow_hosts` skip both checks. [`step_error`] turns a transport failure into a
//! retryable, permanent or timeout [`engine::StepError`] without leaking query strings.

pub mod client;
pub mod guard;
pub mod secret;

pub use client::{
    guarded_client, read_body, redact_url, step_error, ClientCache, ClientConfig, ConfigError,
    GuardedClient, MAX_BODY_BYTES,
};
pub use guard::{check_host, check_ip, check_url, AllowList, GuardError, GuardedResolver};
pub use secret::Secret;
