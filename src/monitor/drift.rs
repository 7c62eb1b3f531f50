//! Drift gauges: population stability index (PSI) of every model feature and of the score,
//! over the same event-time windows, against the training histograms in the model card
//! (same bin edges; categorical features by category code).
//!
//! Smoothing: each bin gets a pseudo-count of 0.5 in both distributions before proportions
//! are taken, so empty bins never give infinite PSI (`p_i = (c_i + 0.5) / (N + 0.5·B)`).
//!
//! Sample size: under no drift `PSI · n·M/(n+M)` is approximately χ² with `B − 1` degrees of
//! freedom (n window events, M training rows, B bins). A series is reported only from
//! `min_count` events, and counts as drifted when its PSI exceeds both the configured
//! threshold (0.25 by convention; 0.1 is "watch") and the χ² critical value at α = 0.001,
//! so a handful of events can never raise a drift alert.

use serde::Serialize;

use super::window::{Counts, RollingWindow};
use crate::model::{Histogram, ModelCard};

/// Pseudo-count added to every bin.
pub const PSI_PSEUDO_COUNT: f64 = 0.5;

/// Upper 0.001 quantile of the standard normal.
const Z_999: f64 = 3.090_232_306_167_813;

/// Population stability index of `actual` against `expected` counts (same bins).
pub fn psi(expected: &[u64], actual: &[u64]) -> f64 {
    let bins = expected.len() as f64;
    let expected_total = expected.iter().sum::<u64>() as f64 + PSI_PSEUDO_COUNT * bins;
    let actual_total = actual.iter().sum::<u64>() as f64 + PSI_PSEUDO_COUNT * bins;
    expected
        .iter()
        .zip(actual)
        .map(|(e, a)| {
            let p = (*e as f64 + PSI_PSEUDO_COUNT) / expected_total;
            let q = (*a as f64 + PSI_PSEUDO_COUNT) / actual_total;
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// PSI that no-drift sampling noise exceeds with probability 0.001 (Wilson–Hilferty χ²).
pub fn critical_psi(bins: usize, actual_count: u64, expected_count: u64) -> f64 {
    if bins < 2 || actual_count == 0 || expected_count == 0 {
        return f64::INFINITY;
    }
    let k = (bins - 1) as f64;
    let chi_square = k * (1.0 - 2.0 / (9.0 * k) + Z_999 * (2.0 / (9.0 * k)).sqrt()).powi(3);
    chi_square * (1.0 / actual_count as f64 + 1.0 / expected_count as f64)
}

/// One feature's (or the score's) drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesDrift {
    pub name: String,
    pub window_count: u64,
    /// `None` below the minimum count.
    pub psi: Option<f64>,
    pub critical_psi: f64,
    pub drifted: bool,
}

/// Drift of every series over the current window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftSnapshot {
    pub window_seconds: i64,
    pub min_count: u64,
    pub threshold: f64,
    pub series: Vec<SeriesDrift>,
}

/// In-memory drift windows of one replica: (partition, series, bin) counts.
pub struct DriftMonitor {
    histograms: Vec<Histogram>,
    window: RollingWindow<(i32, usize, usize)>,
    min_count: u64,
    threshold: f64,
}

impl DriftMonitor {
    /// Series: the card's feature histograms, then the score histogram.
    pub fn new(card: &ModelCard, min_count: u64, threshold: f64, bucket_millis: i64, bucket_count: i64) -> Self {
        let mut histograms = card.histograms.features.clone();
        histograms.push(card.histograms.score.clone());
        Self { histograms, window: RollingWindow::new(bucket_millis, bucket_count), min_count, threshold }
    }

    /// Counts one scored row (`features` in card order).
    pub fn record(&self, partition: i32, event_millis: i64, features: &[f64], score: f64) {
        let values = features.iter().copied().chain(std::iter::once(score));
        for (series, (histogram, value)) in self.histograms.iter().zip(values).enumerate() {
            self.window.add((partition, series, histogram.bin_of(value)), event_millis, Counts::one(false));
        }
    }

    /// The bin of every series for one row (`features` in card order, then the score).
    pub fn bins(&self, features: &[f64], score: f64) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let values = features.iter().copied().chain(std::iter::once(score)).collect::<Vec<_>>();
        self.histograms
            .iter()
            .enumerate()
            .zip(values)
            .map(|((series, histogram), value)| (series, histogram.bin_of(value), histogram.counts.len()))
    }

    /// Restores one persisted bucket of `partition`'s `series` (counts per bin).
    pub fn restore_bucket(&self, partition: i32, series: usize, bucket_ms: i64, bins: &[u64]) {
        for (bin, count) in bins.iter().enumerate().filter(|(_, count)| **count > 0) {
            self.window.add_bucket((partition, series, bin), bucket_ms, Counts { total: *count, hits: 0 });
        }
    }

    /// Restores a persisted watermark.
    pub fn restore_watermark(&self, event_millis: i64) {
        self.window.advance_watermark(event_millis);
    }

    /// Drops the contribution of `partitions`.
    pub fn forget_partitions(&self, partitions: &[i32]) {
        self.window.forget(|(partition, _, _)| partitions.contains(partition));
    }

    /// PSI per series over the window.
    pub fn snapshot(&self) -> DriftSnapshot {
        let mut actual: Vec<Vec<u64>> = self.histograms.iter().map(|h| vec![0; h.counts.len()]).collect();
        for ((_, series, bin), counts) in self.window.window() {
            actual[series][bin] += counts.total;
        }
        let series = self
            .histograms
            .iter()
            .zip(actual)
            .map(|(histogram, actual)| {
                let window_count: u64 = actual.iter().sum();
                let expected_count: u64 = histogram.counts.iter().sum();
                let critical = critical_psi(histogram.counts.len(), window_count, expected_count);
                let value = (window_count >= self.min_count).then(|| psi(&histogram.counts, &actual));
                SeriesDrift {
                    name: histogram.name.clone(),
                    window_count,
                    psi: value,
                    critical_psi: critical,
                    drifted: value.is_some_and(|psi| psi > self.threshold && psi > critical),
                }
            })
            .collect();
        DriftSnapshot {
            window_seconds: self.window.span_millis() / 1000,
            min_count: self.min_count,
            threshold: self.threshold,
            series,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Identical distributions give 0; a hand-computed two-bin shift; smoothing keeps empty bins finite.
    #[test]
    fn psi_matches_hand_computation() {
        assert_eq!(psi(&[10, 20, 30], &[10, 20, 30]), 0.0);
        // expected (50, 50) → p = (0.5, 0.5); actual (90.5−0.5, 10) → q = (90.5/101, 10.5/101).
        let q1 = 90.5 / 101.0;
        let q2 = 10.5 / 101.0;
        let expected = (q1 - 0.5) * (q1 / 0.5_f64).ln() + (q2 - 0.5) * (q2 / 0.5_f64).ln();
        assert!((psi(&[50, 50], &[90, 10]) - expected).abs() < 1e-12);
        assert!(psi(&[100, 0], &[0, 100]).is_finite());
    }

    /// The critical value shrinks with the sample size and is infinite with no data.
    #[test]
    fn critical_value_depends_on_sample_size() {
        let small = critical_psi(10, 50, 800);
        let large = critical_psi(10, 5000, 800);
        assert!(small > large && large > 0.0);
        assert!(small > 0.25, "50 events can never look drifted: {small}");
        assert_eq!(critical_psi(10, 0, 800), f64::INFINITY);
        // χ²(9) upper 0.001 quantile is 27.88; Wilson–Hilferty is within 1%.
        let chi = critical_psi(10, 1, u64::MAX);
        assert!((chi - 27.877).abs() / 27.877 < 0.01, "{chi}");
    }
}
