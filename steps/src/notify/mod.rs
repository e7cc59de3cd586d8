//! Notifications: the `notify` step and delivery to its channels.
//!
//! Data flow: the step expands recipients (`team:NAME` from config `teams`), records the
//! [`engine::notify::Notification`] durably in the engine's [`engine::notify::Outbox`]
//! (the `outbox` channel is that record), prints it for `console`, and then makes one
//! delivery pass ([`deliver::Deliverer::deliver`]) for each network channel (`slack`,
//! `webhook`). A channel that is down does not fail the step: the step's output says
//! `delivered: {slack: false}` with the error, the outbox keeps the notification as owed,
//! and [`deliver_pending`] delivers it on a later pass. Configuration: [`config`].

pub mod config;
pub mod deliver;
pub mod email;
pub mod retry;
pub mod step;

pub use config::NotifyConfig;
pub use deliver::{deliver_pending, Deliverer, Outcome, PassReport};
pub use retry::register_retry;
pub use step::Notify;
