//! `engine serve`: Caseflow as a long-running HTTP service.
//!
//! Data flow: deliveries come in over HTTP ([`okta_hook`] for Okta event hooks,
//! [`events`] for other sources) or from the System Log poller ([`okta_poll`]); every one
//! is written durably to the engine's inbox with [`Engine::ingest`] (group commit:
//! concurrent deliveries share a flush) before it is acknowledged. The engine's worker
//! ([`Engine::run_worker`]) then runs the playbooks the events trigger, the case playbooks
//! they cascade into, the SLA watcher and the tick hooks, off the request path, and
//! resumes what a crash or a stop left unfinished.
//! People and tools read and change cases and runs through [`api_cases`] and [`api_runs`];
//! a change made there fires the same case triggers as a playbook's change. [`metrics`]
//! serves Prometheus text, [`auth`] checks the hook secret and the API token, and
//! [`shutdown`] turns SIGTERM into an orderly stop: stop accepting, let in-flight requests
//! finish, let the worker finish or park its runs, flush the store, exit 0.
//!
//! Work that belongs to other crates (the steps crate's notification retry) plugs in as
//! [`EngineHook`]s: the binary's `main` passes them to the CLI, which calls each with the
//! [`Engine`] before serving; a hook registers periodic work with [`Engine::on_tick`],
//! which the worker runs (first at start-up) and stops at shutdown.

pub mod api_cases;
pub mod api_runs;
pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod metrics;
pub mod okta_hook;
pub mod okta_poll;
pub mod shutdown;

use std::net::SocketAddr;
use std::sync::Arc;

pub use tokio_util::sync::CancellationToken;

use crate::schedule::Engine;
pub use app::AppState;
pub use config::ServeConfig;

/// Called with the engine before it serves, to plug in work from crates the engine
/// cannot depend on (e.g. `steps::notify::register_retry` registers the outbox retry
/// with [`Engine::on_tick`]).
pub type EngineHook = Arc<dyn Fn(&Engine) + Send + Sync>;

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
}

impl Server {
    /// Check the configuration against the address and bind it. Without
    /// `server.api_token`, only a loopback address is accepted.
    pub async fn bind(
        engine: Arc<Engine>,
        config: ServeConfig,
        listen: &str,
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
    /// in-flight requests finish (at most `server.shutdown_grace`), stop the poller, let
    /// the worker finish its runs or park them (at most `engine.shutdown_grace`; parked
    /// runs resume at the next start), flush the store.
    pub async fn run(self, stop: CancellationToken) -> Result<(), ServeError> {
        let Server {
            listener,
            addr,
            state,
        } = self;
        let worker_stop = CancellationToken::new();
        let mut background = tokio::task::JoinSet::new();
        // Subscribed before the worker starts, so resumed runs are counted too.
        background.spawn(metrics::follow_runs(
            state.metrics.clone(),
            state.engine.subscribe(),
            stop.clone(),
        ));
        let mut worker = tokio::spawn(state.engine.clone().run_worker(worker_stop.clone()));
        let worker_outcome = |r: Result<Result<(), crate::Error>, tokio::task::JoinError>| match r {
            Ok(r) => r.map_err(|e| ServeError::Runtime(format!("worker: {e}"))),
            Err(e) => Err(ServeError::Runtime(format!("worker task failed: {e}"))),
        };
        if let Some(poll) = state.config.poll.clone() {
            background.spawn(okta_poll::run(
                poll,
                state.engine.clone(),
                state.store.clone(),
                state.metrics.clone(),
                stop.clone(),
            ));
        }

        let grace = state.config.shutdown_grace;
        let router = app::router(state.clone());
        tracing::info!(%addr, "serving");
        let http_stop = stop.clone();
        let header_timeout = state.config.header_timeout;
        let mut served = tokio::spawn(http::serve(listener, router, header_timeout, http_stop));
        let mut http_failed = None;
        let mut served_done = false;
        let mut worker_done = None;
        tokio::select! {
            _ = stop.cancelled() => {}
            r = &mut served => {
                served_done = true;
                // The server ends by itself only if its task fails (after a signal it may
                // finish before this select sees the cancelled token).
                if !stop.is_cancelled() {
                    let why = match r {
                        Ok(()) => "stopped".to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::error!(error = %why, "the http server stopped unexpectedly; shutting down");
                    http_failed = Some(ServeError::Runtime(format!("http server: {why}")));
                    stop.cancel();
                }
            }
            // Acknowledging events nobody runs would only grow the inbox: stop, so the
            // operator (or the supervisor's restart) sees it; the journal resumes the runs.
            r = &mut worker => {
                let outcome = worker_outcome(r).and(Err(ServeError::Runtime("the worker stopped".into())));
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, "the worker stopped; shutting down");
                }
                worker_done = Some(outcome);
                stop.cancel();
            }
        }
        tracing::info!("shutting down: no new connections");
        if !served_done {
            match tokio::time::timeout(grace, &mut served).await {
                Ok(Ok(())) => {}
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
            tracing::warn!("the poller is still running after the grace period; stopping it");
            background.abort_all();
        }
        worker_stop.cancel();
        let worker_result = match worker_done {
            Some(r) => r,
            None => worker_outcome(worker.await),
        };
        let flushed = state
            .store
            .flush()
            .await
            .map_err(|e| ServeError::Runtime(format!("final flush: {e}")));
        if let Some(e) = http_failed {
            return Err(e);
        }
        worker_result?;
        flushed?;
        tracing::info!("stopped");
        Ok(())
    }
}
