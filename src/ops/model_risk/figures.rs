//! The report's figures from what was read (pure): fairness over the period and per step, drift
//! per model and series, reason codes per group, and the outcome figures.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{GroupingConfig, MonitoringAlert};
use crate::model::ModelCard;
use crate::monitor::{attribute_reports, critical_psi, psi, AttributeReport, Counts, OutcomeSnapshot, SeriesDrift};
use crate::monitor::{expected_performance, ExpectedPerformance, SCORE_SERIES};

/// Most points on a chart over time.
pub const MAX_STEPS: i64 = 24;

/// The model-risk report of one period: `report.json`, and what `report.html` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRiskReport {
    pub generated_at: DateTime<Utc>,
    /// Event-time period, `[from, to)`, widened to whole monitor buckets.
    pub period: Period,
    pub bucket_seconds: i64,
    /// Width of one point over time.
    pub step_seconds: i64,
    pub min_group_size: u64,
    pub disparate_impact_threshold: f64,
    pub psi_threshold: f64,
    pub decisions: DecisionTotals,
    pub models: Vec<ModelUsage>,
    /// Over the whole period (the same figures `/fairness` gives for a window of this period).
    pub fairness: Vec<AttributeReport>,
    pub fairness_over_time: Vec<FairnessStep>,
    pub drift: Vec<ModelDrift>,
    pub reasons: Vec<GroupReasons>,
    pub outcomes: OutcomeFigures,
    /// Alert state changes emitted in the period.
    pub alerts: Vec<MonitoringAlert>,
}

/// `[from, to)` in event time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Decisions of the period by outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DecisionTotals {
    pub total: u64,
    pub approve: u64,
    pub review: u64,
    pub decline: u64,
}

/// A model version that decided in the period.
#[derive(Debug, Clone, Serialize)]
pub struct ModelUsage {
    pub version: String,
    pub sha256: String,
    pub decisions: u64,
    pub first_event: DateTime<Utc>,
    pub last_event: DateTime<Utc>,
}

/// Fairness over one step of the period.
#[derive(Debug, Clone, Serialize)]
pub struct FairnessStep {
    pub start: DateTime<Utc>,
    pub attributes: Vec<AttributeReport>,
}

/// PSI of every series of one model over the period, and what its scores alone say about its
/// performance (the label-free estimate).
#[derive(Debug, Clone, Serialize)]
pub struct ModelDrift {
    pub version: String,
    pub sha256: String,
    pub series: Vec<SeriesDrift>,
    pub expected: ExpectedPerformance,
}

/// Adverse-action reason codes given to one group's declined and referred applications.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReasons {
    pub attribute: String,
    pub group: String,
    pub decisions: u64,
    /// Decisions that carry reasons (declines and reviews).
    pub with_reasons: u64,
    pub codes: Vec<ReasonCount>,
}

/// How often one code was given (any position).
#[derive(Debug, Clone, Serialize)]
pub struct ReasonCount {
    pub code: String,
    pub count: u64,
    /// `count / with_reasons`.
    pub share: f64,
}

/// Equal opportunity and AUC where labels have matured.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeFigures {
    /// Decisions of the period with an observed outcome.
    pub labelled: u64,
    /// `labelled / decisions`.
    pub label_coverage: f64,
    /// Observed default rate of the labelled decisions.
    pub default_rate: Option<f64>,
    pub figures: OutcomeSnapshot,
}

/// One persisted fairness bucket, summed over source partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FairnessBucket {
    pub bucket_ms: i64,
    pub attribute: usize,
    pub group: String,
    /// `[approve, review, decline]`.
    pub counts: [u64; 3],
}

/// The width of one step: whole buckets, at most [`MAX_STEPS`] steps over `span_ms`.
pub fn step_millis(span_ms: i64, bucket_ms: i64) -> i64 {
    let bucket_ms = bucket_ms.max(1);
    let buckets = (span_ms.max(1) + bucket_ms - 1) / bucket_ms;
    ((buckets + MAX_STEPS - 1) / MAX_STEPS).max(1) * bucket_ms
}

