//! Rolling fairness gauges: approval rates per protected group over an event-time window and
//! all time, with disparate-impact ratios and parity differences against each attribute's
//! reference group, each with a 95% interval, or "insufficient data" below a minimum group size.

use std::collections::HashMap;

use serde::Serialize;

use super::stats::{disparate_impact, parity_difference, wilson, Estimate};
use super::window::{Counts, RollingWindow};
use crate::domain::{GroupingConfig, UNKNOWN};

/// (source partition, attribute index, group): partition in the key lets a revoked
/// partition's contribution be dropped, so replicas' gauges add up.
type Key = (i32, usize, String);

/// In-memory fairness windows of one replica.
pub struct FairnessMonitor {
    grouping: GroupingConfig,
    min_group_size: u64,
    window: RollingWindow<Key>,
}

/// Whether a comparison could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComparisonStatus {
    Ok,
    InsufficientData,
    Reference,
}

/// One group's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub decisions: u64,
    pub approvals: u64,
    pub approval_rate: Option<Estimate>,
    pub status: ComparisonStatus,
    pub disparate_impact: Option<Estimate>,
    pub parity_difference: Option<Estimate>,
}

/// One attribute's groups.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributeReport {
    pub attribute: String,
    pub reference_group: String,
    pub groups: Vec<GroupReport>,
}

/// Window and all-time reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FairnessSnapshot {
    pub window_seconds: i64,
    pub watermark_millis: Option<i64>,
    pub min_group_size: u64,
    pub window: Vec<AttributeReport>,
    pub all_time: Vec<AttributeReport>,
}

impl FairnessMonitor {
    /// Windows of `bucket_count` buckets of `bucket_millis`.
    pub fn new(grouping: GroupingConfig, min_group_size: u64, bucket_millis: i64, bucket_count: i64) -> Self {
        Self { grouping, min_group_size, window: RollingWindow::new(bucket_millis, bucket_count) }
    }

    /// Counts one decision.
    #[cfg(test)]
    pub fn record(
        &self,
        partition: i32,
        event_millis: i64,
        protected: &crate::domain::ProtectedAttributes,
        approved: bool,
    ) {
        let counts = if approved { [1, 0, 0] } else { [0, 0, 1] };
        for (attribute, group) in self.grouping.classify(protected).iter().enumerate() {
            self.add(partition, attribute, group, event_millis, counts);
        }
    }

    /// Counts `counts` (`[approve, review, decline]`) of `partition`'s `attribute`/`group` at
    /// `event_millis`, in the window and all-time.
    pub fn add(&self, partition: i32, attribute: usize, group: &str, event_millis: i64, counts: [u64; 3]) {
        let counts = Counts { total: counts.iter().sum(), hits: counts[0] };
        self.window.add((partition, attribute, group.to_owned()), event_millis, counts);
    }

    /// Restores one persisted bucket of `partition`'s `attribute`/`group` (`[approve, review, decline]`).
    pub fn restore_bucket(&self, partition: i32, attribute: usize, group: &str, bucket_ms: i64, counts: [u64; 3]) {
        let counts = Counts { total: counts.iter().sum(), hits: counts[0] };
        self.window.add_bucket((partition, attribute, group.to_owned()), bucket_ms, counts);
    }

    /// Restores the all-time counts of `partition`'s `attribute`/`group`.
    pub fn restore_total(&self, partition: i32, attribute: usize, group: &str, counts: [u64; 3]) {
        let counts = Counts { total: counts.iter().sum(), hits: counts[0] };
        self.window.add_total((partition, attribute, group.to_owned()), counts);
    }

    /// Restores a persisted watermark.
    pub fn restore_watermark(&self, event_millis: i64) {
        self.window.advance_watermark(event_millis);
    }

    /// The configured grouping.
    pub fn grouping(&self) -> &GroupingConfig {
        &self.grouping
    }

    /// Bucket width in milliseconds.
    pub fn bucket_millis(&self) -> i64 {
        self.window.bucket_millis()
    }

    /// Drops the contribution of `partitions` (revoked from this replica).
    pub fn forget_partitions(&self, partitions: &[i32]) {
        self.window.forget(|(partition, _, _)| partitions.contains(partition));
    }

    /// Current figures.
    pub fn snapshot(&self) -> FairnessSnapshot {
        FairnessSnapshot {
            window_seconds: self.window.span_millis() / 1000,
            watermark_millis: self.window.watermark_millis(),
            min_group_size: self.min_group_size,
            window: self.report(self.window.window()),
            all_time: self.report(self.window.totals()),
        }
    }

    fn report(&self, counts: HashMap<Key, Counts>) -> Vec<AttributeReport> {
        let mut by_group: HashMap<(usize, String), Counts> = HashMap::new();
        for ((_, attribute, group), counts) in counts {
            let entry = by_group.entry((attribute, group)).or_default();
            entry.total += counts.total;
            entry.hits += counts.hits;
        }
        attribute_reports(&self.grouping, self.min_group_size, &by_group)
    }
}

