//! The `engine` command line. The binary's `main` builds a registry and calls [`main`].

mod events;
mod graph;
mod output;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::compile::{load_paths, Bundle};
use crate::error::Diagnostic;
use crate::schedule::Engine;
use crate::step::{Registry, Services};

#[derive(Parser, Debug)]
#[command(
    name = "engine",
    version,
    about = "Caseflow: case automation for security teams"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the playbooks on events (the playbooks' sample events when none is given).
    Run {
        /// Playbook files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// An event file: an Okta event-hook body, one event, or an array; `-` reads stdin.
        #[arg(long)]
        event: Vec<PathBuf>,
        /// The source the events come from (`on.event` of the playbooks to start).
        #[arg(long, default_value = "okta")]
        source: String,
        /// Where state is kept.
        #[arg(long, default_value = ".caseflow")]
        data_dir: PathBuf,
        /// Configuration file (YAML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed for step randomness (assignment), for reproducible runs.
        #[arg(long)]
        seed: Option<u64>,
        /// Print one JSON object instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Check playbooks without running them.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print a playbook's step graph.
    Graph {
        path: PathBuf,
        /// Which playbook, when the file holds several.
        #[arg(long)]
        playbook: Option<String>,
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of the playbook format.
    Schema,
    /// List the step types with their inputs and an example each.
    Steps {
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GraphFormat {
    Mermaid,
    Dot,
}

/// Parse the process arguments and run the command.
pub fn main(registry: Registry) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_tracing();
    match run(cli, registry) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CASEFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn print_diagnostics(diags: &[Diagnostic]) {
    let mut err = std::io::stderr().lock();
    for d in diags {
        let _ = write!(err, "{d}");
    }
    let files: std::collections::BTreeSet<_> = diags.iter().map(|d| &d.file).collect();
    let _ = writeln!(
        err,
        "error: {} problem{} in {} file{}",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" },
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    );
}

fn load(paths: &[PathBuf], registry: &Registry) -> Result<Bundle, ExitCode> {
    load_paths(paths, registry).map_err(|diags| {
        print_diagnostics(&diags);
        ExitCode::from(1)
    })
}

fn run(cli: Cli, registry: Registry) -> Result<ExitCode, String> {
    match cli.command {
        Command::Validate { paths } => {
            let bundle = match load(&paths, &registry) {
                Ok(b) => b,
                Err(code) => return Ok(code),
            };
            let files: std::collections::BTreeSet<_> =
                bundle.playbooks.iter().map(|p| &p.file).collect();
            println!(
                "ok: {} playbook{} in {} file{}",
                bundle.playbooks.len(),
                if bundle.playbooks.len() == 1 { "" } else { "s" },
                files.len(),
                if files.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph {
            path,
            playbook,
            format,
        } => {
            let bundle = match load(&[path], &registry) {
                Ok(b) => b,
                Err(code) => return Ok(code),
            };
            let plans: Vec<_> = match &playbook {
                Some(name) => match bundle.get(name) {
                    Some(p) => vec![p.clone()],
                    None => {
                        let names: Vec<_> =
                            bundle.playbooks.iter().map(|p| p.name.as_str()).collect();
                        return Err(format!(
                            "no playbook `{name}` (found: {})",
                            names.join(", ")
                        ));
                    }
                },
                None => bundle.playbooks.clone(),
            };
            for p in plans {
                match format {
                    GraphFormat::Mermaid => print!("{}", graph::mermaid(&p)),
                    GraphFormat::Dot => print!("{}", graph::dot(&p)),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema => {
            let schema = crate::schema::playbook_schema(&registry);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).map_err(|e| e.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Steps { json } => {
            output::steps(&registry, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            paths,
            event,
            source,
            data_dir: _,
            config,
            seed,
            json,
        } => {
            let bundle = match load(&paths, &registry) {
                Ok(b) => b,
                Err(code) => return Ok(code),
            };
            let config = crate::config::load(config.as_deref()).map_err(|e| e.to_string())?;
            let events = if event.is_empty() {
                events::samples(&paths)?
            } else {
                let mut all = Vec::new();
                for f in &event {
                    all.extend(events::read(f)?);
                }
                all
            };
            let mut services = Services::default();
            services.config = std::sync::Arc::new(config);
            services.seed = seed;
            let engine = Engine::new(bundle, services);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            let mut reports = Vec::new();
            for (label, ev) in events {
                let runs = rt.block_on(engine.dispatch(&source, ev.clone(), None));
                reports.push(output::EventRuns {
                    label,
                    event: ev,
                    runs,
                });
            }
            if json {
                output::run_json(&reports);
            } else {
                output::run_summary(&reports);
            }
            let ok = reports
                .iter()
                .all(|r| crate::schedule::all_succeeded(&r.runs));
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
