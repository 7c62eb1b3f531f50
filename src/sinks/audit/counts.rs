//! The monitors' counts of a batch's new decisions, added to the persisted buckets and totals.

use std::collections::{BTreeMap, HashMap};

use sqlx::PgConnection;

use crate::domain::BucketCounts;
use crate::sinks::SinkError;

/// Adds `counts` (partitions mapped to source ids by `sources`) in the caller's transaction.
pub async fn add(
    connection: &mut PgConnection,
    counts: &BucketCounts,
    sources: &HashMap<i32, i32>,
) -> Result<(), SinkError> {
    let source = |partition: i32| sources.get(&partition).copied();
    let mut fairness: BTreeMap<(i32, i64, i16, &str), [i64; 3]> = BTreeMap::new();
    let mut totals: BTreeMap<(i32, i16, &str), [i64; 3]> = BTreeMap::new();
    for count in &counts.fairness {
        let Some(source_id) = source(count.partition) else { continue };
        let bucket = fairness.entry((source_id, count.bucket_ms, count.attribute, &count.group)).or_default();
        let total = totals.entry((source_id, count.attribute, &count.group)).or_default();
        for index in 0..3 {
            bucket[index] += count.counts[index];
            total[index] += count.counts[index];
        }
    }
    if !fairness.is_empty() {
        let column = |index: usize| fairness.values().map(|counts| counts[index]).collect::<Vec<i64>>();
        sqlx::query(
            "INSERT INTO monitor_fairness (source_id, bucket_ms, attribute, grp, approved, reviewed, declined) \
             SELECT * FROM unnest($1::int[], $2::int8[], $3::int2[], $4::text[], $5::int8[], $6::int8[], $7::int8[]) \
             ON CONFLICT (source_id, bucket_ms, attribute, grp) DO UPDATE SET \
               approved = monitor_fairness.approved + EXCLUDED.approved, \
               reviewed = monitor_fairness.reviewed + EXCLUDED.reviewed, \
               declined = monitor_fairness.declined + EXCLUDED.declined",
        )
        .bind(fairness.keys().map(|key| key.0).collect::<Vec<_>>())
        .bind(fairness.keys().map(|key| key.1).collect::<Vec<_>>())
        .bind(fairness.keys().map(|key| key.2).collect::<Vec<_>>())
        .bind(fairness.keys().map(|key| key.3).collect::<Vec<_>>())
        .bind(column(0))
        .bind(column(1))
        .bind(column(2))
        .execute(&mut *connection)
        .await?;
        let column = |index: usize| totals.values().map(|counts| counts[index]).collect::<Vec<i64>>();
        sqlx::query(
            "INSERT INTO monitor_fairness_totals (source_id, attribute, grp, approved, reviewed, declined) \
             SELECT * FROM unnest($1::int[], $2::int2[], $3::text[], $4::int8[], $5::int8[], $6::int8[]) \
             ON CONFLICT (source_id, attribute, grp) DO UPDATE SET \
               approved = monitor_fairness_totals.approved + EXCLUDED.approved, \
               reviewed = monitor_fairness_totals.reviewed + EXCLUDED.reviewed, \
               declined = monitor_fairness_totals.declined + EXCLUDED.declined",
        )
        .bind(totals.keys().map(|key| key.0).collect::<Vec<_>>())
        .bind(totals.keys().map(|key| key.1).collect::<Vec<_>>())
        .bind(totals.keys().map(|key| key.2).collect::<Vec<_>>())
        .bind(column(0))
        .bind(column(1))
        .bind(column(2))
        .execute(&mut *connection)
        .await?;
    }
    let mut drift: BTreeMap<(i32, i64, i16, &str), Vec<i64>> = BTreeMap::new();
    for count in &counts.drift {
        let Some(source_id) = source(count.partition) else { continue };
        let bins = drift.entry((source_id, count.bucket_ms, count.series, &count.model_sha256)).or_default();
        bins.resize(bins.len().max(count.counts.len()), 0);
        for (bin, value) in bins.iter_mut().zip(&count.counts) {
            *bin += value;
        }
    }
    if !drift.is_empty() {
        let (mut first, mut last, mut flat) = (Vec::new(), Vec::new(), Vec::new());
        for bins in drift.values() {
            first.push(flat.len() as i32 + 1);
            flat.extend_from_slice(bins);
            last.push(flat.len() as i32);
        }
        sqlx::query(
            "INSERT INTO monitor_drift (source_id, bucket_ms, series, model_sha256, counts) \
             SELECT s, b, series, model, ($6::int8[])[first:last] \
             FROM unnest($1::int[], $2::int8[], $3::int2[], $4::int4[], $5::int4[], $7::text[]) AS v(s, b, series, first, last, model) \
             ON CONFLICT (source_id, bucket_ms, series, model_sha256) DO UPDATE SET counts = ARRAY( \
               SELECT coalesce(old, 0) + coalesce(new, 0) \
               FROM unnest(monitor_drift.counts, EXCLUDED.counts) WITH ORDINALITY AS t(old, new, bin) ORDER BY bin)",
        )
        .bind(drift.keys().map(|key| key.0).collect::<Vec<_>>())
        .bind(drift.keys().map(|key| key.1).collect::<Vec<_>>())
        .bind(drift.keys().map(|key| key.2).collect::<Vec<_>>())
        .bind(&first)
        .bind(&last)
        .bind(&flat)
        .bind(drift.keys().map(|key| key.3).collect::<Vec<_>>())
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}
