//! SIGTERM and Ctrl-C become one cancelled token; [`super::Server::run`] does the orderly
//! part (stop accepting, drain requests, park or finish runs, flush).

use tokio_util::sync::CancellationToken;

/// Wait for SIGTERM or SIGINT (Ctrl-C), then cancel `stop`. Returns when either arrived or
/// `stop` was cancelled some other way.
pub async fn cancel_on_signal(stop: CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        name = signal() => {
            tracing::info!(signal = name, "stopping");
            stop.cancel();
        }
    }
}

#[cfg(unix)]
async fn signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            r = tokio::signal::ctrl_c() => {
                if let Err(e) = r { tracing::warn!(error = %e, "cannot listen for Ctrl-C"); std::future::pending::<()>().await; }
                "SIGINT"
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            ctrl_c().await
        }
    }
}

#[cfg(not(unix))]
async fn signal() -> &'static str {
    ctrl_c().await
}

async fn ctrl_c() -> &'static str {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::warn!(error = %e, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
    "SIGINT"
}