/// Fairness over the whole period, and per step of `step_ms` from `from_ms`.
pub fn fairness(
    grouping: &GroupingConfig,
    min_group_size: u64,
    buckets: &[FairnessBucket],
    from_ms: i64,
    step_ms: i64,
) -> (Vec<AttributeReport>, Vec<FairnessStep>) {
    let mut whole: HashMap<(usize, String), Counts> = HashMap::new();
    let mut steps: BTreeMap<i64, HashMap<(usize, String), Counts>> = BTreeMap::new();
    for bucket in buckets {
        let counts = Counts { total: bucket.counts.iter().sum(), hits: bucket.counts[0] };
        let step = (bucket.bucket_ms - from_ms).div_euclid(step_ms.max(1));
        for map in [&mut whole, steps.entry(step).or_default()] {
            let entry = map.entry((bucket.attribute, bucket.group.clone())).or_default();
            entry.total += counts.total;
            entry.hits += counts.hits;
        }
    }
    let over_time = steps
        .into_iter()
        .map(|(step, counts)| FairnessStep {
            start: millis_to_time(from_ms + step * step_ms),
            attributes: attribute_reports(grouping, min_group_size, &counts),
        })
        .collect();
    (attribute_reports(grouping, min_group_size, &whole), over_time)
}

/// Decision totals from the fairness counts of the first attribute (every decision has one
/// group per attribute).
pub fn decision_totals(buckets: &[FairnessBucket]) -> DecisionTotals {
    let mut totals = DecisionTotals::default();
    for bucket in buckets.iter().filter(|bucket| bucket.attribute == 0) {
        totals.approve += bucket.counts[0];
        totals.review += bucket.counts[1];
        totals.decline += bucket.counts[2];
    }
    totals.total = totals.approve + totals.review + totals.decline;
    totals
}

/// PSI per series of `card`'s model from its counts per series and bin over the period.
pub fn drift(card: &ModelCard, counts: &BTreeMap<usize, Vec<u64>>, min_count: u64, threshold: f64) -> ModelDrift {
    let histograms = card.histograms.features.iter().chain(std::iter::once(&card.histograms.score));
    let series = histograms
        .enumerate()
        .map(|(index, histogram)| {
            let actual = counts.get(&index).cloned().unwrap_or_else(|| vec![0; histogram.counts.len()]);
            let window_count: u64 = actual.iter().sum();
            let expected_count: u64 = histogram.counts.iter().sum();
            let critical = critical_psi(histogram.counts.len(), window_count, expected_count);
            let value = (window_count >= min_count && actual.len() == histogram.counts.len())
                .then(|| psi(&histogram.counts, &actual));
            SeriesDrift {
                name: histogram.name.clone(),
                window_count,
                psi: value,
                critical_psi: critical,
                drifted: value.is_some_and(|psi| psi > threshold && psi > critical),
            }
        })
        .collect();
    let scores = counts.get(&SCORE_SERIES).cloned().unwrap_or_default();
    ModelDrift {
        version: card.version.clone(),
        sha256: card.model_sha256.clone(),
        series,
        expected: expected_performance(&scores),
    }
}

/// One group's decisions, those with reasons, and the count per code.
type GroupTally = (u64, u64, BTreeMap<String, u64>);

/// Reason codes counted per (attribute, group).
#[derive(Debug, Default)]
pub struct ReasonTally {
    /// (attribute index, group) → its tally.
    groups: BTreeMap<(usize, String), GroupTally>,
}

