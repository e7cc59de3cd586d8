//! `engine bench`: the reference workload of DESIGN §8 on the machine it runs on.
//!
//! Every scenario runs against stand-ins for Okta, the intel providers and Slack served by
//! real HTTP servers on 127.0.0.1 inside this process ([`standins`]), with state on disk in
//! a temporary directory. The scenarios that go through HTTP start the engine as a child
//! `engine serve` (this same binary) on that state, so its RSS and CPU are the server's
//! alone; the load generator ([`client`]) and the stand-ins stay in this process.
//!
//! - `ingest`: Okta event-hook deliveries to `/hooks/okta`, acknowledged durably (strict
//!   durability, group commit), by events no playbook takes (acknowledging alone).
//! - `iam`: full IAM chains, from the delivery to the assigned case: pre-processing (Okta
//!   groups), case created, enrichment (AbuseIPDB, VirusTotal, GreyNoise), severity and
//!   state changed, assignment, Slack notification.
//! - `steps`: the engine's own cost per step, on a 50-step chain of no-op steps (no I/O).
//! - `growth`: `cases.query` by observable and a full IAM chain at 10k and 1M stored cases
//!   (sizes from `--cases`), and the server's memory on the larger store.
//!
//! Progress goes to stderr; the figures to stdout (a table, or one JSON object per
//! scenario with `--json`).

mod client;
mod growth;
mod iam;
mod ingest;
mod served;
mod standins;
mod steps;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use clap::{Args, FromArgMatches, ValueEnum};
use serde_json::{json, Map, Value};

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Ingest,
    Iam,
    Steps,
    Growth,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Ingest => "ingest",
            Scenario::Iam => "iam",
            Scenario::Steps => "steps",
            Scenario::Growth => "growth",
        }
    }
}

/// `engine bench` arguments.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenarios to run (repeat or comma-separate); all of them by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Events per scenario (ingest: events; iam and growth: chains; steps: runs of 50
    /// steps). Default: ingest 20000, iam 2000, steps 2000, growth 200 per size.
    #[arg(long)]
    pub events: Option<u64>,
    /// Requests (ingest), chains (iam, growth) or runs (steps) in flight. Default: ingest
    /// 64, iam 64, steps 8, growth 16.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Events per Okta delivery in `ingest` (Okta batches events in one POST).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Store sizes for `growth` (comma-separated, e.g. `10000,1000000`).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 1_000_000])]
    pub cases: Vec<u64>,
    /// `store.cache_mb` for the engine (sled's page cache); default the engine's (64 MiB).
    #[arg(long)]
    pub cache_mb: Option<u64>,
    /// `store.verify_on_open: false` for the engine (it reads every record at start-up
    /// otherwise: seconds at 1M cases).
    #[arg(long)]
    pub no_verify: bool,
    /// Where the temporary state directory goes (default: the system's temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print one JSON object per scenario instead of a table.
    #[arg(long)]
    pub json: bool,
    /// `growth`: keep the stored cases in this directory and reuse them on the next run
    /// (loading 1M cases takes minutes), e.g. to compare `--cache-mb` settings.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Keep the state directories (to look at the store afterwards, e.g. with
    /// `engine serve` and `/api/runs`).
    #[arg(long)]
    pub keep: bool,
}

/// The `engine bench` subcommand for [`engine::cli::main_with_commands`].
pub fn command() -> engine::cli::ExtraCommand {
    // `augment_args` takes the struct's doc comment as `about`: set it afterwards.
    let command = BenchArgs::augment_args(clap::Command::new("bench"))
        .about("Measure Caseflow on this machine: ingest, IAM chains, step overhead, store growth");
    engine::cli::ExtraCommand {
        command,
        run: Box::new(|matches, registry| {
            let args = BenchArgs::from_arg_matches(matches).map_err(|e| e.to_string())?;
            run(args, registry)
        }),
    }
}

/// What one scenario measured.
pub struct Outcome {
    pub scenario: &'static str,
    /// Events (ingest), chains (iam, growth), runs (steps).
    pub events: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub peak_rss_mb: f64,
    /// Scenario-specific figures.
    pub extra: Map<String, Value>,
}

