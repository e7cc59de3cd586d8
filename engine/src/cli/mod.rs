//! The `engine` command line. The binary's `main` builds a registry and calls [`main`].

mod cases;
pub(crate) mod events;
mod graph;
mod notifications;
mod output;
mod serve;
mod test;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

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
        #[command(flatten)]
        store: StoreArgs,
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
    /// Run playbook tests (`*.test.yaml`): events in, runs, cases and notifications checked.
    Test(test::TestArgs),
    /// Serve HTTP: Okta event hooks, other event sources, the cases and runs API, metrics.
    Serve {
        /// Playbook files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Configuration file (YAML); default `data/config.yaml` beside the playbooks.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed for step randomness (assignment), for reproducible runs.
        #[arg(long)]
        seed: Option<u64>,
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
    /// Look at cases and change them as a person.
    Cases {
        #[command(subcommand)]
        command: CasesCommand,
    },
    /// List the notification outbox, newest first, with each one's delivery on Slack,
    /// webhooks and e-mail.
    Notifications {
        /// Only those still owed on some channel (not yet delivered, and not rejected).
        #[arg(long)]
        pending: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Maintain the store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Print the JSON Schema of the playbook format.
    Schema,
    /// List the step types with their inputs and an example each.
    Steps {
        #[arg(long)]
        json: bool,
    },
}

/// Where the state is: sled under `--data-dir` (the default), or PostgreSQL with
/// `--database-url`; every command that opens the store takes both.
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// Where state is kept (sled's files; with PostgreSQL only the outbox files of an older
    /// engine, imported from there).
    #[arg(long, default_value = ".caseflow")]
    data_dir: PathBuf,
    /// PostgreSQL instead of sled: `postgres://user:password@host/db` (see docs/operations.md).
    #[arg(long, env = "CASEFLOW_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
enum CasesCommand {
    /// List cases, newest first.
    List {
        #[arg(long)]
        state: Vec<String>,
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show one case with its observables and timeline.
    Show {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        json: bool,
    },
    /// Change a case as a person; the playbooks given see the same case events a
    /// playbook's change would cause.
    Update {
        id: String,
        /// New state (`new`, `in_progress`, `on_hold`, `resolved`, `closed`).
        #[arg(long)]
        state: Option<String>,
        /// Resolution reason (required to resolve or close).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        comment: Option<String>,
        /// Who makes the change (default: $USER).
        #[arg(long = "as")]
        actor: Option<String>,
        /// Playbooks whose case triggers fire.
        #[arg(long, num_args = 1..)]
        playbooks: Vec<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Check that every index entry points at a case that has it, and every case is indexed.
    Check {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Copy a sled store into an empty PostgreSQL database (moving a deployment over).
    Copy {
        /// The sled data dir to copy from (not changed).
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL URL to copy to (its schema must hold no cases, runs or events).
        #[arg(long, env = "CASEFLOW_DATABASE_URL", hide_env_values = true)]
        to: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GraphFormat {
    Mermaid,
    Dot,
}

/// Parse the process arguments and run the command.
///
/// `engine test` then shares this one registry between tests, so a step type that keeps
/// state (a cache) carries it from one test to the next; [`main_with`] avoids that.
pub fn main(registry: Registry) -> ExitCode {
    main_with(move || registry.clone(), Vec::new())
}

/// Like [`main`], with a function that builds a fresh registry (`engine test` gives each
/// test its own, so no step state leaks between tests) and hooks `engine serve` calls with
/// its engine before serving (the steps crate registers its notification retry this way:
/// the engine cannot depend on it).
pub fn main_with(
    make_registry: impl Fn() -> Registry,
    hooks: Vec<crate::serve::EngineHook>,
) -> ExitCode {
    main_with_commands(make_registry, hooks, Vec::new())
}

/// What runs an [`ExtraCommand`]: its parsed arguments and a fresh registry in, an exit
/// code or an error message out.
pub type ExtraRun = Box<dyn Fn(&clap::ArgMatches, Registry) -> Result<ExitCode, String>>;

/// A subcommand implemented outside the engine crate, listed by `engine --help` beside
/// the engine's own (the binary's `engine bench` runs the IAM playbooks with the built-in
/// steps, which the engine cannot depend on).
pub struct ExtraCommand {
    /// Its clap definition: name, about, arguments.
    pub command: clap::Command,
    /// Runs it with its parsed arguments and a fresh registry; `Err` prints `error: ...`
    /// and exits 1.
    pub run: ExtraRun,
}

/// Like [`main_with`], with extra subcommands.
pub fn main_with_commands(
    make_registry: impl Fn() -> Registry,
    hooks: Vec<crate::serve::EngineHook>,
    extra: Vec<ExtraCommand>,
) -> ExitCode {
    let mut command = Cli::command();
    for e in &extra {
        command = command.subcommand(e.command.clone());
    }
    let parsed = command.try_get_matches().and_then(|m| {
        if let Some((name, sub)) = m.subcommand() {
            if let Some(e) = extra.iter().find(|e| e.command.get_name() == name) {
                return Ok(Err((e, sub.clone())));
            }
        }
        Cli::from_arg_matches(&m).map(Ok)
    });
    let cli = match parsed {
        Ok(Ok(c)) => c,
        Ok(Err((e, matches))) => {
            init_tracing("warn");
            return finish((e.run)(&matches, make_registry()));
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // Tests fail steps on purpose; their report says what matters.
    init_tracing(if matches!(cli.command, Command::Test(_)) {
        "error"
    } else {
        "warn"
    });
    let result = match cli.command {
        Command::Test(args) => test::run(args, &make_registry),
        command => run(Cli { command }, make_registry(), hooks),
    };
    finish(result)
}

fn finish(result: Result<ExitCode, String>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Every problem the bundle's step types find in the config, printed; exit 1 if any.
fn check_config(
    registry: &Registry,
    bundle: &crate::compile::Bundle,
    config: &serde_json::Value,
    path: Option<&std::path::Path>,
) -> Result<(), ExitCode> {
    let problems = registry.check_config(bundle.step_types(), config);
    if problems.is_empty() {
        return Ok(());
    }
    let file = path.map_or_else(|| "config".to_string(), |p| p.display().to_string());
    for (step, message) in &problems {
        eprintln!("error: {file}: {message} (read by step type `{step}`)");
    }
    eprintln!(
        "{} problem(s) in the config; nothing was run",
        problems.len()
    );
    Err(ExitCode::from(1))
}

/// Without `--config`, the playbooks' own offline config: `data/config.yaml` beside the
/// first playbook path.
fn bundled_config(paths: &[PathBuf]) -> Option<PathBuf> {
    let first = paths.first()?;
    let dir = if first.is_dir() {
        first.clone()
    } else {
        first.parent()?.to_path_buf()
    };
    let candidate = dir.join("data").join("config.yaml");
    candidate.is_file().then_some(candidate)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Where a command keeps its state: PostgreSQL when a database URL is given (flag,
/// `CASEFLOW_DATABASE_URL`, or the config's `store.postgres.url`), else sled under the data
/// dir.
pub(crate) struct StoreLocation<'a> {
    pub(crate) data_dir: &'a std::path::Path,
    pub(crate) database_url: Option<&'a str>,
}

/// Open the store for a command that only reads: sled without the full verification read
/// (a damaged page still fails the read that meets it, and a store that lost data is still
/// refused by its witness file).
fn open_store(
    at: &StoreLocation<'_>,
    rt: &tokio::runtime::Runtime,
) -> Result<std::sync::Arc<dyn crate::persist::Store>, String> {
    open_store_with(
        at,
        &serde_json::json!({"store": {"verify_on_open": false}}),
        rt,
    )
}

/// Open (or create) the store with the options of a config file (`durability`, `store`).
/// A PostgreSQL store runs its background work (heartbeat, notifications) on `rt`.
fn open_store_with(
    at: &StoreLocation<'_>,
    config: &serde_json::Value,
    rt: &tokio::runtime::Runtime,
) -> Result<std::sync::Arc<dyn crate::persist::Store>, String> {
    let options = crate::persist::StoreOptions::from_config(config).map_err(|e| e.to_string())?;
    let dir = at.data_dir;
    if let Some(pg) = crate::persist::PgOptions::from_config(at.database_url, config)
        .map_err(|e| e.to_string())?
    {
        // Nothing lives under the data dir with PostgreSQL (the notification outbox files of
        // an older engine are imported from there by `open_outbox`).
        let store = rt
            .block_on(crate::persist::PgStore::open_with_options(&pg, options))
            .map_err(|e| e.to_string())?;
        return Ok(std::sync::Arc::new(store));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data dir `{}`: {e}", dir.display()))?;
    let store =
        crate::persist::SledStore::open_with_options(dir, options).map_err(|e| e.to_string())?;
    Ok(std::sync::Arc::new(store))
}

/// The notification outbox in `store`, with the outbox files an older engine left in
/// `data_dir` imported first (once: they are renamed to `*.imported`).
fn open_outbox(
    store: &std::sync::Arc<dyn crate::persist::Store>,
    data_dir: &std::path::Path,
    rt: &tokio::runtime::Runtime,
) -> Result<std::sync::Arc<crate::notify::Outbox>, String> {
    let outbox = crate::notify::Outbox::in_store(store.clone());
    rt.block_on(outbox.import_files(data_dir))
        .map_err(|e| e.to_string())?;
    Ok(std::sync::Arc::new(outbox))
}

/// Runs the SLA watcher once; what it did is reported like an event's runs.
fn sla_sweep(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    reports: &mut Vec<output::EventRuns>,
) -> Result<(), String> {
    let sweep = rt
        .block_on(engine.check_sla(crate::cases::Timestamp::now()))
        .map_err(|e| e.to_string())?;
    if !sweep.breached.is_empty() || !sweep.runs.is_empty() {
        let ids: Vec<String> = sweep.breached.iter().map(|c| c.to_string()).collect();
        reports.push(output::EventRuns {
            label: format!("SLA breached: {}", ids.join(", ")),
            event: serde_json::json!({"type": "case.sla_breached", "cases": ids}),
            runs: sweep.runs,
            duplicate: false,
        });
    }
    Ok(())
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CASEFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

pub(crate) fn print_diagnostics(diags: &[Diagnostic]) {
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

fn run(
    cli: Cli,
    registry: Registry,
    hooks: Vec<crate::serve::EngineHook>,
) -> Result<ExitCode, String> {
    match cli.command {
        Command::Test(args) => test::run(args, &|| registry.clone()),
        Command::Serve {
            paths,
            listen,
            store: StoreArgs {
                data_dir,
                database_url,
            },
            config,
            seed,
        } => serve::run(
            serve::ServeArgs {
                paths,
                listen,
                data_dir,
                database_url,
                config,
                seed,
            },
            registry,
            hooks,
        ),
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
        Command::Cases { command } => cases::run(command, registry),
        Command::Notifications {
            pending,
            limit,
            store: StoreArgs {
                data_dir,
                database_url,
            },
            json,
        } => notifications::run(notifications::Query {
            at: StoreLocation {
                data_dir: &data_dir,
                database_url: database_url.as_deref(),
            },
            pending,
            limit,
            json,
        }),
        Command::Store {
            command:
                StoreCommand::Check {
                    store:
                        StoreArgs {
                            data_dir,
                            database_url,
                        },
                },
        } => {
            let rt = runtime()?;
            let at = StoreLocation {
                data_dir: &data_dir,
                database_url: database_url.as_deref(),
            };
            let name = match database_url.as_deref() {
                Some(url) => crate::persist::postgres::config::redact(url),
                None => {
                    if !data_dir.exists() {
                        return Err(format!("no store at `{}`", data_dir.display()));
                    }
                    data_dir.display().to_string()
                }
            };
            let store = open_store(&at, &rt)?;
            let problems = rt.block_on(store.check()).map_err(|e| e.to_string())?;
            if problems.is_empty() {
                println!("ok: store at `{name}` is consistent");
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    println!("problem: {p}");
                }
                println!("{} problem(s) in `{name}`", problems.len());
                Ok(ExitCode::from(1))
            }
        }
        Command::Store {
            command: StoreCommand::Copy { from, to },
        } => {
            if !from.is_dir() {
                return Err(format!("no store at `{}`", from.display()));
            }
            let rt = runtime()?;
            let source = std::sync::Arc::new(
                crate::persist::SledStore::open(&from).map_err(|e| e.to_string())?,
            );
            // An outbox an older engine left in files beside the store goes along too.
            rt.block_on(crate::notify::Outbox::in_store(source.clone()).import_files(&from))
                .map_err(|e| e.to_string())?;
            let problems = rt
                .block_on(crate::persist::CaseRead::check(&*source))
                .map_err(|e| e.to_string())?;
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("problem: {p}");
                }
                return Err(format!(
                    "the store at `{}` has {} problem(s); nothing was copied (see `engine store check`)",
                    from.display(),
                    problems.len()
                ));
            }
            let target = rt
                .block_on(crate::persist::PgStore::open(
                    &crate::persist::PgOptions::new(to.clone()),
                ))
                .map_err(|e| e.to_string())?;
            let report = rt
                .block_on(crate::persist::postgres::copy_store(&source, &target))
                .map_err(|e| e.to_string())?;
            let problems = rt
                .block_on(crate::persist::CaseRead::check(&target))
                .map_err(|e| e.to_string())?;
            println!(
                "copied {report} from `{}` to `{}`",
                from.display(),
                target.label().display()
            );
            if problems.is_empty() {
                println!("ok: the copy is consistent");
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    println!("problem: {p}");
                }
                Ok(ExitCode::from(1))
            }
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
            store: StoreArgs {
                data_dir,
                database_url,
            },
            config,
            seed,
            json,
        } => {
            let bundle = match load(&paths, &registry) {
                Ok(b) => b,
                Err(code) => return Ok(code),
            };
            let config = config.or_else(|| bundled_config(&paths));
            let config_path = config;
            let config = crate::config::load(config_path.as_deref()).map_err(|e| e.to_string())?;
            if let Err(code) = check_config(&registry, &bundle, &config, config_path.as_deref()) {
                return Ok(code);
            }
            let events = if event.is_empty() {
                events::samples(&paths)?
            } else {
                let mut all = Vec::new();
                for f in &event {
                    all.extend(events::read(f)?);
                }
                all
            };
            let rt = runtime()?;
            let at = StoreLocation {
                data_dir: &data_dir,
                database_url: database_url.as_deref(),
            };
            let store = open_store_with(&at, &config, &rt)?;
            let outbox = open_outbox(&store, &data_dir, &rt)?;
            let mut services = Services::new()
                .with_config(config)
                .with_store(store.clone());
            services.insert(outbox.clone());
            services.seed = seed;
            let engine = Engine::new(bundle, services);
            let started = crate::cases::Timestamp::now();
            let mut reports = Vec::new();
            // Runs an earlier process left unfinished (a crash, a stop), and what it queued,
            // before anything new.
            let resumed = rt.block_on(engine.resume()).map_err(|e| e.to_string())?;
            if !resumed.is_empty() {
                reports.push(output::EventRuns {
                    label: "resumed after a restart".into(),
                    event: serde_json::json!({"type": "resume"}),
                    runs: resumed,
                    duplicate: false,
                });
            }
            // Deadlines that passed while the engine was stopped, before anything new.
            sla_sweep(&rt, &engine, &mut reports)?;
            let mut duplicates = 0usize;
            for (label, ev) in events {
                let key = crate::schedule::dedup_key(&source, &ev);
                let handled = rt
                    .block_on(engine.handle_once(&source, ev.clone(), key.as_deref()))
                    .map_err(|e| e.to_string())?;
                if handled.duplicate {
                    duplicates += 1;
                }
                reports.push(output::EventRuns {
                    label,
                    event: ev,
                    runs: handled.runs,
                    duplicate: handled.duplicate,
                });
            }
            sla_sweep(&rt, &engine, &mut reports)?;
            let cases = rt
                .block_on(cases::changed_since(store.as_ref(), started))
                .map_err(|e| e.to_string())?;
            if json {
                output::run_json(&reports, &cases, &outbox.sent(), duplicates);
            } else {
                output::run_summary(&reports, &cases, &outbox.sent());
                if duplicates > 0 && duplicates == reports.len() {
                    // A second `engine run` on the same events looks like it did nothing.
                    eprintln!(
                        "note: every event was already received by the store in {} (the same \
                         event never runs twice); `engine cases list --data-dir {0}` shows \
                         their cases, another `--data-dir` runs them afresh",
                        data_dir.display()
                    );
                }
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
