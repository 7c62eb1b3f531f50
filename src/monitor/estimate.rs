//! Label-free performance estimate (pure), in the manner of confidence-based performance
//! estimation: if the scores are calibrated, a decision with probability of default `p` defaults
//! with probability `p`. Over the decisions of the window that gives, before any label arrives:
//!
//! - the expected default rate, `Σ p / n`;
//! - the expected AUC: expected concordant (default, repayment) pairs over expected pairs,
//!   `Σ_{i,j} p_i (1 − p_j) [s_i > s_j] (ties ½) / (Σ p · Σ (1 − p))`, from the window's score
//!   histogram (bin centres stand for the scores);
//! - a 95% interval for the AUC that labels would realise: Hanley–McNeil's standard error with
//!   the expected numbers of defaults and repayments.
//!
//! Once labels mature, the realised AUC and default rate (`outcomes`) are compared with these.

use serde::Serialize;

use super::stats::{Estimate, Z_95};

/// What the scores alone say about performance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpectedPerformance {
    /// Decisions in the window.
    pub decisions: u64,
    pub expected_default_rate: Option<f64>,
    pub expected_auc: Option<Estimate>,
}

/// The estimate from `counts`, decisions per equal-width score bin over `[0, 1]`.
pub fn expected_performance(counts: &[u64]) -> ExpectedPerformance {
    let bins = counts.len().max(1) as f64;
    let decisions: u64 = counts.iter().sum();
    let centre = |bin: usize| (bin as f64 + 0.5) / bins;
    let (mut positives, mut negatives) = (0.0, 0.0);
    let mut negatives_below = 0.0;
    let mut concordant = 0.0;
    for (bin, count) in counts.iter().enumerate() {
        let count = *count as f64;
        let (positive, negative) = (count * centre(bin), count * (1.0 - centre(bin)));
        concordant += positive * (negatives_below + 0.5 * negative);
        negatives_below += negative;
        positives += positive;
        negatives += negative;
    }
    let expected_default_rate = (decisions > 0).then(|| positives / decisions as f64);
    let expected_auc = (positives >= 1.0 && negatives >= 1.0).then(|| {
        let auc = concordant / (positives * negatives);
        let (q1, q2) = (auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc));
        let variance =
            (auc * (1.0 - auc) + (positives - 1.0) * (q1 - auc * auc) + (negatives - 1.0) * (q2 - auc * auc))
                / (positives * negatives);
        let half = Z_95 * variance.max(0.0).sqrt();
        Estimate { value: auc, lower: (auc - half).max(0.0), upper: (auc + half).min(1.0) }
    });
    ExpectedPerformance { decisions, expected_default_rate, expected_auc }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::monitor::roc_auc;

    /// Labels drawn from the scores themselves: the realised AUC falls inside the expected
    /// AUC's 95% interval in about 95 of 100 draws, and the default rate matches.
    #[test]
    fn labels_drawn_from_the_scores_realise_the_estimate() {
        let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let scores: Vec<f64> =
            (0..1000).map(|_| (random.gen::<f64>().powi(2) * 200.0).floor() / 200.0 + 0.0025).collect();
        let mut counts = vec![0_u64; 200];
        for score in &scores {
            counts[(score * 200.0) as usize] += 1;
        }
        let estimate = expected_performance(&counts);
        let auc = estimate.expected_auc.unwrap();
        let mut inside = 0;
        for _ in 0..100 {
            let labels: Vec<f32> = scores.iter().map(|p| if random.gen::<f64>() < *p { 1.0 } else { 0.0 }).collect();
            let realised = roc_auc(&scores, &labels);
            inside += usize::from(auc.lower <= realised && realised <= auc.upper);
        }
        assert!((88..=100).contains(&inside), "{inside} of 100 inside {auc:?}");
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        assert!((estimate.expected_default_rate.unwrap() - mean).abs() < 1e-9);
        assert_eq!(estimate.decisions, 1000);
    }

    /// No decisions, or scores that say nobody defaults: no AUC to expect.
    #[test]
    fn empty_and_degenerate_windows() {
        assert_eq!(expected_performance(&[0; 200]).expected_auc, None);
        assert_eq!(expected_performance(&[0; 200]).expected_default_rate, None);
        let mut only_safe = vec![0; 200];
        only_safe[0] = 100;
        assert_eq!(expected_performance(&only_safe).expected_auc, None, "0.25 expected defaults");
    }
}
