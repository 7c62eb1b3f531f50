//! Audit rows to PostgreSQL: one transaction per batch, idempotent on
//! (application_id, model_sha256), so a replayed input never makes a second row. Each new row is
//! linked into its source partition's hash chain ([`chain`]); [`verify`] re-checks chains and
//! re-scores rows; [`retention`] prunes rows past the retention period.

pub mod chain;
pub mod retention;
pub mod verify;

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row};

use crate::events::DecisionOutcome;
use crate::process::AuditRow;
use chain::{chain_key, row_hash, Link, GENESIS};

/// Audit store failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("invalid database URL: {0}")]
    Url(sqlx::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("another writer added rows to chain {0} concurrently; the batch is retried")]
    ConcurrentWriter(String),
    #[error("stored audit row {decision_id} is unreadable: {reason}")]
    Unreadable { decision_id: String, reason: String },
}

/// Columns of an audit row as read back, in [`read_row`] order.
pub const AUDIT_COLUMNS: &str = "decision_id, application_id, model_version, model_sha256, decision, \
     probability_of_default, approve_below, decline_at_or_above, model_inputs, protected_attributes, schema_id, \
     source_topic, source_partition, source_offset, event_time, consumed_at, processed_at, reasons, \
     reason_catalogue_version";

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

    /// Writes `rows` in one transaction, linking new ones into their chains; returns how many
    /// were new. Rows already stored (same application and model) are skipped, also within `rows`.
    /// Two statements: one creates and locks the chain heads and finds the rows already stored,
    /// one inserts the new rows (arrays, a single prepared statement for any batch size) and
    /// advances the heads.
    pub async fn write_batch(&self, rows: &[&AuditRow]) -> Result<u64, AuditError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut transaction = self.pool.begin().await?;
        let keys: Vec<String> = rows
            .iter()
            .map(|row| chain_key(&row.source_topic, row.source_partition))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let applications: Vec<&str> = rows.iter().map(|row| row.application_id.as_str()).collect();
        let models: Vec<&str> = rows.iter().map(|row| row.model_sha256.as_str()).collect();
        // The no-op DO UPDATE takes the row lock (keys sorted: one lock order for every writer)
        // and returns the head as the latest committed transaction left it.
        let found = sqlx::query(
            "WITH heads AS ( \
               INSERT INTO audit_chain_heads (chain_key, last_seq, last_hash) \
               SELECT key, 0, $2 FROM unnest($1::text[]) AS key \
               ON CONFLICT (chain_key) DO UPDATE SET chain_key = EXCLUDED.chain_key \
               RETURNING chain_key, last_seq, last_hash) \
             SELECT chain_key, last_seq, last_hash, NULL::text, NULL::text FROM heads \
             UNION ALL \
             SELECT NULL, NULL, NULL, application_id, model_sha256 FROM decision_audit \
             WHERE (application_id, model_sha256) IN (SELECT * FROM unnest($3::text[], $4::text[]))",
        )
        .bind(&keys)
        .bind(&GENESIS[..])
        .bind(&applications)
        .bind(&models)
        .fetch_all(&mut *transaction)
        .await?;
        let mut heads: BTreeMap<String, (i64, [u8; 32])> = BTreeMap::new();
        let mut stored: HashSet<(String, String)> = HashSet::new();
        for row in found {
            match row.try_get::<Option<String>, _>(0)? {
                Some(key) => {
                    let hash: Vec<u8> = row.try_get(2)?;
                    heads.insert(key, (row.try_get(1)?, hash.try_into().unwrap_or(GENESIS)));
                }
                None => {
                    stored.insert((row.try_get(3)?, row.try_get(4)?));
                }
            }
        }
        let mut seen: HashSet<(&str, &str)> =
            stored.iter().map(|(application, model)| (application.as_str(), model.as_str())).collect();
        let mut fresh = Vec::with_capacity(rows.len());
        for row in rows {
            if !seen.insert((row.application_id.as_str(), row.model_sha256.as_str())) {
                continue;
            }
            let key = chain_key(&row.source_topic, row.source_partition);
            let head = heads.get_mut(&key).expect("every chain head was created and locked");
            let link = Link { chain_key: key, seq: head.0 + 1, prev_hash: head.1 };
            let hash = row_hash(row, &link);
            *head = (link.seq, hash);
            fresh.push((*row, link, hash));
        }
        let inserted: i64 = insert_and_advance(&fresh, &heads).fetch_one(&mut *transaction).await?;
        if inserted != fresh.len() as i64 {
            return Err(AuditError::ConcurrentWriter(keys.join(",")));
        }
        transaction.commit().await?;
        Ok(inserted as u64)
    }
}

