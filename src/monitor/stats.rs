//! Interval estimates for approval rates and their comparisons (pure).
//!
//! - rate: Wilson score interval;
//! - disparate-impact ratio (group rate / reference rate): Katz log-ratio interval, with a 0.5
//!   continuity correction when a group has no approvals;
//! - statistical parity difference (group rate − reference rate): Newcombe's hybrid score
//!   interval (method 10), built from the two Wilson intervals.

use serde::Serialize;

/// Two-sided 95% normal quantile.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// A point estimate with a 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
}

/// Wilson score interval of `successes` out of `trials` (`None` when `trials` is 0).
pub fn wilson(successes: u64, trials: u64) -> Option<Estimate> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z_95 * Z_95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = Z_95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    Some(Estimate { value: p, lower: (center - half).max(0.0), upper: (center + half).min(1.0) })
}

/// Disparate-impact ratio `rate(group) / rate(reference)` with a Katz log interval
/// (`None` when either group is empty or the reference has no approvals).
pub fn disparate_impact(group: (u64, u64), reference: (u64, u64)) -> Option<Estimate> {
    let ((x1, n1), (x2, n2)) = (group, reference);
    if n1 == 0 || n2 == 0 || x2 == 0 {
        return None;
    }
    let value = (x1 as f64 / n1 as f64) / (x2 as f64 / n2 as f64);
    let corrected = |x: u64, n: u64| if x == 0 { (0.5, n as f64 + 0.5) } else { (x as f64, n as f64) };
    let ((a, b), (c, d)) = (corrected(x1, n1), corrected(x2, n2));
    let standard_error = (1.0 / a - 1.0 / b + 1.0 / c - 1.0 / d).max(0.0).sqrt();
    let center = (a / b) / (c / d);
    Some(Estimate {
        value,
        lower: center * (-Z_95 * standard_error).exp(),
        upper: center * (Z_95 * standard_error).exp(),
    })
}

/// Statistical parity difference `rate(group) − rate(reference)` with Newcombe's hybrid interval.
pub fn parity_difference(group: (u64, u64), reference: (u64, u64)) -> Option<Estimate> {
    let first = wilson(group.0, group.1)?;
    let second = wilson(reference.0, reference.1)?;
    let value = first.value - second.value;
    Some(Estimate {
        value,
        lower: value - ((first.value - first.lower).powi(2) + (second.upper - second.value).powi(2)).sqrt(),
        upper: value + ((first.upper - first.value).powi(2) + (second.value - second.lower).powi(2)).sqrt(),
    })
}

/// ROC AUC by the rank-sum (Mann-Whitney) formula with average ranks for ties.
pub fn roc_auc(scores: &[f64], labels: &[f32]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        let average_rank = (start + end) as f64 / 2.0 + 1.0;
        for position in start..=end {
            ranks[order[position]] = average_rank;
        }
        start = end + 1;
    }
    let positives = labels.iter().filter(|label| **label > 0.5).count() as f64;
    let negatives = labels.len() as f64 - positives;
    let positive_rank_sum: f64 =
        ranks.iter().zip(labels).filter(|(_, label)| **label > 0.5).map(|(rank, _)| rank).sum();
    (positive_rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed AUCs: perfect, inverted, all tied, and one discordant pair of four.
    #[test]
    fn auc_matches_hand_computation() {
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[0.0, 0.0, 1.0, 1.0]), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[0.0, 0.0, 1.0, 1.0]), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &[0.0, 1.0, 0.0, 1.0]), 0.5);
        assert_eq!(roc_auc(&[0.1, 0.7, 0.6, 0.9], &[0.0, 0.0, 1.0, 1.0]), 0.75);
    }

    fn close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    /// Values computed by hand (the formulas above, evaluated independently in Python).
    #[test]
    fn wilson_matches_hand_computation() {
        let estimate = wilson(88, 190).unwrap();
        close(estimate.value, 88.0 / 190.0);
        close(estimate.lower, 0.393_688_183_048_914);
        close(estimate.upper, 0.534_087_845_437_591_7);
        let none = wilson(0, 10).unwrap();
        close(none.lower, 0.0);
        close(none.upper, 0.277_532_799_862_889_2);
        let all = wilson(10, 10).unwrap();
        close(all.lower, 0.722_467_200_137_110_7);
        close(all.upper, 1.0);
        assert_eq!(wilson(0, 0), None);
    }

    /// Katz interval of the German Credit age-band rates (88/190 vs 516/810).
    #[test]
    fn disparate_impact_matches_hand_computation() {
        let estimate = disparate_impact((88, 190), (516, 810)).unwrap();
        close(estimate.value, 0.727_050_183_598_531_1);
        close(estimate.lower, 0.618_518_096_722_111_6);
        close(estimate.upper, 0.854_626_521_474_518_2);
        assert_eq!(disparate_impact((1, 10), (0, 10)), None, "reference without approvals");
        assert_eq!(disparate_impact((1, 0), (1, 10)), None, "empty group");
        let no_approvals = disparate_impact((0, 50), (25, 50)).unwrap();
        assert_eq!(no_approvals.value, 0.0);
        // 0.5 continuity correction: (0.5/50.5)/(25/50), se = sqrt(1/0.5 - 1/50.5 + 1/25 - 1/50).
        close(no_approvals.lower, 0.001_238_420_873_833_967_7);
        close(no_approvals.upper, 0.316_627_753_979_006_94);
    }

    /// Newcombe interval of the same rates.
    #[test]
    fn parity_difference_matches_hand_computation() {
        let estimate = parity_difference((88, 190), (516, 810)).unwrap();
        close(estimate.value, -0.173_879_142_300_194_97);
        close(estimate.lower, -0.250_531_146_846_096_34);
        close(estimate.upper, -0.095_355_008_397_108_4);
        assert_eq!(parity_difference((1, 0), (1, 1)), None);
    }
}
