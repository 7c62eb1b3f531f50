//! Retention: audit rows are kept at least 25 months (Regulation B, 12 CFR 1002.12(b)), then
//! pruned as a prefix of each chain. The chain head records the last pruned row's hash as the
//! anchor from which `audit verify` checks the rest.

use chrono::{DateTime, Months, Utc};
use sqlx::{PgPool, Row};

use super::AuditError;

/// The legal minimum and the default retention.
pub const MINIMUM_RETENTION_MONTHS: u32 = 25;

/// Why a purge was refused.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "retention_months = {0} is below the {MINIMUM_RETENTION_MONTHS} months Regulation B requires (12 CFR 1002.12(b))"
    )]
    TooShort(u32),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What a purge removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct PurgeReport {
    pub cutoff: Option<DateTime<Utc>>,
    pub audit_rows_deleted: u64,
    pub outcome_rows_deleted: u64,
    pub chains_pruned: usize,
}

/// Deletes audit rows processed before `as_of - retention_months` (a prefix of each chain, so
/// nothing newer is lost to an older straggler) and outcomes observed before the same cutoff.
pub async fn purge(pool: &PgPool, retention_months: u32, as_of: DateTime<Utc>) -> Result<PurgeReport, RetentionError> {
    if retention_months < MINIMUM_RETENTION_MONTHS {
        return Err(RetentionError::TooShort(retention_months));
    }
    let cutoff = as_of.checked_sub_months(Months::new(retention_months)).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut report = PurgeReport { cutoff: Some(cutoff), ..PurgeReport::default() };
    let keys: Vec<String> = sqlx::query_scalar("SELECT chain_key FROM audit_chain_heads ORDER BY chain_key")
        .fetch_all(pool)
        .await
        .map_err(AuditError::from)?;
    for key in keys {
        let mut transaction = pool.begin().await.map_err(AuditError::from)?;
        let head = sqlx::query("SELECT pruned_through_seq FROM audit_chain_heads WHERE chain_key = $1 FOR UPDATE")
            .bind(&key)
            .fetch_one(&mut *transaction)
            .await
            .map_err(AuditError::from)?;
        let pruned: i64 = head.get(0);
        let through: Option<i64> = sqlx::query_scalar(
            "SELECT coalesce(
                 (SELECT min(chain_seq) - 1 FROM decision_audit WHERE chain_key = $1 AND processed_at >= $2),
                 (SELECT max(chain_seq) FROM decision_audit WHERE chain_key = $1))",
        )
        .bind(&key)
        .bind(cutoff)
        .fetch_one(&mut *transaction)
        .await
        .map_err(AuditError::from)?;
        let Some(through) = through.filter(|through| *through > pruned) else {
            continue;
        };
        let anchor: Vec<u8> =
            sqlx::query_scalar("SELECT row_hash FROM decision_audit WHERE chain_key = $1 AND chain_seq = $2")
                .bind(&key)
                .bind(through)
                .fetch_one(&mut *transaction)
                .await
                .map_err(AuditError::from)?;
        let deleted = sqlx::query("DELETE FROM decision_audit WHERE chain_key = $1 AND chain_seq <= $2")
            .bind(&key)
            .bind(through)
            .execute(&mut *transaction)
            .await
            .map_err(AuditError::from)?
            .rows_affected();
        sqlx::query(
            "UPDATE audit_chain_heads SET pruned_through_seq = $2, pruned_through_hash = $3, updated_at = now() \
             WHERE chain_key = $1",
        )
        .bind(&key)
        .bind(through)
        .bind(&anchor)
        .execute(&mut *transaction)
        .await
        .map_err(AuditError::from)?;
        transaction.commit().await.map_err(AuditError::from)?;
        report.audit_rows_deleted += deleted;
        report.chains_pruned += 1;
    }
    report.outcome_rows_deleted = sqlx::query("DELETE FROM loan_outcomes WHERE observed_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await
        .map_err(AuditError::from)?
        .rows_affected();
    Ok(report)
}
