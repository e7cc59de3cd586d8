//! `GET /metrics`: Prometheus text format 0.0.4 (`prometheus-client`).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `caseflow_events_received_total` | counter | `source`, `via` (`hook`, `poll`, `api`) | events acknowledged (duplicates included) |
//! | `caseflow_events_duplicate_total` | counter | `source`, `via` | of those, already seen (same `uuid`): not run again |
//! | `caseflow_events_rejected_total` | counter | `source`, `reason` (`unauthorized`, `malformed`, `too_large`, `bad_source`, `bad_query`, `unreadable`) | requests refused |
//! | `caseflow_inbox_depth` | gauge | | events acknowledged and not yet taken by the worker |
//! | `caseflow_runs_total` | counter | `playbook`, `status` | finished runs |
//! | `caseflow_step_duration_seconds` | histogram | `uses` | duration of finished steps, by step type |
//! | `caseflow_open_cases` | gauge | `severity` | cases in `new`, `in_progress` or `on_hold` |
//! | `caseflow_notifications_pending` | gauge | | (notification, network channel) pairs not yet delivered or rejected |
//! | `caseflow_notification_deliveries` | gauge | `status` (`delivered`, `failed`, `rejected`) | latest delivery state per (notification, channel) |
//! | `caseflow_okta_poll_errors_total` | counter | | System Log polls that failed |
//! | `caseflow_store_commits_total` | counter | | store writes committed, each a transaction or a single key (sled) |
//! | `caseflow_store_flushes_total` | counter | | flushes to disk (sled; concurrent writers share one, so far fewer than commits under load) |
//! | `caseflow_store_flush_seconds_total` | counter | | time spent in those flushes |
//!
//! Counters are kept in memory since the process started (Prometheus handles resets);
//! gauges, and the store's counters, are read from the store and the outbox at scrape time.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::app::AppState;
use super::error::ApiError;
use crate::cases::{CaseState, Severity};
use crate::notify::{DeliveryStatus, Outbox, LOCAL_CHANNELS};
use crate::persist::{CaseQuery, StoreStats};
use crate::report::RunReport;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Step durations from 0.5 ms to 60 s.
const STEP_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

fn step_histogram() -> Histogram {
    Histogram::new(STEP_BUCKETS)
}