impl ReasonTally {
    /// Counts one decision of `groups` (one per attribute) with reason `codes`.
    pub fn add(&mut self, groups: &[String], codes: &[&str]) {
        for (attribute, group) in groups.iter().enumerate() {
            let entry = self.groups.entry((attribute, group.clone())).or_default();
            entry.0 += 1;
            if !codes.is_empty() {
                entry.1 += 1;
            }
            for code in codes {
                *entry.2.entry((*code).to_owned()).or_default() += 1;
            }
        }
    }

    /// Every group's codes, most frequent first; `attributes` names the positions.
    pub fn finish(self, attributes: &[String]) -> Vec<GroupReasons> {
        self.groups
            .into_iter()
            .map(|((attribute, group), (decisions, with_reasons, codes))| {
                let mut codes: Vec<ReasonCount> = codes
                    .into_iter()
                    .map(|(code, count)| ReasonCount { code, count, share: count as f64 / with_reasons.max(1) as f64 })
                    .collect();
                codes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
                GroupReasons {
                    attribute: attributes.get(attribute).cloned().unwrap_or_default(),
                    group,
                    decisions,
                    with_reasons,
                    codes,
                }
            })
            .collect()
    }
}

/// The time of `millis` since the epoch.
pub fn millis_to_time(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(bucket_ms: i64, attribute: usize, group: &str, counts: [u64; 3]) -> FairnessBucket {
        FairnessBucket { bucket_ms, attribute, group: group.into(), counts }
    }

    /// Steps are whole buckets, and never more than MAX_STEPS of them cover the period.
    #[test]
    fn steps_cover_the_period_in_whole_buckets() {
        assert_eq!(step_millis(3_600_000, 60_000), 180_000);
        assert_eq!(step_millis(60_000, 60_000), 60_000);
        assert_eq!(step_millis(7 * 86_400_000, 60_000) % 60_000, 0);
        assert!(7 * 86_400_000 / step_millis(7 * 86_400_000, 60_000) <= MAX_STEPS);
    }

    /// The period's figures are the sums of its buckets; each step holds its own buckets only.
    #[test]
    fn period_and_steps_sum_their_buckets() {
        let grouping = GroupingConfig::default();
        let buckets = vec![
            bucket(0, 0, "male", [40, 0, 10]),
            bucket(0, 0, "female", [20, 5, 25]),
            bucket(60_000, 0, "male", [30, 0, 20]),
            bucket(60_000, 0, "female", [10, 0, 40]),
        ];
        let (whole, steps) = fairness(&grouping, 30, &buckets, 0, 60_000);
        let sex = &whole[0];
        let female = sex.groups.iter().find(|group| group.group == "female").unwrap();
        assert_eq!((female.decisions, female.approvals), (100, 30));
        let ratio = female.disparate_impact.unwrap().value;
        assert!((ratio - 0.3 / 0.7).abs() < 1e-12);
        assert_eq!(steps.len(), 2);
        let first = steps[0].attributes[0].groups.iter().find(|group| group.group == "female").unwrap();
        assert_eq!((first.decisions, first.approvals), (50, 20));
        let totals = decision_totals(&buckets);
        assert_eq!((totals.total, totals.approve, totals.review, totals.decline), (200, 100, 5, 95));
    }

    /// Reason shares are of the group's decisions that carry reasons, most frequent code first.
    #[test]
    fn reasons_are_counted_per_group() {
        let mut tally = ReasonTally::default();
        let groups = ["female".to_owned(), "<=25".to_owned(), "no".to_owned()];
        tally.add(&groups, &["R1", "R2"]);
        tally.add(&groups, &["R2"]);
        tally.add(&groups, &[]);
        let reasons = tally.finish(&GroupingConfig::default().attributes());
        let sex = reasons.iter().find(|group| group.attribute == "sex").unwrap();
        assert_eq!((sex.decisions, sex.with_reasons), (3, 2));
        assert_eq!(sex.codes[0].code, "R2");
        assert_eq!(sex.codes[0].share, 1.0);
        assert_eq!(sex.codes[1].share, 0.5);
    }
}
