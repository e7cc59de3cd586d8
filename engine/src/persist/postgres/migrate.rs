//! Versioned schema migrations, embedded in the binary and run at start-up.
//!
//! `caseflow_schema_migrations` records each applied version. Opening a store takes a
//! transaction-scoped advisory lock for its schema (so processes starting together do not
//! race), applies the missing versions in order, each in the same transaction, and refuses
//! a schema whose newest version is above what this engine knows: an older engine never
//! writes to tables a newer one changed. Migrations only ever get appended to this list;
//! an applied file is never edited (its checksum would not match, which is an error).

use tokio_postgres::Client;

/// One migration: its version, name, and SQL.
pub(crate) struct Migration {
    pub(crate) version: i32,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "cache",
        sql: include_str!("migrations/0002_cache.sql"),
    },
    Migration {
        version: 3,
        name: "notifications",
        sql: include_str!("migrations/0003_notifications.sql"),
    },
];

/// A checksum of a migration's SQL (FNV-1a, 64 bits), to notice an edited file.
fn checksum(sql: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// What went wrong, for [`super::PgStore::open`] to turn into a store error.
pub(crate) enum MigrateError {
    Db(tokio_postgres::Error),
    Refused(String),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Db(e)
    }
}

/// Creates the schema when missing and brings it to [`latest`]; returns the versions
/// applied now.
pub(crate) async fn run(client: &mut Client, schema: &str) -> Result<Vec<i32>, MigrateError> {
    run_list(client, schema, MIGRATIONS).await
}

pub(crate) async fn run_list(
    client: &mut Client,
    schema: &str,
    migrations: &[Migration],
) -> Result<Vec<i32>, MigrateError> {
    let tx = client.transaction().await?;
    // One migrator per schema at a time, across processes and machines.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('caseflow-migrate:' || $1::text))",
        &[&schema],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.caseflow_schema_migrations (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             checksum   bigint      NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let rows = tx
        .query(
            &format!(
                "SELECT version, name, checksum FROM {schema}.caseflow_schema_migrations ORDER BY version"
            ),
            &[],
        )
        .await?;
    let known = migrations.last().map_or(0, |m| m.version);
    let mut applied = std::collections::BTreeMap::new();
    for r in &rows {
        let v: i32 = r.get(0);
        let name: String = r.get(1);
        let sum: i64 = r.get(2);
        applied.insert(v, (name, sum));
    }
    if let Some((&newest, (name, _))) = applied.iter().next_back() {
        if newest > known {
            tx.rollback().await?;
            return Err(MigrateError::Refused(format!(
                "schema version {newest} (`{name}`) is newer than this engine supports ({known}); upgrade caseflow, or point `--database-url` at another database or schema"
            )));
        }
    }
    let mut done = Vec::new();
    for m in migrations {
        match applied.get(&m.version) {
            Some((_, sum)) if *sum != checksum(m.sql) => {
                tx.rollback().await?;
                return Err(MigrateError::Refused(format!(
                    "migration {} (`{}`) was applied from different SQL than this engine has; the schema was changed by hand or by a modified build",
                    m.version, m.name
                )));
            }
            Some(_) => {}
            None => {
                tx.batch_execute(&format!("SET LOCAL search_path TO {schema}"))
                    .await?;
                tx.batch_execute(m.sql).await?;
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.caseflow_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"
                    ),
                    &[&m.version, &m.name, &checksum(m.sql)],
                )
                .await?;
                done.push(m.version);
            }
        }
    }
    tx.commit().await?;
    Ok(done)
}