/// Inserts `fresh` rows and moves the chain heads to `heads`; yields how many rows were inserted.
/// Columns go as arrays (JSON as text, cast by the server), so the statement text never changes.
fn insert_and_advance<'a>(
    fresh: &'a [(&'a AuditRow, Link, [u8; 32])],
    heads: &BTreeMap<String, (i64, [u8; 32])>,
) -> sqlx::query::QueryScalar<'a, Postgres, i64, sqlx::postgres::PgArguments> {
    let text = |value: fn(&'a AuditRow) -> &'a str| fresh.iter().map(|(row, _, _)| value(row)).collect::<Vec<&str>>();
    let number = |value: fn(&AuditRow) -> f64| fresh.iter().map(|(row, _, _)| value(row)).collect::<Vec<f64>>();
    let json = |value: fn(&AuditRow) -> String| fresh.iter().map(|(row, _, _)| value(row)).collect::<Vec<String>>();
    let time = |value: fn(&AuditRow) -> DateTime<Utc>| fresh.iter().map(|(row, _, _)| value(row)).collect::<Vec<_>>();
    sqlx::query_scalar(
        "WITH inserted AS ( \
           INSERT INTO decision_audit (decision_id, application_id, model_version, model_sha256, decision, \
             probability_of_default, approve_below, decline_at_or_above, model_inputs, protected_attributes, \
             schema_id, source_topic, source_partition, source_offset, event_time, consumed_at, processed_at, \
             reasons, reason_catalogue_version, chain_key, chain_seq, prev_hash, row_hash) \
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], \
             $7::float8[], $8::float8[], $9::text[]::jsonb[], $10::text[]::jsonb[], $11::int4[], $12::text[], \
             $13::int4[], $14::int8[], $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], \
             $18::text[]::jsonb[], $19::text[], $20::text[], $21::int8[], $22::bytea[], $23::bytea[]) \
           ON CONFLICT DO NOTHING RETURNING 1), \
         advanced AS ( \
           UPDATE audit_chain_heads AS h SET last_seq = v.seq, last_hash = v.hash, updated_at = now() \
           FROM unnest($24::text[], $25::int8[], $26::bytea[]) AS v(key, seq, hash) WHERE h.chain_key = v.key) \
         SELECT count(*) FROM inserted",
    )
    .bind(fresh.iter().map(|(row, _, _)| row.decision_id).collect::<Vec<_>>())
    .bind(text(|row| &row.application_id))
    .bind(text(|row| &row.model_version))
    .bind(text(|row| &row.model_sha256))
    .bind(text(|row| row.decision))
    .bind(number(|row| row.probability_of_default))
    .bind(number(|row| row.approve_below))
    .bind(number(|row| row.decline_at_or_above))
    .bind(json(|row| row.model_inputs.to_string()))
    .bind(json(|row| serialised(&row.protected_attributes)))
    .bind(fresh.iter().map(|(row, _, _)| row.schema_id).collect::<Vec<_>>())
    .bind(text(|row| &row.source_topic))
    .bind(fresh.iter().map(|(row, _, _)| row.source_partition).collect::<Vec<_>>())
    .bind(fresh.iter().map(|(row, _, _)| row.source_offset).collect::<Vec<_>>())
    .bind(time(|row| row.event_time))
    .bind(time(|row| row.consumed_at))
    .bind(time(|row| row.processed_at))
    .bind(json(|row| serialised(&row.reasons)))
    .bind(text(|row| &row.reason_catalogue_version))
    .bind(fresh.iter().map(|(_, link, _)| link.chain_key.as_str()).collect::<Vec<_>>())
    .bind(fresh.iter().map(|(_, link, _)| link.seq).collect::<Vec<_>>())
    .bind(fresh.iter().map(|(_, link, _)| &link.prev_hash[..]).collect::<Vec<_>>())
    .bind(fresh.iter().map(|(_, _, hash)| &hash[..]).collect::<Vec<_>>())
    .bind(heads.keys().cloned().collect::<Vec<_>>())
    .bind(heads.values().map(|(seq, _)| *seq).collect::<Vec<_>>())
    .bind(heads.values().map(|(_, hash)| hash.to_vec()).collect::<Vec<_>>())
}

fn serialised(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("audit JSON serialises")
}

/// An audit row as stored, from a query selecting [`AUDIT_COLUMNS`] first.
pub fn read_row(row: &PgRow) -> Result<AuditRow, AuditError> {
    let decision_id: uuid::Uuid = row.try_get(0)?;
    let unreadable = |reason: String| AuditError::Unreadable { decision_id: decision_id.to_string(), reason };
    let decision: String = row.try_get(4)?;
    let decision = match decision.as_str() {
        "approve" => DecisionOutcome::Approve,
        "decline" => DecisionOutcome::Decline,
        "review" => DecisionOutcome::Review,
        other => return Err(unreadable(format!("unknown decision `{other}`"))),
    };
    let protected: serde_json::Value = row.try_get(9)?;
    let reasons: serde_json::Value = row.try_get(17)?;
    Ok(AuditRow {
        decision_id,
        application_id: row.try_get(1)?,
        model_version: row.try_get(2)?,
        model_sha256: row.try_get(3)?,
        decision: decision.as_str(),
        probability_of_default: row.try_get(5)?,
        approve_below: row.try_get(6)?,
        decline_at_or_above: row.try_get(7)?,
        model_inputs: row.try_get(8)?,
        protected_attributes: serde_json::from_value(protected).map_err(|error| unreadable(error.to_string()))?,
        schema_id: row.try_get(10)?,
        source_topic: row.try_get(11)?,
        source_partition: row.try_get(12)?,
        source_offset: row.try_get(13)?,
        event_time: row.try_get(14)?,
        consumed_at: row.try_get(15)?,
        processed_at: row.try_get(16)?,
        reasons: serde_json::from_value(reasons).map_err(|error| unreadable(error.to_string()))?,
        reason_catalogue_version: row.try_get(18)?,
    })
}
