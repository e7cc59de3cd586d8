//! PostgreSQL for the store tests: each test gets a fresh schema in the database at
//! `CASEFLOW_TEST_DATABASE_URL` (default `postgres://caseflow:caseflow@127.0.0.1:5432/caseflow_test`,
//! what `bash .ci/postgres.sh` sets up, and starts when nothing answers: see `pg_server.rs`),
//! dropped when the test's store goes. No server is not a skip: the test fails and says how
//! to start one.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use engine::persist::{Durability, PgOptions, PgStore, StoreOptions};

#[path = "pg_server.rs"]
mod pg_server;
pub use pg_server::test_url;

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        rand::random::<u32>()
    )
}

/// The message of a test that found no server.
pub fn no_server(e: &dyn std::fmt::Display) -> String {
    format!(
        "no PostgreSQL server for the store tests at {}: {e}\n\
         start one with `eval \"$(bash .ci/postgres.sh)\"` (installs Debian's postgresql when missing, \
         starts a cluster, creates role `caseflow` and database `caseflow_test`), \
         or point CASEFLOW_TEST_DATABASE_URL at a database where the user may create schemas",
        engine::persist::postgres::config::redact(&test_url())
    )
}

/// Options for a fresh schema.
pub fn options(schema: &str) -> PgOptions {
    let mut o = PgOptions::new(test_url()).with_schema(schema);
    o.pool_size = 4;
    o
}

/// A store in its own schema; the schema is dropped with it.
pub struct TestPg {
    store: Option<PgStore>,
    pub schema: String,
}

impl std::ops::Deref for TestPg {
    type Target = PgStore;
    fn deref(&self) -> &PgStore {
        self.store.as_ref().expect("store present until drop")
    }
}

impl TestPg {
    /// Takes the store out (the schema is still dropped when this guard goes).
    pub fn take(&mut self) -> PgStore {
        self.store.take().expect("store taken once")
    }
}

pub async fn open(schema: &str, durability: Durability) -> PgStore {
    let store_options = StoreOptions {
        durability,
        ..StoreOptions::default()
    };
    match PgStore::open_with_options(&options(schema), store_options).await {
        Ok(s) => s,
        Err(e) if e.to_string().contains("cannot connect") => panic!("{}", no_server(&e)),
        Err(e) => panic!("cannot open the test store: {e}"),
    }
}

pub async fn fresh() -> TestPg {
    fresh_with(Durability::Strict).await
}

pub async fn fresh_with(durability: Durability) -> TestPg {
    let schema = fresh_schema();
    let store = open(&schema, durability).await;
    TestPg {
        store: Some(store),
        schema,
    }
}

/// Drops a test schema (best effort; a leftover schema only takes space).
pub fn drop_schema(schema: &str) {
    let schema = schema.to_string();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok((client, conn)) =
                tokio_postgres::connect(&test_url(), tokio_postgres::NoTls).await
            else {
                return;
            };
            tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!(
                    "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
                ))
                .await;
        });
    })
    .join();
}

impl Drop for TestPg {
    fn drop(&mut self) {
        drop(self.store.take());
        drop_schema(&self.schema);
    }
}
