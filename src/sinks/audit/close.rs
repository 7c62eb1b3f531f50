//! The statement that closes a batch's audit transaction, in one round trip: the new rows'
//! claims on their applications, the monitors' counts of them added to the persisted buckets
//! and totals, and every source partition's chain head, audited-through and announced-through
//! offsets and event watermark (never moved backwards).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::BucketCounts;
use crate::sinks::SinkError;

/// New claims, one per new row: (application key, source id, chain position, processed at).
#[derive(Default)]
pub struct NewClaims {
    pub keys: Vec<[u8; 16]>,
    pub sources: Vec<i32>,
    pub seqs: Vec<i64>,
    pub processed_at: Vec<DateTime<Utc>>,
}

/// One source partition's chain head and progress, as locked and then moved by the batch.
pub struct Head {
    pub id: i32,
    pub last_seq: i64,
    pub last_hash: [u8; 32],
    pub through: i64,
    pub announced: i64,
}

/// A claim that exists already fails the statement with SQLSTATE 23505 (the batch is then
/// written again, looking its applications up first).
const CLOSE: &str = "WITH claims AS ( \
       INSERT INTO decided_applications (application_key, source_id, chain_seq, processed_at) \
       SELECT * FROM unnest($1::bytea[], $2::int[], $3::int8[], $4::timestamptz[])), \
     fairness AS ( \
       INSERT INTO monitor_fairness (source_id, bucket_ms, attribute, grp, approved, reviewed, declined) \
       SELECT * FROM unnest($5::int[], $6::int8[], $7::int2[], $8::text[], $9::int8[], $10::int8[], $11::int8[]) \
       ON CONFLICT (source_id, bucket_ms, attribute, grp) DO UPDATE SET \
         approved = monitor_fairness.approved + EXCLUDED.approved, \
         reviewed = monitor_fairness.reviewed + EXCLUDED.reviewed, \
         declined = monitor_fairness.declined + EXCLUDED.declined), \
     totals AS ( \
       INSERT INTO monitor_fairness_totals (source_id, attribute, grp, approved, reviewed, declined) \
       SELECT * FROM unnest($12::int[], $13::int2[], $14::text[], $15::int8[], $16::int8[], $17::int8[]) \
       ON CONFLICT (source_id, attribute, grp) DO UPDATE SET \
         approved = monitor_fairness_totals.approved + EXCLUDED.approved, \
         reviewed = monitor_fairness_totals.reviewed + EXCLUDED.reviewed, \
         declined = monitor_fairness_totals.declined + EXCLUDED.declined), \
     drift AS ( \
       INSERT INTO monitor_drift (source_id, bucket_ms, series, model_sha256, counts) \
       SELECT s, b, series, model, ($23::int8[])[first:last] \
       FROM unnest($18::int[], $19::int8[], $20::int2[], $21::int4[], $22::int4[], $24::text[]) \
         AS v(s, b, series, first, last, model) \
       ON CONFLICT (source_id, bucket_ms, series, model_sha256) DO UPDATE SET counts = ARRAY( \
         SELECT coalesce(old, 0) + coalesce(new, 0) \
         FROM unnest(monitor_drift.counts, EXCLUDED.counts) WITH ORDINALITY AS t(old, new, bin) ORDER BY bin)) \
     UPDATE source_partitions AS s SET chain_last_seq = v.last_seq, chain_last_hash = v.last_hash, \
       audited_through = GREATEST(s.audited_through, v.through), \
       announced_through = GREATEST(s.announced_through, v.announced), \
       event_watermark_ms = GREATEST(s.event_watermark_ms, v.watermark), updated_at = now() \
     FROM unnest($25::int[], $26::int8[], $27::bytea[], $28::int8[], $29::int8[], $30::int8[]) \
       AS v(id, last_seq, last_hash, through, watermark, announced) \
     WHERE s.source_id = v.id";

/// Runs the closing statement in the caller's transaction (partitions of `counts` mapped to
/// source ids by `sources`).
pub async fn close(
    connection: &mut PgConnection,
    claims: &NewClaims,
    counts: &BucketCounts,
    heads: &[&Head],
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
    let mut drift: BTreeMap<(i32, i64, i16, &str), Vec<i64>> = BTreeMap::new();
    for count in &counts.drift {
        let Some(source_id) = source(count.partition) else { continue };
        let bins = drift.entry((source_id, count.bucket_ms, count.series, &count.model_sha256)).or_default();
        bins.resize(bins.len().max(count.counts.len()), 0);
        for (bin, value) in bins.iter_mut().zip(&count.counts) {
            *bin += value;
        }
    }
    let (mut first, mut last, mut flat) = (Vec::new(), Vec::new(), Vec::new());
    for bins in drift.values() {
        first.push(flat.len() as i32 + 1);
        flat.extend_from_slice(bins);
        last.push(flat.len() as i32);
    }
    let watermark = |source_id: i32| {
        counts
            .watermarks
            .iter()
            .filter(|(partition, _)| sources.get(partition) == Some(&source_id))
            .map(|(_, millis)| *millis)
            .max()
    };
    let column = |index: usize| fairness.values().map(|counts| counts[index]).collect::<Vec<i64>>();
    let total = |index: usize| totals.values().map(|counts| counts[index]).collect::<Vec<i64>>();
    sqlx::query(CLOSE)
        .bind(claims.keys.iter().map(|key| &key[..]).collect::<Vec<_>>())
        .bind(&claims.sources)
        .bind(&claims.seqs)
        .bind(&claims.processed_at)
        .bind(fairness.keys().map(|key| key.0).collect::<Vec<_>>())
        .bind(fairness.keys().map(|key| key.1).collect::<Vec<_>>())
        .bind(fairness.keys().map(|key| key.2).collect::<Vec<_>>())
        .bind(fairness.keys().map(|key| key.3).collect::<Vec<_>>())
        .bind(column(0))
        .bind(column(1))
        .bind(column(2))
        .bind(totals.keys().map(|key| key.0).collect::<Vec<_>>())
        .bind(totals.keys().map(|key| key.1).collect::<Vec<_>>())
        .bind(totals.keys().map(|key| key.2).collect::<Vec<_>>())
        .bind(total(0))
        .bind(total(1))
        .bind(total(2))
        .bind(drift.keys().map(|key| key.0).collect::<Vec<_>>())
        .bind(drift.keys().map(|key| key.1).collect::<Vec<_>>())
        .bind(drift.keys().map(|key| key.2).collect::<Vec<_>>())
        .bind(&first)
        .bind(&last)
        .bind(&flat)
        .bind(drift.keys().map(|key| key.3).collect::<Vec<_>>())
        .bind(heads.iter().map(|head| head.id).collect::<Vec<_>>())
        .bind(heads.iter().map(|head| head.last_seq).collect::<Vec<_>>())
        .bind(heads.iter().map(|head| &head.last_hash[..]).collect::<Vec<_>>())
        .bind(heads.iter().map(|head| head.through).collect::<Vec<_>>())
        .bind(heads.iter().map(|head| watermark(head.id)).collect::<Vec<_>>())
        .bind(heads.iter().map(|head| head.announced).collect::<Vec<_>>())
        .execute(&mut *connection)
        .await?;
    Ok(())
}
