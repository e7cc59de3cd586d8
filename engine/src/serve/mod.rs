//! `engine serve`: Caseflow as a long-running HTTP service.
//!
//! Data flow: deliveries come in over HTTP ([`okta_hook`] for Okta event hooks,
//! [`events`] for other sources) or from the System Log poller ([`okta_poll`]); every one
//! is written durably to the engine's inbox through [`backend::Backend::ingest`] (group
//! commit: concurrent deliveries share a flush) before it is acknowledged. The engine's
//! worker ([`backend::Backend::run_worker`]) then runs the playbooks the events trigger,
//! the case playbooks they cascade into and the SLA watcher, off the request path.
//! People and tools read and change cases and runs through [`api_cases`] and [`api_runs`];
//! a change made there fires the same case triggers as a playbook's change. [`metrics`]
//! serves Prometheus text, [`auth`] checks the hook secret and the API token, and
//! [`shutdown`] turns SIGTERM into an orderly stop: stop accepting, let in-flight requests
//! finish, let the worker finish or park its runs, flush the store, exit 0.
//!
//! Work that belongs to other crates (the steps crate's notification retry) plugs in as
//! [`BackgroundTask`]s: the binary's `main` passes them to the CLI, and [`Server::run`]
//! starts each with the engine's [`Services`] and a stop token.

pub mod api_cases;
pub mod api_runs;
pub mod app;
pub mod auth;
pub mod backend;
pub mod config;
pub mod error;
pub mod events;
pub mod metrics;
pub mod okta_hook;
pub mod okta_poll;
pub mod shutdown;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

use crate::schedule::Engine;
use crate::step::Services;
pub use app::AppState;
pub use config::ServeConfig;

/// A future a background task runs until its stop token is cancelled.
pub type TaskFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Work that runs beside the server for as long as it runs, such as the notification
/// outbox retry of the steps crate (which the engine cannot depend on). The function gets
/// the engine's services (config, store, outbox, ...) and a token that is cancelled at
/// shutdown; it returns a future that should end soon after the token is cancelled.
#[derive(Clone)]
pub struct BackgroundTask {
    pub name: &'static str,
    pub start: Arc<dyn Fn(Arc<Services>, CancellationToken) -> TaskFuture + Send + Sync>,
}

impl BackgroundTask {
    pub fn new<F>(name: &'static str, start: F) -> Self
    where
        F: Fn(Arc<Services>, CancellationToken) -> TaskFuture + Send + Sync + 'static,
    {
        BackgroundTask {
            name,
            start: Arc::new(start),
        }
    }
}

impl std::fmt::Debug for BackgroundTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundTask")
            .field("name", &self.name)
            .finish()
    }
}

/// Call `tick` every `interval` (first after one interval) until `stop` is cancelled.
/// A tick in progress when `stop` is cancelled is allowed to finish.
pub async fn every<F, Fut>(interval: Duration, stop: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let interval = interval.max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        tick().await;
    }
}

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

/// A bound server: the socket is open (so its address is known, e.g. after binding port 0)
/// but nothing is served until [`Server::run`].
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: AppState,
    tasks: Vec<BackgroundTask>,
}

impl Server {
    /// Check the configuration against the address and bind it. Without
    /// `server.api_token`, only a loopback address is accepted.
    pub async fn bind(
        engine: Arc<Engine>,
        config: ServeConfig,
        listen: &str,
        tasks: Vec<BackgroundTask>,
    ) -> Result<Server, ServeError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: listen.to_string(),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ServeError::Config(format!(
                "`{listen}` resolves to no address"
            )));
        }
        let public = addrs.iter().any(|a| !a.ip().is_loopback());
        if public && config.api_token.is_none() {
            return Err(ServeError::Config(format!(
                "refusing to listen on `{listen}` without `server.api_token`: set a token in the config (e.g. `server: {{ api_token: \"${{CASEFLOW_API_TOKEN}}\" }}`) or listen on a loopback address such as 127.0.0.1"
            )));
        }
        let listener = tokio::net::TcpListener::bind(&addrs[..])
            .await
            .map_err(|source| ServeError::Bind {
                addr: listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: listen.to_string(),
            source,
        })?;
        let state = AppState::new(engine, config, addr.ip().is_loopback())?;
        Ok(Server {
            listener,
            addr,
            state,
            tasks,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `stop` is cancelled, then shut down in order: stop accepting and let
    /// in-flight requests finish (at most `server.shutdown_grace`), stop the poller and the
    /// background tasks, let the worker finish or park its runs, flush the store.
    pub async fn run(self, stop: CancellationToken) -> Result<(), ServeError> {
        let Server {
            listener,
            addr,
            state,
            tasks,
        } = self;
        let worker_stop = CancellationToken::new();
        let backend = state.backend.clone();
        let worker = tokio::spawn(backend.clone().run_worker(worker_stop.clone()));

        let mut background = tokio::task::JoinSet::new();
        for t in &tasks {
            let fut = (t.start)(state.backend.engine().services().clone(), stop.clone());
            let name = t.name;
            background.spawn(async move {
                fut.await;
                tracing::debug!(task = name, "background task stopped");
            });
        }
        background.spawn(metrics::follow_runs(
            state.metrics.clone(),
            backend.subscribe(),
            stop.clone(),
        ));
        if let Some(poll) = state.config.poll.clone() {
            background.spawn(okta_poll::run(
                poll,
                backend.clone(),
                state.metrics.clone(),
                stop.clone(),
            ));
        }

        let grace = state.config.shutdown_grace;
        let router = app::router(state.clone());
        tracing::info!(%addr, "serving");
        let http_stop = stop.clone();
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(async move { http_stop.cancelled().await });
        let mut served = tokio::spawn(async move { server.await });
        let mut finished = false;
        tokio::select! {
            _ = stop.cancelled() => {}
            // The server ends by itself only when accepting fails for good.
            r = &mut served => {
                finished = true;
                stop.cancel();
                tracing::error!(result = ?r.map(|r| r.map_err(|e| e.to_string())), "http server stopped unexpectedly");
            }
        }
        tracing::info!("shutting down: no new connections");
        if !finished {
            match tokio::time::timeout(grace, &mut served).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "http server failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "http server task failed"),
                Err(_) => {
                    tracing::warn!(
                        grace = ?grace,
                        "requests still open after the shutdown grace period; closing them"
                    );
                    served.abort();
                }
            }
        }
        let drained = tokio::time::timeout(grace, async {
            while background.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("background tasks still running after the grace period; stopping them");
            background.abort_all();
        }
        worker_stop.cancel();
        let worker_result = match worker.await {
            Ok(r) => r.map_err(|e| ServeError::Runtime(format!("worker: {e}"))),
            Err(e) => Err(ServeError::Runtime(format!("worker task failed: {e}"))),
        };
        let flushed = backend
            .flush()
            .await
            .map_err(|e| ServeError::Runtime(format!("final flush: {e}")));
        worker_result?;
        flushed?;
        tracing::info!("stopped");
        Ok(())
    }
}