/// The server's metrics; see the module docs for names.
pub struct Metrics {
    registry: Registry,
    received: Family<Labels, Counter>,
    duplicates: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    inbox_depth: Gauge,
    runs: Family<Labels, Counter>,
    steps: Family<Labels, Histogram, fn() -> Histogram>,
    open_cases: Family<Labels, Gauge>,
    notifications_pending: Gauge,
    notification_deliveries: Family<Labels, Gauge>,
    poll_errors: Counter,
    store_commits: Counter,
    store_flushes: Counter,
    store_flush_seconds: Counter<f64, AtomicU64>,
    /// Held while the store counters catch up, so two scrapes cannot both add the same
    /// difference.
    store_catch_up: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            received: Family::default(),
            duplicates: Family::default(),
            rejected: Family::default(),
            inbox_depth: Gauge::default(),
            runs: Family::default(),
            steps: Family::new_with_constructor(step_histogram as fn() -> Histogram),
            open_cases: Family::default(),
            notifications_pending: Gauge::default(),
            notification_deliveries: Family::default(),
            poll_errors: Counter::default(),
            store_commits: Counter::default(),
            store_flushes: Counter::default(),
            store_flush_seconds: Counter::default(),
            store_catch_up: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "caseflow_events_received",
            "Events acknowledged, duplicates included",
            m.received.clone(),
        );
        registry.register(
            "caseflow_events_duplicate",
            "Events acknowledged as duplicates (uuid seen before), not run again",
            m.duplicates.clone(),
        );
        registry.register(
            "caseflow_events_rejected",
            "Requests refused: wrong secret, malformed body, too large",
            m.rejected.clone(),
        );
        registry.register(
            "caseflow_inbox_depth",
            "Events acknowledged and not yet taken by the worker",
            m.inbox_depth.clone(),
        );
        registry.register(
            "caseflow_runs",
            "Finished runs by playbook and status",
            m.runs.clone(),
        );
        registry.register(
            "caseflow_step_duration_seconds",
            "Duration of finished steps by step type",
            m.steps.clone(),
        );
        registry.register(
            "caseflow_open_cases",
            "Open cases (new, in_progress, on_hold) by severity",
            m.open_cases.clone(),
        );
        registry.register(
            "caseflow_notifications_pending",
            "Notifications owed to a network channel",
            m.notifications_pending.clone(),
        );
        registry.register(
            "caseflow_notification_deliveries",
            "Latest delivery state per notification and channel",
            m.notification_deliveries.clone(),
        );
        registry.register(
            "caseflow_okta_poll_errors",
            "System Log polls that failed",
            m.poll_errors.clone(),
        );
        registry.register(
            "caseflow_store_commits",
            "Store writes committed (a transaction or a single key)",
            m.store_commits.clone(),
        );
        registry.register(
            "caseflow_store_flushes",
            "Store flushes to disk; concurrent writers share one",
            m.store_flushes.clone(),
        );
        registry.register(
            "caseflow_store_flush_seconds",
            "Time spent in store flushes",
            m.store_flush_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// `n` events from `source` acknowledged, `duplicates` of them seen before.
    pub fn received(&self, source: &str, via: &str, n: u64, duplicates: u64) {
        let l = labels(&[("source", source), ("via", via)]);
        self.received.get_or_create(&l).inc_by(n);
        self.duplicates.get_or_create(&l).inc_by(duplicates);
    }

    /// A request refused.
    pub fn rejected(&self, source: &str, reason: &str) {
        self.rejected
            .get_or_create(&labels(&[("source", source), ("reason", reason)]))
            .inc();
    }

    pub fn poll_failed(&self) {
        self.poll_errors.inc();
    }

    /// A finished run: its status and its steps' durations.
    pub fn run_finished(&self, r: &RunReport) {
        let status = serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        self.runs
            .get_or_create(&labels(&[("playbook", &r.playbook), ("status", &status)]))
            .inc();
        for s in &r.steps {
            // Skipped steps never ran; their zero would drag the histogram down.
            if s.attempts > 0 {
                self.steps
                    .get_or_create(&labels(&[("uses", &s.uses)]))
                    .observe(s.duration_ms / 1000.0);
            }
        }
    }

    /// Read the gauges from the store and the outbox, then encode everything.
    pub async fn render(&self, state: &AppState) -> Result<String, ApiError> {
        let depth = state
            .store
            .inbox_depth()
            .await
            .map_err(|e| ApiError::internal("could not read the inbox depth", e))?;
        self.inbox_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        let store = &state.store;
        let open: Vec<CaseState> = CaseState::ALL
            .iter()
            .copied()
            .filter(|s| s.is_open())
            .collect();
        for sev in Severity::ALL {
            let q = CaseQuery {
                states: open.clone(),
                severity: Some(*sev),
                ..CaseQuery::all()
            };
            let n = store.count(&q).await?;
            self.open_cases
                .get_or_create(&labels(&[("severity", sev.as_str())]))
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(stats) = store.write_stats() {
            self.read_store_stats(stats);
        }
        if let Some(outbox) = state.engine.services().get::<Outbox>() {
            self.read_outbox(&outbox).await;
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)
            .map_err(|e| ApiError::internal("could not encode the metrics", e))?;
        Ok(text)
    }

    /// The store counts since it was opened; the counters follow (they only grow).
    fn read_store_stats(&self, stats: StoreStats) {
        let _one_at_a_time = self
            .store_catch_up
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.store_commits
            .inc_by(stats.commits.saturating_sub(self.store_commits.get()));
        self.store_flushes
            .inc_by(stats.flushes.saturating_sub(self.store_flushes.get()));
        let seconds = stats.flush_micros as f64 / 1e6;
        let seen = self.store_flush_seconds.get();
        if seconds > seen {
            self.store_flush_seconds.inc_by(seconds - seen);
        }
    }

    async fn read_outbox(&self, outbox: &Outbox) {
        // `console` and `outbox` are done once the notification is written; the other
        // channels are delivered over the network and may be owed.
        match outbox.pending(|c| !LOCAL_CHANNELS.contains(&c)).await {
            Ok(p) => {
                self.notifications_pending
                    .set(i64::try_from(p.len()).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the notification outbox"),
        }
        match outbox.counts().await {
            Ok(counts) => {
                for status in [
                    DeliveryStatus::Delivered,
                    DeliveryStatus::Failed,
                    DeliveryStatus::Rejected,
                ] {
                    let name = match status {
                        DeliveryStatus::Delivered => "delivered",
                        DeliveryStatus::Failed => "failed",
                        DeliveryStatus::Rejected => "rejected",
                    };
                    self.notification_deliveries
                        .get_or_create(&labels(&[("status", name)]))
                        .set(i64::try_from(counts.get(status)).unwrap_or(i64::MAX));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the notification deliveries"),
        }
    }
}

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics.render(&state).await?;
    Ok(([(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response())
}

/// Count every finished run until `stop`.
pub async fn follow_runs(
    metrics: Arc<Metrics>,
    mut runs: broadcast::Receiver<Arc<RunReport>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = runs.recv() => match r {
                Ok(report) => metrics.run_finished(&report),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "metrics fell behind the finished runs; counts are low by that much");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