impl Outcome {
    fn json(&self) -> Value {
        let mut v = json!({
            "scenario": self.scenario,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events as f64 / self.seconds.max(1e-9), 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        });
        if let Value::Object(m) = &mut v {
            for (k, x) in &self.extra {
                m.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Progress on stderr.
macro_rules! progress {
    ($($t:tt)*) => {{
        eprintln!("bench: {}", format!($($t)*));
    }};
}
pub(crate) use progress;

/// Latencies, sorted for percentiles.
#[derive(Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The `q` quantile (0..1) in milliseconds, nearest rank.
    pub fn ms(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1].as_secs_f64() * 1000.0
    }
    pub fn mean_ms(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / self.0.len() as f64
    }
}

/// `VmHWM` (peak) and `VmRSS` of a process in MiB, from `/proc` (0 where there is none).
pub fn rss_mb(pid: Option<u32>) -> (f64, f64) {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// CPU seconds (user + system) a process has used, from `/proc` (0 where there is none).
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux this runs on (getconf CLK_TCK).
    100.0
}

/// The one-line description of the machine for the report.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "load_1m": load,
    })
}

fn run(args: BenchArgs, registry: engine::Registry) -> Result<ExitCode, String> {
    let scenarios = if args.scenario.is_empty() {
        vec![
            Scenario::Ingest,
            Scenario::Iam,
            Scenario::Steps,
            Scenario::Growth,
        ]
    } else {
        let mut s = args.scenario.clone();
        s.dedup();
        s
    };
    if args.batch == 0 {
        return Err("`--batch` must be at least 1".into());
    }
    if args.concurrency == Some(0) {
        return Err("`--concurrency` must be at least 1".into());
    }
    if args.events == Some(0) {
        return Err("`--events` must be at least 1".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let machine = machine();
    progress!(
        "{} core(s), {}, load average {}",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["load_1m"].as_str().unwrap_or("?")
    );
    let mut failed = false;
    for scenario in scenarios {
        let parent = match &args.dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| format!("cannot create `{}`: {e}", d.display()))?;
                d.clone()
            }
            None => std::env::temp_dir(),
        };
        let mut tmp = tempfile_dir(&parent, scenario.name())?;
        tmp.1 = args.keep;
        progress!("{}: state in {}", scenario.name(), tmp.path().display());
        let ctx = Ctx {
            args: &args,
            exe: exe.clone(),
            dir: tmp.path().to_path_buf(),
        };
        let outcome = rt.block_on(async {
            match scenario {
                Scenario::Ingest => ingest::run(&ctx).await,
                Scenario::Iam => iam::run(&ctx).await,
                Scenario::Steps => steps::run(&ctx, registry.clone()).await,
                Scenario::Growth => growth::run(&ctx).await,
            }
        });
        match outcome {
            Ok(o) => {
                let v = o.json();
                if args.json {
                    println!("{v}");
                } else {
                    print_summary(&v);
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", scenario.name());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A temporary directory, removed when dropped unless it is to be kept.
pub struct TempDir(PathBuf, bool);

impl TempDir {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.1 {
            eprintln!("bench: kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn tempfile_dir(parent: &std::path::Path, name: &str) -> Result<TempDir, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = parent.join(format!(
        "caseflow-bench-{name}-{}-{:x}",
        std::process::id(),
        stamp & 0xffff_ffff
    ));
    std::fs::create_dir_all(&path)
        .map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
    Ok(TempDir(path, false))
}

/// What a scenario gets.
pub struct Ctx<'a> {
    pub args: &'a BenchArgs,
    /// This binary, started as `engine serve`.
    pub exe: PathBuf,
    /// The scenario's temporary directory.
    pub dir: PathBuf,
}

impl Ctx<'_> {
    pub fn events(&self, default: u64) -> u64 {
        self.args.events.unwrap_or(default)
    }
    pub fn concurrency(&self, default: usize) -> usize {
        self.args.concurrency.unwrap_or(default)
    }
    /// A tag that makes this run's event ids and logins unique.
    pub fn tag(&self) -> String {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        format!("{:x}", stamp & 0xff_ffff_ffff)
    }
}

fn print_summary(v: &Value) {
    let name = v["scenario"].as_str().unwrap_or("?");
    let mut line = format!(
        "{name:>7}: {} in {} s = {} /s; p50 {} ms, p99 {} ms; peak RSS {} MB",
        v["events"], v["seconds"], v["events_per_s"], v["p50_ms"], v["p99_ms"], v["peak_rss_mb"]
    );
    if let Value::Object(m) = v {
        let standard = [
            "scenario",
            "events",
            "seconds",
            "events_per_s",
            "p50_ms",
            "p99_ms",
            "peak_rss_mb",
        ];
        for (k, x) in m.iter().filter(|(k, _)| !standard.contains(&k.as_str())) {
            line.push_str(&format!("\n         {k}: {x}"));
        }
    }
    println!("{line}");
}
