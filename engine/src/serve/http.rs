//! The HTTP/1.1 accept loop: `axum::serve` with the one setting it does not offer, a
//! deadline for a request's headers (`server.header_timeout`). Without it a client that
//! sends its headers a byte at a time ("slowloris") holds a connection, and a task, for as
//! long as it likes; enough of them exhaust the server's file descriptors. The hook
//! endpoint faces the internet (Okta calls it), so the deadline is on by default.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `stop`, then waits for the open connections'
/// requests to finish (the caller bounds that wait with `server.shutdown_grace`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // Small request/response exchanges: no Nagle delay (as `axum::serve`).
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        // No upgrades: the server has no WebSocket or CONNECT routes.
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Includes a client that did not send its headers in time.
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An accept that failed: a connection the client gave up on is skipped; anything else
/// (out of file descriptors, most often) is logged and retried after a second, as
/// `axum::serve` does, instead of spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
