//! `engine serve PATH... --listen ADDR [--data-dir DIR] [--config FILE]`: loads playbooks,
//! config and store exactly as `engine run` does, binds, prints
//! `listening on http://ADDR` on stdout (tests and scripts read the port from it), and
//! serves until SIGTERM or Ctrl-C. Exit codes: 0 after an orderly stop, 1 when the
//! playbooks, the config or the store are unusable or the address cannot be bound.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{bundled_config, check_config, load, open_store_with, runtime, StoreLocation};
use crate::schedule::Engine;
use crate::serve::{EngineHook, ServeConfig, Server};
use crate::step::{Registry, Services};

pub struct ServeArgs {
    pub paths: Vec<PathBuf>,
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub config: Option<PathBuf>,
    pub seed: Option<u64>,
}

pub fn run(
    args: ServeArgs,
    registry: Registry,
    hooks: Vec<EngineHook>,
) -> Result<ExitCode, String> {
    let bundle = match load(&args.paths, &registry) {
        Ok(b) => b,
        Err(code) => return Ok(code),
    };
    let config_path = args.config.or_else(|| bundled_config(&args.paths));
    let config = crate::config::load(config_path.as_deref()).map_err(|e| e.to_string())?;
    if let Err(code) = check_config(&registry, &bundle, &config, config_path.as_deref()) {
        return Ok(code);
    }
    let serve_config = ServeConfig::from_config(&config).map_err(|e| match &config_path {
        Some(p) => format!("{}: {e}", p.display()),
        None => e.to_string(),
    })?;
    // The runtime first: a PostgreSQL store keeps its heartbeat and notifications on it.
    let rt = runtime()?;
    let at = StoreLocation {
        data_dir: &args.data_dir,
        database_url: args.database_url.as_deref(),
    };
    let store = open_store_with(&at, &config, &rt)?;
    let outbox = super::open_outbox(&store, &args.data_dir, &rt)?;
    let mut services = Services::new().with_config(config).with_store(store);
    services.insert(outbox);
    services.seed = args.seed;
    let engine = Arc::new(Engine::new(bundle, services));
    for hook in &hooks {
        hook(&engine);
    }
    rt.block_on(async move {
        let server = Server::bind(engine, serve_config, &args.listen)
            .await
            .map_err(|e| e.to_string())?;
        let addr = server.local_addr();
        // Before the address is printed: whoever waits for it may send SIGTERM at once.
        let signals = crate::serve::shutdown::listen();
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on http://{addr}");
            let _ = out.flush();
        }
        let stop = CancellationToken::new();
        let signals = tokio::spawn(crate::serve::shutdown::cancel_on_signal(
            signals,
            stop.clone(),
        ));
        let result = server.run(stop.clone()).await;
        stop.cancel();
        let _ = signals.await;
        result.map_err(|e| e.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}
