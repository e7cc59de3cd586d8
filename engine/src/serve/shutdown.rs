//! SIGTERM and Ctrl-C become one cancelled token; [`super::Server::run`] does the orderly
//! part (stop accepting, drain requests, park or finish runs, flush).

use tokio_util::sync::CancellationToken;

/// The signals that stop the server, listened for from the moment [`listen`] returns. Call
/// it before telling anyone the server is up: a SIGTERM that arrives before the handler is
/// installed kills the process instead of stopping it in order.
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

/// Installs the handlers for SIGTERM and SIGINT (Ctrl-C). Must run inside the runtime.
pub fn listen() -> Signals {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate())
            .inspect_err(|e| {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server")
            })
            .ok();
        let int = signal(SignalKind::interrupt())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for Ctrl-C"))
            .ok();
        Signals { term, int }
    }
    #[cfg(not(unix))]
    Signals {}
}

/// Wait for SIGTERM or SIGINT (Ctrl-C), then cancel `stop`. Returns when either arrived or
/// `stop` was cancelled some other way.
pub async fn cancel_on_signal(signals: Signals, stop: CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        name = signals.recv() => {
            tracing::info!(signal = name, "stopping");
            stop.cancel();
        }
    }
}

impl Signals {
    #[cfg(unix)]
    async fn recv(mut self) -> &'static str {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => "SIGTERM",
            _ = next(&mut self.int) => "SIGINT",
        }
    }

    #[cfg(not(unix))]
    async fn recv(self) -> &'static str {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        "SIGINT"
    }
}
