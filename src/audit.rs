//! Audit rows to PostgreSQL: one transaction per batch, idempotent on
//! (application_id, model_sha256), so a replayed input never makes a second row.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, QueryBuilder};
use std::str::FromStr;
use std::time::Duration;

use crate::process::AuditRow;

/// Audit store failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("invalid database URL: {0}")]
    Url(sqlx::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Rows per INSERT statement (17 bind parameters each, under PostgreSQL's 65535 limit).
const ROWS_PER_STATEMENT: usize = 1000;

/// The audit table behind a connection pool.
#[derive(Clone)]
pub struct AuditStore {
    pool: PgPool,
}

impl AuditStore {
    /// A lazily connecting pool: the worker starts (and reports not-ready) while the database is down.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self, AuditError> {
        let options = PgConnectOptions::from_str(url).map_err(AuditError::Url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// Applies the bundled migrations (`migrations/`).
    pub async fn migrate(&self) -> Result<(), AuditError> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// The pool, for queries outside the hot path.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes `rows` in one transaction; returns how many were new.
    pub async fn write_batch(&self, rows: &[&AuditRow]) -> Result<u64, AuditError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut transaction = self.pool.begin().await?;
        let mut inserted = 0;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            inserted += insert_statement(chunk).build().execute(&mut *transaction).await?.rows_affected();
        }
        transaction.commit().await?;
        Ok(inserted)
    }
}

fn insert_statement<'a>(rows: &'a [&'a AuditRow]) -> QueryBuilder<'a, Postgres> {
    let mut builder = QueryBuilder::new(
        "INSERT INTO decision_audit (decision_id, application_id, model_version, model_sha256, decision, \
         probability_of_default, approve_below, decline_at_or_above, model_inputs, protected_attributes, \
         schema_id, source_topic, source_partition, source_offset, event_time, consumed_at, processed_at) ",
    );
    builder.push_values(rows, |mut values, row| {
        values
            .push_bind(row.decision_id)
            .push_bind(&row.application_id)
            .push_bind(&row.model_version)
            .push_bind(&row.model_sha256)
            .push_bind(row.decision)
            .push_bind(row.probability_of_default)
            .push_bind(row.approve_below)
            .push_bind(row.decline_at_or_above)
            .push_bind(&row.model_inputs)
            .push_bind(sqlx::types::Json(&row.protected_attributes))
            .push_bind(row.schema_id)
            .push_bind(&row.source_topic)
            .push_bind(row.source_partition)
            .push_bind(row.source_offset)
            .push_bind(row.event_time)
            .push_bind(row.consumed_at)
            .push_bind(row.processed_at);
    });
    builder.push(" ON CONFLICT (application_id, model_sha256) DO NOTHING");
    builder
}
