//! What the monitors persist with each batch: the batch's new decisions as per-bucket counts
//! (fairness per attribute and group, drift per series and bin), computed exactly as the
//! in-memory windows count them, so a rebuild from the persisted counts gives the same windows.

use std::collections::BTreeMap;

use super::Monitoring;
use crate::domain::{outcome_code, AuditRow, BucketCounts, DriftCount, FairnessCount};

impl Monitoring {
    /// The counts `rows` add (pure).
    pub fn bucket_counts(&self, rows: &[&AuditRow]) -> BucketCounts {
        let width = self.fairness.bucket_millis();
        let mut fairness: BTreeMap<(i32, i64, i16, String), [i64; 3]> = BTreeMap::new();
        let mut drift: BTreeMap<(i32, i64, i16, &str), Vec<i64>> = BTreeMap::new();
        let mut watermarks: BTreeMap<i32, i64> = BTreeMap::new();
        for row in rows {
            let event_millis = row.event_time.timestamp_millis();
            let bucket_ms = event_millis.div_euclid(width) * width;
            let partition = row.source_partition;
            let outcome = outcome_code(row.outcome) as usize;
            for (attribute, group) in self.fairness.grouping().classify(&row.protected).into_iter().enumerate() {
                fairness.entry((partition, bucket_ms, attribute as i16, group)).or_default()[outcome] += 1;
            }
            let model = row.policy.model_sha256.as_str();
            for (series, bin, bins) in self.drift.bins(model, &row.inputs, row.probability_of_default) {
                let counts = drift.entry((partition, bucket_ms, series as i16, model)).or_insert_with(|| vec![0; bins]);
                if let Some(count) = counts.get_mut(bin) {
                    *count += 1;
                }
            }
            let watermark = watermarks.entry(partition).or_insert(event_millis);
            *watermark = (*watermark).max(event_millis);
        }
        BucketCounts {
            fairness: fairness
                .into_iter()
                .map(|((partition, bucket_ms, attribute, group), counts)| FairnessCount {
                    partition,
                    bucket_ms,
                    attribute,
                    group,
                    counts,
                })
                .collect(),
            drift: drift
                .into_iter()
                .map(|((partition, bucket_ms, series, model), counts)| DriftCount {
                    partition,
                    bucket_ms,
                    series,
                    model_sha256: model.to_owned(),
                    counts,
                })
                .collect(),
            watermarks: watermarks.into_iter().collect(),
        }
    }

    /// Counts one new, durable decision in the windows and the fleet-wide counters.
    pub fn record_row(&self, row: &AuditRow) {
        self.record(
            row.source_partition,
            row.event_time.timestamp_millis(),
            &row.protected,
            row.outcome,
            &row.policy.model_sha256,
            &row.inputs,
            row.probability_of_default,
        );
    }
}
