//! Calibration on matured labels (pure): per decile of the score range, the expected default
//! rate (the mean predicted probability of default) against the observed one, and the expected
//! calibration error, `ECE = Σ n_d / N · |observed_d − expected_d|`. Computed from the outcome
//! window's score histograms, whose bin centres stand for the scores (within half a bin).

use serde::Serialize;

/// Deciles of the score range `[0, 1]`.
pub const DECILES: usize = 10;

/// One decile's figures (`None` without labels in it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationBin {
    pub decile: usize,
    pub labelled: u64,
    pub expected_default_rate: Option<f64>,
    pub observed_default_rate: Option<f64>,
}

/// Every decile, and the expected calibration error over them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub deciles: Vec<CalibrationBin>,
    pub expected_calibration_error: Option<f64>,
}

/// Calibration from histograms over equal-width score bins of defaulted and repaid applications.
pub fn calibration(defaulted: &[u64], repaid: &[u64]) -> Calibration {
    let bins = defaulted.len().max(1);
    let mut sums = [(0_u64, 0_u64, 0.0_f64); DECILES];
    for (bin, (positive, negative)) in defaulted.iter().zip(repaid).enumerate() {
        let centre = (bin as f64 + 0.5) / bins as f64;
        let decile = (bin * DECILES / bins).min(DECILES - 1);
        let labelled = positive + negative;
        sums[decile].0 += labelled;
        sums[decile].1 += positive;
        sums[decile].2 += centre * labelled as f64;
    }
    let total: u64 = sums.iter().map(|(labelled, _, _)| labelled).sum();
    let deciles: Vec<CalibrationBin> = sums
        .iter()
        .enumerate()
        .map(|(decile, (labelled, defaults, expected))| CalibrationBin {
            decile,
            labelled: *labelled,
            expected_default_rate: (*labelled > 0).then(|| expected / *labelled as f64),
            observed_default_rate: (*labelled > 0).then(|| *defaults as f64 / *labelled as f64),
        })
        .collect();
    let error = deciles
        .iter()
        .filter_map(|bin| {
            let gap = (bin.observed_default_rate? - bin.expected_default_rate?).abs();
            Some(bin.labelled as f64 / total as f64 * gap)
        })
        .sum();
    Calibration { deciles, expected_calibration_error: (total > 0).then_some(error) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels drawn at the predicted rates give a small error; a model that predicts 10% where
    /// half default gives an error of 0.4.
    #[test]
    fn calibrated_and_miscalibrated_scores() {
        let mut defaulted = vec![0; 200];
        let mut repaid = vec![0; 200];
        for bin in 0..200 {
            let rate = (bin as f64 + 0.5) / 200.0;
            defaulted[bin] = (1000.0 * rate).round() as u64;
            repaid[bin] = 1000 - defaulted[bin];
        }
        let good = calibration(&defaulted, &repaid);
        assert!(good.expected_calibration_error.unwrap() < 0.001, "{good:?}");
        assert_eq!(good.deciles.len(), DECILES);
        assert!((good.deciles[3].expected_default_rate.unwrap() - 0.35).abs() < 1e-9);

        let mut defaulted = vec![0; 200];
        let mut repaid = vec![0; 200];
        defaulted[20] = 500;
        repaid[20] = 500;
        let bad = calibration(&defaulted, &repaid);
        let error = bad.expected_calibration_error.unwrap();
        assert!((error - (0.5 - 20.5 / 200.0)).abs() < 1e-9, "{error}");
        assert_eq!(bad.deciles[0].labelled, 0);
        assert_eq!(bad.deciles[0].observed_default_rate, None);
        assert_eq!(calibration(&[0; 200], &[0; 200]).expected_calibration_error, None);
    }
}
