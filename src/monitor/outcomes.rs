//! Delayed outcomes: observed defaults joined to past decisions, giving per protected group
//! the true-positive rate among good payers (approval rate of those who repaid; equal
//! opportunity difference against the reference group) and a rolling AUC of the score.
//!
//! Label maturity is explicit: outcomes arrive long after decisions, so the report carries how
//! many decisions of the fairness window have a matched outcome (`label_coverage`) and the
//! outcome windows run over the outcomes' own observation time.

use serde::Serialize;

use super::calibration::{calibration, Calibration};
use super::stats::{parity_difference, wilson, Estimate};
use super::window::{Counts, RollingWindow};
use crate::domain::{GroupingConfig, ProtectedAttributes, UNKNOWN};

/// Score bins for the rolling AUC (ties within a bin count one half).
pub const AUC_BINS: usize = 200;

/// AUC from score histograms of defaulted (`positives`) and repaid (`negatives`) applications
/// over the same ascending bins: P(score of a default > score of a repayment), ties one half.
pub fn auc_from_histograms(positives: &[u64], negatives: &[u64]) -> Option<f64> {
    let total_positive: u64 = positives.iter().sum();
    let total_negative: u64 = negatives.iter().sum();
    if total_positive == 0 || total_negative == 0 {
        return None;
    }
    let mut negatives_below = 0.0;
    let mut concordant = 0.0;
    for (positive, negative) in positives.iter().zip(negatives) {
        concordant += *positive as f64 * (negatives_below + 0.5 * *negative as f64);
        negatives_below += *negative as f64;
    }
    Some(concordant / (total_positive as f64 * total_negative as f64))
}

pub(super) fn score_bin(probability: f64) -> usize {
    ((probability.clamp(0.0, 1.0) * AUC_BINS as f64) as usize).min(AUC_BINS - 1)
}

/// Attribute index used for the whole population in the AUC keys.
const ALL: usize = usize::MAX;

/// One decided application's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledDecision {
    pub partition: i32,
    pub observed_millis: i64,
    pub approved: bool,
    pub defaulted: bool,
    pub probability_of_default: f64,
    pub protected: ProtectedAttributes,
}

/// Outcome windows of one replica.
pub struct OutcomeMonitor {
    grouping: GroupingConfig,
    min_group_size: u64,
    /// (partition, attribute, group) → good payers / approved good payers.
    good_payers: RollingWindow<(i32, usize, String)>,
    /// (partition, attribute or ALL, group, defaulted, score bin) → count.
    scores: RollingWindow<(i32, usize, String, bool, usize)>,
}

/// Per group figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeGroup {
    pub group: String,
    pub labelled: u64,
    pub good_payers: u64,
    pub approved_good_payers: u64,
    /// Approval rate among good payers (true-positive rate of "creditworthy").
    pub true_positive_rate: Option<Estimate>,
    /// TPR − reference group's TPR (`None` for the reference or below the minimum group size).
    pub equal_opportunity_difference: Option<Estimate>,
    pub auc: Option<f64>,
}

/// Per attribute figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeAttribute {
    pub attribute: String,
    pub reference_group: String,
    pub groups: Vec<OutcomeGroup>,
}

/// Outcome report over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeSnapshot {
    pub window_seconds: i64,
    pub labelled: u64,
    pub auc: Option<f64>,
    /// Expected against observed default rate by score decile, everyone.
    pub calibration: Calibration,
    pub attributes: Vec<OutcomeAttribute>,
}

impl OutcomeMonitor {
    /// Windows of `bucket_count` buckets of `bucket_millis` over observation time.
    pub fn new(grouping: GroupingConfig, min_group_size: u64, bucket_millis: i64, bucket_count: i64) -> Self {
        Self {
            grouping,
            min_group_size,
            good_payers: RollingWindow::new(bucket_millis, bucket_count),
            scores: RollingWindow::new(bucket_millis, bucket_count),
        }
    }

    /// Counts one labelled decision.
    pub fn record(&self, labelled: &LabelledDecision) {
        let groups = self.grouping.classify(&labelled.protected);
        let bin = score_bin(labelled.probability_of_default);
        let at = labelled.observed_millis;
        let partition = labelled.partition;
        let one = Counts::one(false);
        self.scores.add((partition, ALL, String::new(), labelled.defaulted, bin), at, one);
        for (attribute, group) in groups.into_iter().enumerate() {
            self.scores.add((partition, attribute, group.clone(), labelled.defaulted, bin), at, one);
            if !labelled.defaulted {
                self.good_payers.add((partition, attribute, group), at, Counts::one(labelled.approved));
            }
        }
    }

    /// Drops the contribution of `partitions` (of the outcomes topic).
    pub fn forget_partitions(&self, partitions: &[i32]) {
        self.good_payers.forget(|(partition, ..)| partitions.contains(partition));
        self.scores.forget(|(partition, ..)| partitions.contains(partition));
    }

    /// Drops every labelled decision: they were joined to the decisions of a model that is no
    /// longer the active one (a rebuild joins the active model's only, too).
    pub fn forget_all(&self) {
        self.good_payers.forget(|_| true);
        self.scores.forget(|_| true);
    }

