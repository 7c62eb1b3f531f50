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

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

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

/// Rows per INSERT statement (23 bind parameters each, under PostgreSQL's 65535 limit).
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

    /// Writes `rows` in one transaction, linking new ones into their chains; returns how many
    /// were new. Rows already stored (same application and model) are skipped, also within `rows`.
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
        sqlx::query(
            "INSERT INTO audit_chain_heads (chain_key, last_seq, last_hash) SELECT key, 0, $2 FROM unnest($1::text[]) AS key \
             ON CONFLICT (chain_key) DO NOTHING",
        )
        .bind(&keys)
        .bind(&GENESIS[..])
        .execute(&mut *transaction)
        .await?;
        let mut heads: BTreeMap<String, (i64, [u8; 32])> = BTreeMap::new();
        let locked = sqlx::query(
            "SELECT chain_key, last_seq, last_hash FROM audit_chain_heads WHERE chain_key = ANY($1) \
             ORDER BY chain_key FOR UPDATE",
        )
        .bind(&keys)
        .fetch_all(&mut *transaction)
        .await?;
        for head in locked {
            let hash: Vec<u8> = head.get(2);
            heads.insert(head.get(0), (head.get(1), hash.try_into().unwrap_or(GENESIS)));
        }
        let applications: Vec<&str> = rows.iter().map(|row| row.application_id.as_str()).collect();
        let models: Vec<&str> = rows.iter().map(|row| row.model_sha256.as_str()).collect();
        let mut seen: HashSet<(String, String)> = sqlx::query_as(
            "SELECT application_id, model_sha256 FROM decision_audit \
             WHERE (application_id, model_sha256) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        )
        .bind(&applications)
        .bind(&models)
        .fetch_all(&mut *transaction)
        .await?
        .into_iter()
        .collect();
        let mut fresh = Vec::with_capacity(rows.len());
        for row in rows {
            if !seen.insert((row.application_id.clone(), row.model_sha256.clone())) {
                continue;
            }
            let key = chain_key(&row.source_topic, row.source_partition);
            let head = heads.get_mut(&key).expect("every chain head was created and locked");
            let link = Link { chain_key: key, seq: head.0 + 1, prev_hash: head.1 };
            let hash = row_hash(row, &link);
            *head = (link.seq, hash);
            fresh.push((*row, link, hash));
        }
        let mut inserted = 0;
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            inserted += insert_statement(chunk).build().execute(&mut *transaction).await?.rows_affected();
        }
        if inserted != fresh.len() as u64 {
            return Err(AuditError::ConcurrentWriter(keys.join(",")));
        }
        let (head_keys, head_values): (Vec<String>, Vec<(i64, [u8; 32])>) = heads.into_iter().unzip();
        let seqs: Vec<i64> = head_values.iter().map(|(seq, _)| *seq).collect();
        let hashes: Vec<Vec<u8>> = head_values.iter().map(|(_, hash)| hash.to_vec()).collect();
        sqlx::query(
            "UPDATE audit_chain_heads AS h SET last_seq = v.seq, last_hash = v.hash, updated_at = now() \
             FROM unnest($1::text[], $2::bigint[], $3::bytea[]) AS v(key, seq, hash) WHERE h.chain_key = v.key",
        )
        .bind(&head_keys)
        .bind(&seqs)
        .bind(&hashes)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(inserted)
    }
}

fn insert_statement<'a>(rows: &'a [(&'a AuditRow, Link, [u8; 32])]) -> QueryBuilder<'a, Postgres> {
    let mut builder = QueryBuilder::new(
        "INSERT INTO decision_audit (decision_id, application_id, model_version, model_sha256, decision, \
         probability_of_default, approve_below, decline_at_or_above, model_inputs, protected_attributes, \
         schema_id, source_topic, source_partition, source_offset, event_time, consumed_at, processed_at, \
         reasons, reason_catalogue_version, chain_key, chain_seq, prev_hash, row_hash) ",
    );
    builder.push_values(rows, |mut values, (row, link, hash)| {
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
            .push_bind(row.processed_at)
            .push_bind(sqlx::types::Json(&row.reasons))
            .push_bind(&row.reason_catalogue_version)
            .push_bind(&link.chain_key)
            .push_bind(link.seq)
            .push_bind(&link.prev_hash[..])
            .push_bind(&hash[..]);
    });
    builder.push(" ON CONFLICT DO NOTHING");
    builder
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
