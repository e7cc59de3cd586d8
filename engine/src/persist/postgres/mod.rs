//! `PgStore`: the case store in PostgreSQL, for deployments where several engine
//! processes share one database.
//!
//! It implements the same traits with the same semantics as [`super::SledStore`]; what
//! sled keeps in trees lives in tables (see `migrations/`), and what sled does under its
//! process-local writer lock is done with row locks in one transaction:
//!
//! | what | sled | PostgreSQL |
//! |------|------|------------|
//! | a case and its indexes | `caseid_case` + index trees | `cases` row (indexed columns) + `case_observables`, `case_tags`, `case_timeline` |
//! | case numbers | `meta.next_case_id` | `caseflow_counters` row, locked by each create (no gaps) |
//! | case-event outbox | `eventid_caseevent` | `case_events` (+ `case_event_deliveries`), inserted in the case's transaction |
//! | idempotency per (run, step) | `idempotency_result` | `idempotency`, under a transaction advisory lock on the key |
//! | inbox | `eventkey_receivedat`, `inboxseq_event` | `incoming_keys` (the key is the primary key), `inbox` |
//! | run journal | `runid_run`, `runstep_result`, `unfinished_runid` | `runs` (`unfinished`, `owner`), `run_steps` |
//! | cursors | `cursor_value` | `cursors` |
//! | expiring cache | `cache_entry`, `cache_expiry` | `cache_entries` (indexed by expiry; written without waiting for the WAL) |
//! | notification outbox | `notifyid_seq`, `notifyseq_notification`, `notifychannel_delivery`, `notifyowed_empty` | `notifications`, `notification_channels` (owed, settled, latest record, `claimed_by`) |
//!
//! Data flow between processes ([`liveness`]): each process registers in
//! `engine_processes`, holds a session advisory lock while it lives, refreshes a heartbeat
//! and removes processes that lost their lock (they died: the lock goes with the
//! connection) or whose heartbeat is older than the lease. Work is claimed, not just read:
//! [`super::Inbox::pending_incoming`] and [`super::CaseRead::pending_events`] mark the rows
//! they return with this process (`FOR UPDATE SKIP LOCKED`, so two processes never get the
//! same row) and skip rows claimed by a live process; runs belong to the process that
//! started them, and [`super::Runs::take_over_runs`] hands runs of a removed process to a
//! live one. Journal writes check, in their transaction, that this process is still
//! registered (`FOR KEY SHARE` on its row), so a process declared dead cannot write over
//! the journal of a run another process took over. Concurrency keys are rows in
//! `concurrency_keys` ([`super::Runs::acquire_key`]). Commits send `NOTIFY caseflow`, which
//! wakes the other processes' workers ([`super::Inbox::wake_signal`]).
//!
//! Durability: a commit is durable when it returns (PostgreSQL's `synchronous_commit`);
//! [`super::Durability::Relaxed`] turns `synchronous_commit` off for the session and
//! [`super::CaseWrite::flush`] then waits for the WAL.

mod cache;
mod cases;
mod check;
pub mod config;
mod copy;
mod inbox;
mod liveness;
pub(crate) mod migrate;
mod notifications;
mod runs;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::Notify;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use config::PgOptions;
pub use copy::{copy_store, CopyReport};

use super::{Durability, StoreError, StoreOptions};
use liveness::Liveness;

/// The case store in a PostgreSQL database; see the module docs.
pub struct PgStore {
    pool: Pool,
    /// The redacted URL and schema, as errors name the store.
    label: PathBuf,
    schema: String,
    durability: Durability,
    me: Arc<Liveness>,
    /// Concurrent `enqueue_incoming` calls of this process, written in one transaction.
    ingest: super::combine::Combiner<Vec<super::NewIncoming>, Vec<super::Enqueued>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("store", &self.label)
            .field("process", &self.me.id)
            .finish()
    }
}

/// Text shown for a driver error: the server's message when there is one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(c) = source {
        s.push_str(&format!(": {c}"));
        source = c.source();
    }
    s
}

