//! The outbox retry as a background task of `engine serve`: one [`Deliverer::deliver_pending`]
//! pass at start-up (what an earlier process could not deliver), then one every
//! `notify.delivery.interval` (default 30 s) until the server stops. The engine cannot
//! depend on this crate, so the binary's `main` hands this task to the CLI
//! (`engine::cli::main_with`); an embedder running its own server can do the same.

use std::time::SystemTime;

use engine::notify::Outbox;
use engine::serve::BackgroundTask;

use super::deliver::{Deliverer, PassReport};

/// The task; see the module docs.
pub fn background_task() -> BackgroundTask {
    BackgroundTask::new("notify.deliver_pending", |services, stop| {
        Box::pin(async move {
            let Some(outbox) = services.get::<Outbox>() else {
                tracing::debug!("no notification outbox; nothing to retry");
                return;
            };
            let deliverer = match Deliverer::from_config(&services.config) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "notification retry is off: the `notify` config is invalid");
                    return;
                }
            };
            let pass = || async {
                let report = deliverer.deliver_pending(&outbox, SystemTime::now()).await;
                log(&report);
            };
            pass().await;
            engine::serve::every(deliverer.config().delivery.interval, stop, pass).await;
        })
    })
}

fn log(r: &PassReport) {
    if r.failed > 0 || r.rejected > 0 {
        tracing::warn!(
            delivered = r.delivered,
            failed = r.failed,
            rejected = r.rejected,
            waiting = r.waiting,
            "notification delivery pass"
        );
    } else if r.delivered > 0 {
        tracing::info!(delivered = r.delivered, "notification delivery pass");
    }
}
