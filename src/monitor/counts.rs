//! What the monitors persist with each batch: the batch's new decisions as per-bucket counts
//! (fairness per attribute and group, drift per series and bin), computed exactly as the
//! in-memory windows count them, so a rebuild from the persisted counts gives the same windows.

use std::collections::BTreeMap;

use super::Monitoring;
use crate::domain::{label, outcome_code, outcome_of, AuditRow, BucketCounts, DriftCount, FairnessCount};

/// One (model, partition, bucket)'s drift counts: (series, count per bin), in the model's order.
type SeriesSlots = Vec<(usize, Vec<i64>)>;

impl Monitoring {
    /// The counts `rows` add (pure).
    pub fn bucket_counts(&self, rows: &[&AuditRow]) -> BucketCounts {
        let width = self.fairness.bucket_millis();
        let grouping = self.fairness.grouping();
        // Counted by group index; each group is named once, below.
        let mut fairness: BTreeMap<(i32, i64, usize, u16), [i64; 3]> = BTreeMap::new();
        let mut groups = Vec::new();
        // One lookup per row (the model's 64 hex digits compared once), then a model's series
        // come in the same order every row: the k-th is counted in slot k.
        let mut drift: BTreeMap<(&str, i32, i64), SeriesSlots> = BTreeMap::new();
        let mut watermarks: BTreeMap<i32, i64> = BTreeMap::new();
        for row in rows {
            let event_millis = row.event_time.timestamp_millis();
            let bucket_ms = event_millis.div_euclid(width) * width;
            let partition = row.source_partition;
            let outcome = outcome_code(row.outcome) as usize;
            grouping.group_indices(&row.protected, &mut groups);
            for (position, group) in groups.iter().enumerate() {
                fairness.entry((partition, bucket_ms, position, *group)).or_default()[outcome] += 1;
            }
            let model = row.policy.model_sha256.as_str();
            let slots = drift.entry((model, partition, bucket_ms)).or_default();
            for (slot, (series, bin, bins)) in
                self.drift.bins(model, &row.inputs, row.probability_of_default).into_iter().enumerate()
            {
                if slot == slots.len() {
                    slots.push((series, vec![0; bins]));
                }
                if let Some(count) = slots[slot].1.get_mut(bin) {
                    *count += 1;
                }
            }
            let watermark = watermarks.entry(partition).or_insert(event_millis);
            *watermark = (*watermark).max(event_millis);
        }
        let labels = grouping.labels();
        let mut drift: Vec<DriftCount> = drift
            .into_iter()
            .flat_map(|((model, partition, bucket_ms), slots)| {
                slots.into_iter().map(move |(series, counts)| DriftCount {
                    partition,
                    bucket_ms,
                    series: series as i16,
                    model_sha256: model.to_owned(),
                    counts,
                })
            })
            .collect();
        drift.sort_unstable_by(|a, b| {
            let key = |count: &DriftCount| (count.partition, count.bucket_ms, count.series);
            key(a).cmp(&key(b)).then_with(|| a.model_sha256.cmp(&b.model_sha256))
        });
        BucketCounts {
            fairness: fairness
                .into_iter()
                .map(|((partition, bucket_ms, position, group), counts)| FairnessCount {
                    partition,
                    bucket_ms,
                    attribute: grouping.code(position),
                    group: label(&labels[position], group).to_owned(),
                    counts,
                })
                .collect(),
            drift,
            watermarks: watermarks.into_iter().collect(),
        }
    }

    /// Counts a batch's new, durable decisions in the windows and the fleet-wide counters, from
    /// the counts its audit transaction persisted (so live windows and rebuilt ones agree).
    pub fn record_counts(&self, counts: &BucketCounts) {
        for (_, watermark) in &counts.watermarks {
            self.fairness.restore_watermark(*watermark);
            self.drift.restore_watermark(*watermark);
        }
        let grouping = self.fairness.grouping();
        let attributes = grouping.attributes();
        for count in &counts.fairness {
            let Some(position) = grouping.position(count.attribute) else { continue };
            let tally = count.counts.map(|value| value.max(0) as u64);
            self.fairness.add(count.partition, position, &count.group, count.bucket_ms, tally);
            let attribute = attributes[position].as_str();
            for (code, value) in tally.into_iter().enumerate().filter(|(_, value)| *value > 0) {
                if let Some(outcome) = outcome_of(code as i16) {
                    self.metrics
                        .fairness_decisions
                        .with_label_values(&[attribute, &count.group, outcome.as_str()])
                        .inc_by(value);
                }
            }
        }
        for count in &counts.drift {
            let bins: Vec<u64> = count.counts.iter().map(|value| (*value).max(0) as u64).collect();
            self.drift.add(count.partition, &count.model_sha256, count.series as usize, count.bucket_ms, &bins);
        }
    }
}
