//! `engine notifications`: what the notification outbox holds, newest first, with where
//! each one stands on its network channels (delivered, owed, failed, rejected), so a person
//! can see what Slack or the webhook did not get without reading the store.

use std::collections::HashMap;
use std::process::ExitCode;

use serde_json::json;

use super::{open_outbox, open_store, runtime, StoreLocation};
use crate::notify::{Delivery, DeliveryStatus, Notification, LOCAL_CHANNELS};

/// What `engine notifications` was asked.
pub struct Query<'a> {
    pub at: StoreLocation<'a>,
    /// Only notifications still owed on some channel.
    pub pending: bool,
    pub limit: usize,
    pub json: bool,
}

/// Where one notification stands on one network channel.
fn standing(d: Option<&Delivery>) -> String {
    match d {
        None => "owed, not tried yet".into(),
        Some(d) => {
            let what = match d.status {
                DeliveryStatus::Delivered => "delivered",
                DeliveryStatus::Failed => "failed, will be retried",
                DeliveryStatus::Rejected => "rejected, not retried",
            };
            let mut s = format!("{what} ({} attempt(s), {})", d.attempts, d.at);
            if let Some(e) = &d.error {
                s.push_str(": ");
                s.push_str(e);
            }
            s
        }
    }
}

fn owed(n: &Notification, deliveries: &HashMap<(&str, &str), &Delivery>) -> bool {
    network_channels(n).any(|c| {
        !deliveries.get(&(n.id.as_str(), c)).is_some_and(|d| {
            matches!(
                d.status,
                DeliveryStatus::Delivered | DeliveryStatus::Rejected
            )
        })
    })
}

fn network_channels(n: &Notification) -> impl Iterator<Item = &str> {
    n.channels
        .iter()
        .map(String::as_str)
        .filter(|c| !LOCAL_CHANNELS.contains(c))
}

pub fn run(q: Query<'_>) -> Result<ExitCode, String> {
    let rt = runtime()?;
    let store = open_store(&q.at, &rt)?;
    // A data dir an older engine wrote still has its outbox in files: taken in first.
    let outbox = open_outbox(&store, q.at.data_dir, &rt)?;
    let (all, records) = rt
        .block_on(async {
            let all = outbox.notifications().await?;
            let records = outbox.deliveries().await?;
            Ok::<_, crate::persist::StoreError>((all, records))
        })
        .map_err(|e| e.to_string())?;
    let by_key: HashMap<(&str, &str), &Delivery> = records
        .iter()
        .map(|d| ((d.id.as_str(), d.channel.as_str()), d))
        .collect();
    let shown: Vec<&Notification> = all
        .iter()
        .rev()
        .filter(|n| !q.pending || owed(n, &by_key))
        .take(q.limit.max(1))
        .collect();
    if q.json {
        let items: Vec<_> = shown
            .iter()
            .map(|n| {
                let channels: serde_json::Map<String, serde_json::Value> = network_channels(n)
                    .map(|c| {
                        let d = by_key.get(&(n.id.as_str(), c)).copied();
                        (c.to_string(), json!(d))
                    })
                    .collect();
                json!({"notification": n, "deliveries": channels, "owed": owed(n, &by_key)})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"count": items.len(), "notifications": items}))
                .unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if shown.is_empty() {
        println!(
            "{}",
            if q.pending {
                "nothing owed"
            } else {
                "no notifications"
            }
        );
    }
    for n in &shown {
        let case = n.case.as_deref().unwrap_or("-");
        println!("{}  {case}  {}", n.at, n.subject);
        println!(
            "    to {}  (run {} {}/{})",
            n.to.join(", "),
            n.run_id,
            n.playbook,
            n.step
        );
        for c in network_channels(n) {
            println!(
                "    {c}: {}",
                standing(by_key.get(&(n.id.as_str(), c)).copied())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
