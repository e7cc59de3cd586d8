//! The outbox retry under `engine serve`: a [`Deliverer::deliver_pending`] pass at start-up
//! (what an earlier process could not deliver), then one every `notify.delivery.interval`
//! (default 30 s), run by the engine's worker as a tick hook ([`engine::Engine::on_tick`])
//! and stopped with it. The engine cannot depend on this crate, so the binary's `main`
//! hands [`register_retry`] to the CLI (`engine::cli::main_with`); an embedder running its
//! own worker calls it on its engine.

use std::sync::Arc;
use std::time::SystemTime;

use engine::notify::Outbox;
use engine::Engine;

use super::deliver::{Deliverer, PassReport};

/// Register the retry on `engine`: nothing without an outbox in its services, and an
/// error in the log (no retry) when the `notify` config is invalid.
pub fn register_retry(engine: &Engine) {
    let services = engine.services();
    let Some(outbox) = services.get::<Outbox>() else {
        tracing::debug!("no notification outbox; nothing to retry");
        return;
    };
    let deliverer = match Deliverer::from_config(&services.config) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            tracing::error!(error = %e, "notification retry is off: the `notify` config is invalid");
            return;
        }
    };
    let every = deliverer.config().delivery.interval;
    engine.on_tick(every, move || {
        let deliverer = deliverer.clone();
        let outbox = outbox.clone();
        Box::pin(async move {
            let report = deliverer.deliver_pending(&outbox, SystemTime::now()).await;
            log(&report);
        })
    });
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