fn tls_connector(options: &PgOptions) -> Result<MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &options.ca_file {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| {
            format!(
                "cannot read `store.postgres.ca_file` `{}`: {e}",
                path.display()
            )
        })?;
        let mut n = 0;
        for c in certs {
            let c = c.map_err(|e| format!("`{}`: {e}", path.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("`{}`: {e}", path.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("`{}` holds no PEM certificate", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// True when every host of the config is a unix socket or a loopback address.
fn local_only(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    })
}

/// What the store connects with: the driver config (search_path set), the TLS
/// connector, and the schema.
pub(crate) struct Target {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
    pub(crate) schema: String,
    pub(crate) label: PathBuf,
}

impl Target {
    pub(crate) fn new(options: &PgOptions, durability: Durability) -> Result<Self, StoreError> {
        let display = options.display_url();
        let fail = |detail: String| StoreError::Backend {
            path: PathBuf::from(&display),
            detail,
        };
        let parsed = config::split_url(&options.url)
            .map_err(|e| fail(format!("the database URL is {e}")))?;
        let mut pg = tokio_postgres::Config::from_str(&parsed.driver)
            // The driver's message quotes no part of the URL.
            .map_err(|e| fail(format!("the database URL is not valid: {e}")))?;
        let schema = match (&options.schema, parsed.schema) {
            (Some(s), _) => config::valid_schema(s).map_err(fail)?,
            (None, Some(s)) => s,
            (None, None) => "public".to_string(),
        };
        if !parsed.sslmode_given {
            // Without `sslmode`: plain on loopback and unix sockets, verified TLS elsewhere
            // (the driver's default, `prefer`, would fall back to plain text silently).
            pg.ssl_mode(if local_only(&pg) {
                tokio_postgres::config::SslMode::Disable
            } else {
                tokio_postgres::config::SslMode::Require
            });
        }
        let mut opts = pg.get_options().unwrap_or_default().to_string();
        opts.push_str(&format!(" -c search_path={schema}"));
        if durability == Durability::Relaxed {
            opts.push_str(" -c synchronous_commit=off");
        }
        pg.options(opts.trim());
        if pg.get_application_name().is_none() {
            pg.application_name("caseflow");
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(std::time::Duration::from_secs(10));
        }
        let tls = tls_connector(options).map_err(fail)?;
        Ok(Target {
            config: pg,
            tls,
            label: PathBuf::from(format!("{display} (schema {schema})")),
            schema,
        })
    }

    /// A connection outside the pool, with its driver task spawned.
    pub(crate) async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "database connection closed");
            }
        });
        Ok(client)
    }
}

impl PgStore {
    /// Connects, migrates the schema to the version this engine writes, and registers this
    /// process. Must be called inside a tokio runtime, which then runs the store's
    /// background work (heartbeat, notifications) for as long as the store lives.
    pub async fn open(options: &PgOptions) -> Result<Self, StoreError> {
        Self::open_with_options(options, StoreOptions::default()).await
    }

    /// [`PgStore::open`] with the durability of `store_options` (the sled-only settings
    /// are ignored).
    pub async fn open_with_options(
        options: &PgOptions,
        store_options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let target = Target::new(options, store_options.durability)?;
        let label = target.label.clone();
        let backend = |detail: String| StoreError::Backend {
            path: label.clone(),
            detail,
        };
        let mut admin = target.connect().await.map_err(|e| {
            backend(format!(
                "cannot connect: {} (is PostgreSQL running and the URL right?)",
                describe(&e)
            ))
        })?;
        match migrate::run(&mut admin, &target.schema).await {
            Ok(applied) if !applied.is_empty() => {
                tracing::info!(store = %label.display(), versions = ?applied, "database schema migrated")
            }
            Ok(_) => {}
            Err(migrate::MigrateError::Db(e)) => {
                return Err(backend(format!(
                    "cannot migrate the schema: {}",
                    describe(&e)
                )))
            }
            Err(migrate::MigrateError::Refused(detail)) => {
                return Err(StoreError::Corrupt {
                    path: label.clone(),
                    detail,
                })
            }
        }
        drop(admin);
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .build()
            .map_err(|e| backend(format!("cannot build the connection pool: {e}")))?;
        let me = Liveness::start(&target, options.lease)
            .await
            .map_err(|e| backend(format!("cannot register this process: {e}")))?;
        Ok(PgStore {
            pool,
            label,
            schema: target.schema,
            durability: store_options.durability,
            me,
            ingest: Default::default(),
        })
    }

    /// The redacted URL and schema, as messages name this store.
    pub fn label(&self) -> &std::path::Path {
        &self.label
    }

    /// This process's id in `engine_processes`.
    pub fn process_id(&self) -> &str {
        &self.me.id
    }

    /// The signal the store's notifications wake.
    pub(crate) fn work_signal(&self) -> Arc<Notify> {
        self.me.work.clone()
    }

    fn backend(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Backend {
            path: self.label.clone(),
            detail: detail.to_string(),
        }
    }

    fn db(&self, e: tokio_postgres::Error) -> StoreError {
        self.backend(describe(&e))
    }

