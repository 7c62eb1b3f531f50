//! Retention: audit rows are kept at least 25 months (Regulation B, 12 CFR 1002.12(b)), then
//! dropped a monthly partition at a time (legacy rows: deleted as a prefix of each chain). Each
//! chain records its last dropped row's hash as the anchor from which `audit verify` checks the rest.

use chrono::{DateTime, Months, Utc};
use sqlx::{PgPool, Row};

use super::OpsError;

/// The legal minimum and the default retention.
pub const MINIMUM_RETENTION_MONTHS: u32 = 25;

/// What a purge removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct PurgeReport {
    pub cutoff: Option<DateTime<Utc>>,
    pub audit_rows_deleted: u64,
    pub outcome_rows_deleted: u64,
    pub chains_pruned: usize,
    /// Monthly partitions of `decisions` dropped.
    pub partitions_dropped: Vec<String>,
}

/// Drops the monthly partitions of `decisions` wholly older than `as_of - retention_months`
/// (anchoring each chain at its last dropped row, so the rest still verifies) with their claims
/// and monitor buckets; deletes legacy rows older than the cutoff (a prefix of each legacy chain)
/// and outcomes observed before it.
pub async fn purge(pool: &PgPool, retention_months: u32, as_of: DateTime<Utc>) -> Result<PurgeReport, OpsError> {
    if retention_months < MINIMUM_RETENTION_MONTHS {
        return Err(OpsError::RetentionTooShort(retention_months));
    }
    let cutoff = as_of.checked_sub_months(Months::new(retention_months)).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut report = PurgeReport { cutoff: Some(cutoff), ..PurgeReport::default() };
    drop_partitions(pool, cutoff, &mut report).await?;
    purge_legacy(pool, cutoff, &mut report).await?;
    report.outcome_rows_deleted = sqlx::query("DELETE FROM loan_outcomes WHERE observed_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(report)
}

/// Drops every partition of `decisions` whose upper bound is at or before `cutoff`, oldest first.
async fn drop_partitions(pool: &PgPool, cutoff: DateTime<Utc>, report: &mut PurgeReport) -> Result<(), OpsError> {
    let partitions: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT c.relname, (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid          WHERE i.inhparent = 'decisions'::regclass ORDER BY 2",
    )
    .fetch_all(pool)
    .await?;
    for (partition, upper) in partitions.into_iter().filter(|(_, upper)| *upper <= cutoff) {
        let mut transaction = pool.begin().await?;
        let anchors = sqlx::query(&format!(
            "UPDATE source_partitions AS s SET anchor_seq = a.chain_seq, anchor_hash = a.row_hash, updated_at = now()              FROM (SELECT DISTINCT ON (source_id) source_id, chain_seq, row_hash FROM {partition}                    ORDER BY source_id, chain_seq DESC) AS a              WHERE s.source_id = a.source_id AND s.anchor_seq < a.chain_seq"
        ))
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        let rows: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {partition}")).fetch_one(&mut *transaction).await?;
        sqlx::query(&format!(
            "DELETE FROM decided_applications a USING {partition} d \
             WHERE a.application_key = application_key(d.application_id) \
               AND a.source_id = d.source_id AND a.chain_seq = d.chain_seq"
        ))
        .execute(&mut *transaction)
        .await?;
        sqlx::query(&format!("DROP TABLE {partition}")).execute(&mut *transaction).await?;
        for table in ["monitor_fairness", "monitor_drift"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE bucket_ms < $1"))
                .bind(upper.timestamp_millis())
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        report.audit_rows_deleted += rows as u64;
        report.chains_pruned += anchors as usize;
        report.partitions_dropped.push(partition);
    }
    Ok(())
}

/// Deletes legacy rows processed before `cutoff`, a prefix of each legacy chain.
async fn purge_legacy(pool: &PgPool, cutoff: DateTime<Utc>, report: &mut PurgeReport) -> Result<(), OpsError> {
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT chain_key FROM audit_chain_heads_legacy ORDER BY chain_key").fetch_all(pool).await?;
    for key in keys {
        let mut transaction = pool.begin().await?;
        let head =
            sqlx::query("SELECT pruned_through_seq FROM audit_chain_heads_legacy WHERE chain_key = $1 FOR UPDATE")
                .bind(&key)
                .fetch_one(&mut *transaction)
                .await?;
        let pruned: i64 = head.get(0);
        let through: Option<i64> = sqlx::query_scalar(
            "SELECT coalesce(
                 (SELECT min(chain_seq) - 1 FROM decision_audit_legacy WHERE chain_key = $1 AND processed_at >= $2),
                 (SELECT max(chain_seq) FROM decision_audit_legacy WHERE chain_key = $1))",
        )
        .bind(&key)
        .bind(cutoff)
        .fetch_one(&mut *transaction)
        .await?;
        let Some(through) = through.filter(|through| *through > pruned) else {
            continue;
        };
        let anchor: Vec<u8> =
            sqlx::query_scalar("SELECT row_hash FROM decision_audit_legacy WHERE chain_key = $1 AND chain_seq = $2")
                .bind(&key)
                .bind(through)
                .fetch_one(&mut *transaction)
                .await?;
        let deleted = sqlx::query("DELETE FROM decision_audit_legacy WHERE chain_key = $1 AND chain_seq <= $2")
            .bind(&key)
            .bind(through)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE audit_chain_heads_legacy SET pruned_through_seq = $2, pruned_through_hash = $3, updated_at = now() \
             WHERE chain_key = $1",
        )
        .bind(&key)
        .bind(through)
        .bind(&anchor)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        report.audit_rows_deleted += deleted;
        report.chains_pruned += 1;
    }
    Ok(())
}