/// Every attribute's groups compared with its reference group, from decisions (`total`) and
/// approvals (`hits`) per (attribute index, group) (pure; the monitors and the report share it).
pub fn attribute_reports(
    grouping: &GroupingConfig,
    min_group_size: u64,
    by_group: &HashMap<(usize, String), Counts>,
) -> Vec<AttributeReport> {
    grouping
        .attributes()
        .into_iter()
        .enumerate()
        .map(|(index, attribute)| {
            let reference = grouping.reference(&attribute);
            let count = |group: &str| by_group.get(&(index, group.to_owned())).copied().unwrap_or_default();
            let reference_counts = count(&reference);
            let mut names = grouping.groups(&attribute);
            if by_group.contains_key(&(index, UNKNOWN.to_owned())) {
                names.push(UNKNOWN.to_owned());
            }
            let groups = names
                .into_iter()
                .map(|group| compare(min_group_size, &group, &reference, count(&group), reference_counts))
                .collect();
            AttributeReport { attribute, reference_group: reference, groups }
        })
        .collect()
}

fn compare(min_group_size: u64, group: &str, reference: &str, counts: Counts, reference_counts: Counts) -> GroupReport {
    let mut report = GroupReport {
        group: group.to_owned(),
        decisions: counts.total,
        approvals: counts.hits,
        approval_rate: wilson(counts.hits, counts.total),
        status: ComparisonStatus::Reference,
        disparate_impact: None,
        parity_difference: None,
    };
    if group == reference {
        return report;
    }
    if counts.total < min_group_size || reference_counts.total < min_group_size {
        report.status = ComparisonStatus::InsufficientData;
        return report;
    }
    let pair = ((counts.hits, counts.total), (reference_counts.hits, reference_counts.total));
    report.disparate_impact = disparate_impact(pair.0, pair.1);
    report.parity_difference = parity_difference(pair.0, pair.1);
    report.status =
        if report.disparate_impact.is_some() { ComparisonStatus::Ok } else { ComparisonStatus::InsufficientData };
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProtectedAttributes;

    fn person(sex: &str, age: i32) -> ProtectedAttributes {
        ProtectedAttributes {
            personal_status_and_sex: Some(format!("{sex} : single").into()),
            age_in_years: Some(age),
            foreign_worker: Some("no".into()),
        }
    }

    fn group<'a>(snapshot: &'a [AttributeReport], attribute: &str, name: &str) -> &'a GroupReport {
        let report = snapshot.iter().find(|report| report.attribute == attribute).unwrap();
        report.groups.iter().find(|group| group.group == name).unwrap()
    }

    /// Hand-computed rates and ratio: women 2/4 approved, men 4/4 → DI 0.5, parity −0.5;
    /// with a minimum group size of 5 the same data is "insufficient data".
    #[test]
    fn rates_ratios_and_minimum_group_size() {
        let monitor = FairnessMonitor::new(GroupingConfig::default(), 4, 1000, 60);
        for (index, approved) in [true, true, false, false].into_iter().enumerate() {
            monitor.record(0, index as i64, &person("female", 30), approved);
        }
        for index in 0..4 {
            monitor.record(1, index, &person("male", 30), true);
        }
        let snapshot = monitor.snapshot();
        let women = group(&snapshot.window, "sex", "female");
        assert_eq!((women.decisions, women.approvals, women.status), (4, 2, ComparisonStatus::Ok));
        assert_eq!(women.disparate_impact.unwrap().value, 0.5);
        assert_eq!(women.parity_difference.unwrap().value, -0.5);
        assert_eq!(group(&snapshot.window, "sex", "male").status, ComparisonStatus::Reference);
        let young = group(&snapshot.window, "age_band", "<=25");
        assert_eq!((young.decisions, young.status), (0, ComparisonStatus::InsufficientData), "empty group");

        let strict = FairnessMonitor::new(GroupingConfig::default(), 5, 1000, 60);
        strict.record(0, 0, &person("female", 30), true);
        let women = group(&strict.snapshot().window, "sex", "female").clone();
        assert_eq!(women.status, ComparisonStatus::InsufficientData);
        assert_eq!(women.disparate_impact, None);
    }

    /// Only one group present: the other side is insufficient, never a division by zero;
    /// forgetting a partition removes its decisions; old events leave the window, not the totals.
    #[test]
    fn one_group_forgetting_and_expiry() {
        let monitor = FairnessMonitor::new(GroupingConfig::default(), 1, 1000, 2);
        monitor.record(3, 0, &person("female", 22), false);
        let snapshot = monitor.snapshot();
        assert_eq!(group(&snapshot.window, "sex", "female").status, ComparisonStatus::InsufficientData);
        monitor.record(4, 5000, &person("male", 40), true);
        let snapshot = monitor.snapshot();
        assert_eq!(group(&snapshot.window, "sex", "female").decisions, 0, "expired from the window");
        assert_eq!(group(&snapshot.all_time, "sex", "female").decisions, 1);
        monitor.forget_partitions(&[4]);
        assert_eq!(group(&monitor.snapshot().all_time, "sex", "male").decisions, 0);
    }
}
