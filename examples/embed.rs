//! Embedding Caseflow: run the IAM playbooks in-process, with the in-memory store.
//!
//! `cargo run --example embed` (from the repository root). The program loads
//! `playbooks/iam.yaml` with the built-in steps, feeds it one sample Okta event, and prints
//! the runs, the resulting case and the notifications. Nothing is written to disk.

use std::path::Path;
use std::sync::Arc;

use caseflow::engine::notify::Outbox;
use caseflow::engine::persist::{CaseQuery, MemoryStore, Store};
use caseflow::engine::{self, Engine, Services};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = caseflow::builtin_registry();
    let bundle = engine::load_paths(&["playbooks/iam.yaml".into()], &registry)
        .map_err(|diags| diags.iter().map(|d| d.to_string()).collect::<String>())?;
    let config = engine::config::load(Some(Path::new("playbooks/data/config.yaml")))?;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let outbox = Arc::new(Outbox::in_memory());
    let mut services = Services::new()
        .with_config(config)
        .with_store(store.clone())
        .with_seed(42);
    services.insert(outbox.clone());
    let engine = Engine::new(bundle, services);

    let event: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        "playbooks/samples/02-vip-malicious-ip.json",
    )?)?;
    // Runs iam-preprocess, then the playbooks its case events trigger, until all are done.
    let runs = engine.handle("okta", event).await?;
    for run in &runs {
        println!(
            "{} {:?} ({} steps)",
            run.playbook,
            run.status,
            run.steps.len()
        );
    }
    for case in store.query(&CaseQuery::default()).await? {
        println!(
            "{} {} {} assignee={}",
            case.id,
            case.severity.as_str(),
            case.state.as_str(),
            case.assignee.as_deref().unwrap_or("-")
        );
    }
    for n in outbox.sent() {
        println!("notify {}: {}", n.to.join(", "), n.subject);
    }
    Ok(())
}
