//! Rebuilding the windows of newly assigned partitions: decisions from the counts persisted
//! with the audit rows, outcomes from the outcome and audit tables.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::{FromRow, PgPool, Row};

use super::outcomes::LabelledDecision;
use super::{MonitorError, Monitoring};
use crate::codec::{ProtectedKeys, SealError, StoredProtected};

/// The audit tables as the outcome rebuild reads them: the pool, and the keys that open the
/// protected attributes.
pub struct AuditReader<'a> {
    pub pool: &'a PgPool,
    pub keys: &'a ProtectedKeys,
}

/// What an outcome rebuild read.
#[derive(Debug, Default)]
pub struct OutcomeRebuild {
    /// Rows counted in the outcome windows.
    pub rows: u64,
    /// Rows left out: their decision's sealed protected attributes do not open.
    pub unopenable: u64,
    /// Why the first of those did not open.
    pub first_error: Option<SealError>,
}

/// `[approve, review, decline]` of a stored counts array.
fn three(counts: &[i64]) -> [u64; 3] {
    let at = |index: usize| counts.get(index).copied().unwrap_or(0).max(0) as u64;
    [at(0), at(1), at(2)]
}

impl Monitoring {
    /// Restores the windows and all-time totals of `topic`'s `partitions` from the counts
    /// persisted with their audit rows (milliseconds, whatever the number of rows); returns the
    /// buckets read. Run before any record of these partitions is counted in this assignment.
    pub async fn rebuild(&self, pool: &PgPool, topic: &str, partitions: &[i32]) -> Result<u64, MonitorError> {
        let mut transaction = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *transaction).await?;
        let sources: Vec<(i32, i32, Option<i64>)> = sqlx::query_as(
            "SELECT source_id, partition, event_watermark_ms FROM source_partitions WHERE topic = $1 AND partition = ANY($2)",
        )
        .bind(topic)
        .bind(partitions)
        .fetch_all(&mut *transaction)
        .await?;
        let span = self.fairness.bucket_millis() * (self.window_buckets + 1);
        let mut buckets = 0;
        for (source_id, partition, watermark) in sources {
            let Some(watermark) = watermark else { continue };
            self.fairness.restore_watermark(watermark);
            self.drift.restore_watermark(watermark);
            let fairness: Vec<(i64, i16, String, Vec<i64>)> = sqlx::query_as(
                "SELECT bucket_ms, attribute, grp, ARRAY[approved, reviewed, declined] FROM monitor_fairness WHERE source_id = $1 AND bucket_ms >= $2",
            )
            .bind(source_id)
            .bind(watermark - span)
            .fetch_all(&mut *transaction)
            .await?;
            for (bucket_ms, attribute, group, counts) in fairness {
                let Some(position) = self.fairness.grouping().position(attribute) else { continue };
                self.fairness.restore_bucket(partition, position, &group, bucket_ms, three(&counts));
                buckets += 1;
            }
            let totals: Vec<(i16, String, Vec<i64>)> =
                sqlx::query_as("SELECT attribute, grp, ARRAY[approved, reviewed, declined] FROM monitor_fairness_totals WHERE source_id = $1")
                    .bind(source_id)
                    .fetch_all(&mut *transaction)
                    .await?;
            for (attribute, group, counts) in totals {
                let Some(position) = self.fairness.grouping().position(attribute) else { continue };
                self.fairness.restore_total(partition, position, &group, three(&counts));
            }
            // Counts written before they carried their model ('') belong to no model's window.
            let drift: Vec<(i64, i16, String, Vec<i64>)> = sqlx::query_as(
                "SELECT bucket_ms, series, model_sha256, counts FROM monitor_drift \
                 WHERE source_id = $1 AND bucket_ms >= $2 AND model_sha256 <> ''",
            )
            .bind(source_id)
            .bind(watermark - span)
            .fetch_all(&mut *transaction)
            .await?;
            for (bucket_ms, series, model, counts) in drift {
                let bins: Vec<u64> = counts.iter().map(|count| (*count).max(0) as u64).collect();
                self.drift.restore_bucket(partition, &model, series as usize, bucket_ms, &bins);
                buckets += 1;
            }
        }
        transaction.commit().await?;
        Ok(buckets)
    }

    /// Re-reads the outcome window of the outcomes topic's `partitions` (stored before `before`),
    /// joined to the decisions of the model `model_sha256`. A row whose protected attributes do
    /// not open is left out and counted, never the reason to give up on the others.
    pub async fn rebuild_outcomes(
        &self,
        audit: AuditReader<'_>,
        topic: &str,
        partitions: &[i32],
        before: DateTime<Utc>,
        model_sha256: &str,
        window_seconds: i64,
    ) -> Result<OutcomeRebuild, MonitorError> {
        let mut rows = sqlx::query(
            "SELECT o.source_partition, o.observed_at, o.defaulted, a.outcome = 0, a.probability_of_default,
                    a.sex_status, a.age_in_years, a.foreign_worker, a.application_id, a.protected_sealed
             FROM loan_outcomes o
             JOIN application_decisions a ON a.application_key = application_key(o.application_id) AND a.model_sha256 = $4
             WHERE o.source_topic = $1 AND o.source_partition = ANY($2) AND o.written_at < $3
               AND o.observed_at >= (SELECT max(observed_at) FROM loan_outcomes WHERE source_topic = $1 AND source_partition = ANY($2))
                                    - make_interval(secs => $5)",
        )
        .bind(topic)
        .bind(partitions)
        .bind(before)
        .bind(model_sha256)
        .bind(window_seconds as f64)
        .fetch(audit.pool);
        let mut rebuild = OutcomeRebuild::default();
        while let Some(row) = rows.try_next().await? {
            let observed: DateTime<Utc> = row.get(1);
            let protected = match StoredProtected::from_row(&row)?.open(audit.keys) {
                Ok((_, protected)) => protected,
                Err(error) => {
                    rebuild.unopenable += 1;
                    rebuild.first_error.get_or_insert(error);
                    continue;
                }
            };
            self.outcomes.record(&LabelledDecision {
                partition: row.get(0),
                observed_millis: observed.timestamp_millis(),
                defaulted: row.get(2),
                approved: row.get(3),
                probability_of_default: row.get(4),
                protected,
            });
            rebuild.rows += 1;
        }
        Ok(rebuild)
    }
}