    /// Current figures.
    pub fn snapshot(&self) -> OutcomeSnapshot {
        let mut histograms: std::collections::HashMap<(usize, String), [Vec<u64>; 2]> = Default::default();
        for ((_, attribute, group, defaulted, bin), counts) in self.scores.window() {
            let entry = histograms.entry((attribute, group)).or_insert_with(|| [vec![0; AUC_BINS], vec![0; AUC_BINS]]);
            entry[usize::from(defaulted)][bin] += counts.total;
        }
        let auc_of = |key: &(usize, String)| {
            histograms.get(key).and_then(|[repaid, defaulted]| auc_from_histograms(defaulted, repaid))
        };
        let labelled_of = |key: &(usize, String)| {
            histograms.get(key).map_or(0, |[repaid, defaulted]| repaid.iter().chain(defaulted).sum::<u64>())
        };
        let mut good: std::collections::HashMap<(usize, String), Counts> = Default::default();
        for ((_, attribute, group), counts) in self.good_payers.window() {
            let entry = good.entry((attribute, group)).or_default();
            entry.total += counts.total;
            entry.hits += counts.hits;
        }
        let all = (ALL, String::new());
        let attributes = self
            .grouping
            .attributes()
            .into_iter()
            .enumerate()
            .map(|(index, attribute)| {
                let reference = self.grouping.reference(&attribute);
                let reference_counts = good.get(&(index, reference.clone())).copied().unwrap_or_default();
                let mut names = self.grouping.groups(&attribute);
                if histograms.contains_key(&(index, UNKNOWN.to_owned())) {
                    names.push(UNKNOWN.to_owned());
                }
                let groups = names
                    .into_iter()
                    .map(|group| {
                        let key = (index, group.clone());
                        let counts = good.get(&key).copied().unwrap_or_default();
                        let comparable = group != reference
                            && counts.total >= self.min_group_size
                            && reference_counts.total >= self.min_group_size;
                        OutcomeGroup {
                            labelled: labelled_of(&key),
                            good_payers: counts.total,
                            approved_good_payers: counts.hits,
                            true_positive_rate: wilson(counts.hits, counts.total),
                            equal_opportunity_difference: comparable
                                .then(|| {
                                    parity_difference(
                                        (counts.hits, counts.total),
                                        (reference_counts.hits, reference_counts.total),
                                    )
                                })
                                .flatten(),
                            auc: auc_of(&key),
                            group,
                        }
                    })
                    .collect();
                OutcomeAttribute { attribute, reference_group: reference, groups }
            })
            .collect();
        OutcomeSnapshot {
            window_seconds: self.scores.span_millis() / 1000,
            labelled: labelled_of(&all),
            auc: auc_of(&all),
            calibration: match histograms.get(&all) {
                Some([repaid, defaulted]) => calibration(defaulted, repaid),
                None => calibration(&[], &[]),
            },
            attributes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::stats::roc_auc;

    /// With one score per bin the binned AUC equals the exact rank AUC; ties in a bin count one half.
    #[test]
    fn binned_auc_matches_exact_auc() {
        let scores = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06];
        let labels = [0.0, 1.0, 0.0, 0.0, 1.0, 1.0];
        let mut positives = vec![0; AUC_BINS];
        let mut negatives = vec![0; AUC_BINS];
        for (score, label) in scores.iter().zip(labels) {
            if label > 0.5 {
                positives[score_bin(*score)] += 1
            } else {
                negatives[score_bin(*score)] += 1
            }
        }
        let exact = roc_auc(&scores, &labels.map(|label| label as f32));
        assert!((auc_from_histograms(&positives, &negatives).unwrap() - exact).abs() < 1e-12);
        assert_eq!(auc_from_histograms(&[1, 0], &[1, 0]), Some(0.5), "all tied");
        assert_eq!(auc_from_histograms(&[0, 2], &[2, 0]), Some(1.0));
        assert_eq!(auc_from_histograms(&[0, 0], &[2, 0]), None);
    }

    fn labelled(sex: &str, approved: bool, defaulted: bool, probability: f64) -> LabelledDecision {
        LabelledDecision {
            partition: 0,
            observed_millis: 0,
            approved,
            defaulted,
            probability_of_default: probability,
            protected: ProtectedAttributes {
                personal_status_and_sex: Some(format!("{sex} : single").into()),
                age_in_years: Some(40),
                foreign_worker: Some("no".into()),
            },
        }
    }

    /// Hand-computed equal opportunity: good-paying women approved 1/2, men 2/2 → TPR 0.5 vs 1,
    /// difference −0.5; defaulters do not count; AUC over everyone.
    #[test]
    fn equal_opportunity_and_auc() {
        let monitor = OutcomeMonitor::new(GroupingConfig::default(), 2, 1000, 10);
        monitor.record(&labelled("female", true, false, 0.1));
        monitor.record(&labelled("female", false, false, 0.4));
        monitor.record(&labelled("female", false, true, 0.9));
        monitor.record(&labelled("male", true, false, 0.2));
        monitor.record(&labelled("male", true, false, 0.3));
        let snapshot = monitor.snapshot();
        assert_eq!(snapshot.labelled, 5);
        assert_eq!(snapshot.auc, Some(1.0));
        let sex = &snapshot.attributes[0];
        let women = sex.groups.iter().find(|group| group.group == "female").unwrap();
        assert_eq!((women.good_payers, women.approved_good_payers, women.labelled), (2, 1, 3));
        assert_eq!(women.equal_opportunity_difference.unwrap().value, -0.5);
        let men = sex.groups.iter().find(|group| group.group == "male").unwrap();
        assert_eq!(men.equal_opportunity_difference, None, "reference group");
        assert_eq!(men.auc, None, "no defaulters among men");
    }
}