    fn corrupt(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.label.clone(),
            detail: format!("{detail}; run `engine store check`"),
        }
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        use deadpool_postgres::PoolError;
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => self.backend(format!(
                "cannot connect: {} (is PostgreSQL running?)",
                describe(&e)
            )),
            other => self.backend(format!("no database connection: {other}")),
        })
    }

    /// Fails when another process declared this one dead (it removed its row): from then
    /// on its claims belong to others, and journal writes must not happen. The row stays
    /// locked (`FOR KEY SHARE`) until the transaction ends, so it cannot be removed while a
    /// write is under way.
    async fn fence(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
        let stmt = tx
            .prepare_cached("SELECT 1 FROM engine_processes WHERE id = $1 FOR KEY SHARE")
            .await
            .map_err(|e| self.db(e))?;
        let rows = tx
            .query(&stmt, &[&self.me.id])
            .await
            .map_err(|e| self.db(e))?;
        if rows.is_empty() {
            self.me.set_fenced();
            return Err(self.backend(format!(
                "this process (`{}`) was declared dead by another engine process (no heartbeat within the lease); its work was taken over: restart it",
                self.me.id
            )));
        }
        Ok(())
    }

    /// Fails once this process knows it was declared dead: it must not claim work.
    fn refuse_if_fenced(&self) -> Result<(), StoreError> {
        if self.me.is_fenced() {
            return Err(self.backend(format!(
                "this process (`{}`) was declared dead by another engine process; restart it",
                self.me.id
            )));
        }
        Ok(())
    }

    /// Wakes the other processes' workers when the transaction commits.
    async fn notify(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        what: &str,
    ) -> Result<(), StoreError> {
        let stmt = tx
            .prepare_cached("SELECT pg_notify('caseflow', $1)")
            .await
            .map_err(|e| self.db(e))?;
        let payload = format!("{}:{what}", self.schema);
        tx.execute(&stmt, &[&payload])
            .await
            .map_err(|e| self.db(e))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::CaseRead for PgStore {
    async fn get(
        &self,
        id: crate::cases::CaseId,
    ) -> Result<Option<crate::cases::Case>, StoreError> {
        self.pg_get(id).await
    }

    async fn query(&self, query: &super::CaseQuery) -> Result<Vec<crate::cases::Case>, StoreError> {
        self.pg_query(query).await
    }

    async fn count(&self, query: &super::CaseQuery) -> Result<u64, StoreError> {
        self.pg_count(query).await
    }

    async fn pending_events(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::cases::CaseEvent>, StoreError> {
        self.pg_pending_events(limit).await
    }

    async fn sla_due(
        &self,
        now: crate::cases::Timestamp,
        limit: usize,
    ) -> Result<Vec<crate::cases::Case>, StoreError> {
        self.pg_sla_due(now, limit).await
    }

    async fn check(&self) -> Result<Vec<String>, StoreError> {
        self.pg_check().await
    }
}

#[async_trait::async_trait]
impl super::CaseWrite for PgStore {
    async fn create(
        &self,
        new: crate::cases::NewCase,
        meta: &super::WriteMeta,
    ) -> Result<super::WriteOutcome, StoreError> {
        self.pg_create(new, meta).await
    }

    async fn update(
        &self,
        id: crate::cases::CaseId,
        changes: Vec<crate::cases::CaseChange>,
        meta: &super::WriteMeta,
    ) -> Result<super::WriteOutcome, StoreError> {
        self.pg_update(id, &changes, meta).await
    }

    async fn ack_event(&self, event_id: u64) -> Result<bool, StoreError> {
        self.pg_ack_event(event_id).await
    }

    /// Commits are durable when they return, except under relaxed durability
    /// (`synchronous_commit = off`): then a transaction that commits synchronously waits
    /// for the WAL, which holds every earlier commit.
    async fn flush(&self) -> Result<(), StoreError> {
        if self.durability == Durability::Strict {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db(e))?;
        tx.batch_execute("SET LOCAL synchronous_commit = on; SELECT txid_current()")
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn sync(&self) -> Result<(), StoreError> {
        // Strict: every commit already waited for the disk. Relaxed: nothing to wait for.
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::Inbox for PgStore {
    async fn record_incoming(
        &self,
        key: &str,
        at: crate::cases::Timestamp,
    ) -> Result<bool, StoreError> {
        self.pg_record_incoming(key, at).await
    }

    async fn start_delivery(
        &self,
        event_id: u64,
        playbook: &str,
        run_id: &str,
    ) -> Result<bool, StoreError> {
        self.pg_start_delivery(event_id, playbook, run_id).await
    }

    async fn deliveries(&self, event_id: u64) -> Result<Vec<super::Delivery>, StoreError> {
        self.pg_deliveries(event_id).await
    }

    async fn enqueue_incoming(
        &self,
        events: Vec<super::NewIncoming>,
    ) -> Result<Vec<super::Enqueued>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Concurrent callers share one transaction (one commit, one WAL flush).
        self.ingest
            .submit(events, |batch: Vec<Vec<super::NewIncoming>>| async move {
                let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
                let flat: Vec<super::NewIncoming> = batch.into_iter().flatten().collect();
                let mut out = self.pg_enqueue(&flat).await?.into_iter();
                Ok(lens
                    .iter()
                    .map(|n| out.by_ref().take(*n).collect())
                    .collect())
            })
            .await
    }

    async fn pending_incoming(&self, limit: usize) -> Result<Vec<super::Incoming>, StoreError> {
        self.pg_pending_incoming(limit).await
    }

    async fn inbox_depth(&self) -> Result<u64, StoreError> {
        self.pg_inbox_depth().await
    }

    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.pg_get_cursor(name).await
    }

    async fn put_cursor(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.pg_put_cursor(name, value).await
    }

    fn wake_signal(&self) -> Option<Arc<Notify>> {
        Some(self.work_signal())
    }
}

#[async_trait::async_trait]
impl super::Runs for PgStore {
    async fn start_runs(
        &self,
        origin: super::RunOrigin,
        runs: &[super::RunRecord],
    ) -> Result<Vec<bool>, StoreError> {
        self.pg_start_runs(origin, runs).await
    }

    async fn record_steps(
        &self,
        run_id: &str,
        steps: &[(u32, &crate::report::StepReport)],
    ) -> Result<(), StoreError> {
        self.pg_record_steps(run_id, steps).await
    }

    async fn finish_run(&self, run: &super::RunRecord) -> Result<(), StoreError> {
        self.pg_finish_run(run).await
    }

    async fn park_runs(&self, run_ids: &[String]) -> Result<(), StoreError> {
        self.pg_park_runs(run_ids).await
    }

    async fn unfinished_runs(&self) -> Result<Vec<super::RunRecord>, StoreError> {
        self.pg_unfinished_runs().await
    }

    async fn list_runs(
        &self,
        filter: &super::RunFilter,
    ) -> Result<Vec<super::RunSummary>, StoreError> {
        self.pg_list_runs(filter).await
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<super::RunRecord>, StoreError> {
        self.pg_get_run(run_id).await
    }

    async fn run_record(&self, run_id: &str) -> Result<Option<super::RunRecord>, StoreError> {
        self.pg_run_record(run_id).await
    }

    async fn inbox_entry(&self, seq: u64) -> Result<super::InboxEntry, StoreError> {
        self.pg_inbox_entry(seq).await
    }

    async fn take_over_runs(&self) -> Result<Vec<super::RunRecord>, StoreError> {
        self.pg_take_over_runs().await
    }

    async fn acquire_key(&self, key: &str, run_id: &str) -> Result<(), StoreError> {
        self.pg_acquire_key(key, run_id).await
    }

    async fn release_key(&self, key: &str, run_id: &str) -> Result<(), StoreError> {
        self.pg_release_key(key, run_id).await
    }
}

#[async_trait::async_trait]
impl super::Cache for PgStore {
    async fn cache_get(
        &self,
        namespace: &str,
        key: &str,
        now: crate::cases::Timestamp,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.pg_cache_get(namespace, key, now).await
    }

    async fn cache_put(
        &self,
        namespace: &str,
        key: &str,
        value: &serde_json::Value,
        expires_at: crate::cases::Timestamp,
    ) -> Result<(), StoreError> {
        self.pg_cache_put(namespace, key, value, expires_at).await
    }

    async fn cache_purge(
        &self,
        now: crate::cases::Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.pg_cache_purge(now, limit).await
    }
}

#[async_trait::async_trait]
impl super::Notifications for PgStore {
    async fn notification_push(
        &self,
        n: &crate::notify::Notification,
        owed: &[String],
    ) -> Result<bool, StoreError> {
        self.pg_notification_push(n, owed).await
    }

    async fn notification_record(&self, d: &crate::notify::Delivery) -> Result<(), StoreError> {
        self.pg_notification_record(d).await
    }

    async fn notifications_pending(
        &self,
        now_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<crate::notify::Pending>, StoreError> {
        self.pg_notifications_pending(now_ms, limit).await
    }

    async fn notification_claim(&self, id: &str, channel: &str) -> Result<bool, StoreError> {
        self.pg_notification_claim(id, channel).await
    }

    async fn notification_release(&self, id: &str, channel: &str) -> Result<(), StoreError> {
        self.pg_notification_release(id, channel).await
    }

    async fn notifications_all(&self) -> Result<Vec<crate::notify::Notification>, StoreError> {
        self.pg_notifications_all().await
    }

    async fn notification_deliveries(
        &self,
        id: Option<&str>,
    ) -> Result<Vec<crate::notify::Delivery>, StoreError> {
        self.pg_notification_deliveries(id).await
    }

    async fn notification_counts(
        &self,
    ) -> Result<super::notifications::DeliveryCounts, StoreError> {
        self.pg_notification_counts().await
    }
}
