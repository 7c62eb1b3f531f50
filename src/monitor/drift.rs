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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use super::outcomes::{score_bin, AUC_BINS};
use super::window::{Counts, RollingWindow};
use crate::model::{Histogram, ModelCard};

/// The series of fine score bins ([`AUC_BINS`] over `[0, 1]`) counted beside the drift series,
/// for the label-free performance estimate (persisted and rebuilt like them; PSI ignores it).
pub const SCORE_SERIES: usize = 1000;

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

/// A model's drift baseline: its training histograms, features in card order, then the score.
struct Baseline {
    version: String,
    histograms: Vec<Histogram>,
}

/// The models whose counts a replica holds, by window key, and the active one.
struct Models {
    /// Model hashes by key: every model decided under (or restored) in this replica.
    hashes: Vec<String>,
    /// Baselines of the models loaded in this process, by key.
    baselines: HashMap<u16, Arc<Baseline>>,
    active: u16,
}

impl Models {
    fn key(&self, model_sha256: &str) -> Option<u16> {
        self.hashes.iter().position(|hash| hash == model_sha256).map(|key| key as u16)
    }

    fn key_or_insert(&mut self, model_sha256: &str) -> u16 {
        self.key(model_sha256).unwrap_or_else(|| {
            self.hashes.push(model_sha256.to_owned());
            (self.hashes.len() - 1) as u16
        })
    }
}

/// In-memory drift windows of one replica: (model, partition, series, bin) counts. Each
/// model's decisions are binned with its own histograms and only the active model's window is
/// reported, so a hot swap reports the new model against its own baseline, and a rollback finds
/// the earlier model's window again (as a rebuild from the persisted counts does).
pub struct DriftMonitor {
    models: RwLock<Models>,
    window: RollingWindow<(u16, i32, usize, usize)>,
    min_count: u64,
    threshold: f64,
}

fn baseline(card: &ModelCard) -> Arc<Baseline> {
    let mut histograms = card.histograms.features.clone();
    histograms.push(card.histograms.score.clone());
    Arc::new(Baseline { version: card.version.clone(), histograms })
}

impl DriftMonitor {
    /// Drift against `card`'s training histograms.
    pub fn new(card: &ModelCard, min_count: u64, threshold: f64, bucket_millis: i64, bucket_count: i64) -> Self {
        let models = Models {
            hashes: vec![card.model_sha256.clone()],
            baselines: HashMap::from([(0, baseline(card))]),
            active: 0,
        };
        Self {
            models: RwLock::new(models),
            window: RollingWindow::new(bucket_millis, bucket_count),
            min_count,
            threshold,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Models> {
        self.models.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Models> {
        self.models.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `card`'s model the one reported; returns whether it was another before.
    pub fn follow(&self, card: &ModelCard) -> bool {
        {
            let models = self.read();
            if models.hashes[models.active as usize] == card.model_sha256 {
                return false;
            }
        }
        let mut models = self.write();
        let key = models.key_or_insert(&card.model_sha256);
        models.baselines.entry(key).or_insert_with(|| baseline(card));
        models.active = key;
        true
    }

    /// The reported model's version.
    pub fn model_version(&self) -> String {
        let models = self.read();
        models.baselines.get(&models.active).map(|baseline| baseline.version.clone()).unwrap_or_default()
    }

    /// The key and baseline of a model loaded in this process.
    fn loaded(&self, model_sha256: &str) -> Option<(u16, Arc<Baseline>)> {
        let models = self.read();
        let key = models.key(model_sha256)?;
        Some((key, Arc::clone(models.baselines.get(&key)?)))
    }

    /// Counts one row scored by `model_sha256` (`features` in its card order).
    #[cfg(test)]
    pub fn record(&self, partition: i32, event_millis: i64, model_sha256: &str, features: &[f64], score: f64) {
        let Some((key, baseline)) = self.loaded(model_sha256) else { return };
        let values = features.iter().copied().chain(std::iter::once(score));
        for (series, (histogram, value)) in baseline.histograms.iter().zip(values).enumerate() {
            self.window.add((key, partition, series, histogram.bin_of(value)), event_millis, Counts::one(false));
        }
    }

    /// (series, bin, bins) of every series for one row scored by `model_sha256` (`features` in
    /// its card order, then the score); none for a model not loaded in this process.
    pub fn bins(&self, model_sha256: &str, features: &[f64], score: f64) -> Vec<(usize, usize, usize)> {
        let Some((_, baseline)) = self.loaded(model_sha256) else { return Vec::new() };
        let values = features.iter().copied().chain(std::iter::once(score));
        baseline
            .histograms
            .iter()
            .zip(values)
            .enumerate()
            .map(|(series, (histogram, value))| (series, histogram.bin_of(value), histogram.counts.len()))
            .chain(std::iter::once((SCORE_SERIES, score_bin(score), AUC_BINS)))
            .collect()
    }

    /// Decisions of the reported model per fine score bin over the window.
    pub fn score_histogram(&self) -> Vec<u64> {
        let active = self.read().active;
        let mut counts = vec![0; AUC_BINS];
        for ((model, _, series, bin), window) in self.window.window() {
            if let Some(count) = counts.get_mut(bin).filter(|_| model == active && series == SCORE_SERIES) {
                *count += window.total;
            }
        }
        counts
    }

    /// Counts `bins` (counts per bin) of `partition`'s `series` under `model_sha256` at
    /// `event_millis`, in the window and all-time.
    pub fn add(&self, partition: i32, model_sha256: &str, series: usize, event_millis: i64, bins: &[u64]) {
        let known = self.read().key(model_sha256);
        let key = known.unwrap_or_else(|| self.write().key_or_insert(model_sha256));
        for (bin, count) in bins.iter().enumerate().filter(|(_, count)| **count > 0) {
            self.window.add((key, partition, series, bin), event_millis, Counts { total: *count, hits: 0 });
        }
    }

    /// Restores one persisted bucket of `partition`'s `series` under `model_sha256` (counts per bin).
    pub fn restore_bucket(&self, partition: i32, model_sha256: &str, series: usize, bucket_ms: i64, bins: &[u64]) {
        let key = self.write().key_or_insert(model_sha256);
        for (bin, count) in bins.iter().enumerate().filter(|(_, count)| **count > 0) {
            self.window.add_bucket((key, partition, series, bin), bucket_ms, Counts { total: *count, hits: 0 });
        }
    }

    /// Restores a persisted watermark.
    pub fn restore_watermark(&self, event_millis: i64) {
        self.window.advance_watermark(event_millis);
    }

    /// Drops the contribution of `partitions`.
    pub fn forget_partitions(&self, partitions: &[i32]) {
        self.window.forget(|(_, partition, _, _)| partitions.contains(partition));
    }

    /// PSI per series of the reported model over the window.
    pub fn snapshot(&self) -> DriftSnapshot {
        let (active, histograms) = {
            let models = self.read();
            let histograms = models.baselines.get(&models.active).map(|baseline| baseline.histograms.clone());
            (models.active, histograms.unwrap_or_default())
        };
        let mut actual: Vec<Vec<u64>> = histograms.iter().map(|h| vec![0; h.counts.len()]).collect();
        for ((model, _, series, bin), counts) in self.window.window() {
            if let Some(bin) = actual.get_mut(series).and_then(|bins| bins.get_mut(bin)).filter(|_| model == active) {
                *bin += counts.total;
            }
        }
        let series = histograms
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

    fn card(version: &str) -> ModelCard {
        let text = match version {
            "credit-v1" => include_str!("../../models/credit-v1/model_card.json"),
            _ => include_str!("../../models/credit-v2/model_card.json"),
        };
        serde_json::from_str(text).unwrap()
    }

    fn score_count(monitor: &DriftMonitor) -> u64 {
        monitor.snapshot().series.last().unwrap().window_count
    }

    /// After a swap the new model is reported against its own histograms over its own decisions
    /// (a row of an in-flight batch of the old model does not count in it); a rollback finds the
    /// old model's window again; rows of a model never loaded are not binned.
    #[test]
    fn drift_follows_the_active_model() {
        let (v1, v2) = (card("credit-v1"), card("credit-v2"));
        let monitor = DriftMonitor::new(&v1, 1, 0.25, 60_000, 10);
        let features = vec![0.0; v1.histograms.features.len()];
        for _ in 0..3 {
            monitor.record(0, 1_000, &v1.model_sha256, &features, 0.3);
        }
        assert_eq!((score_count(&monitor), monitor.model_version()), (3, "credit-v1".to_owned()));
        assert!(monitor.follow(&v2) && !monitor.follow(&v2));
        assert_eq!((score_count(&monitor), monitor.model_version()), (0, "credit-v2".to_owned()));
        assert_eq!(monitor.snapshot().series.last().unwrap().name, v2.histograms.score.name);
        monitor.record(1, 2_000, &v2.model_sha256, &features, 0.3);
        monitor.record(1, 2_000, &v2.model_sha256, &features, 0.3);
        monitor.record(1, 2_000, &v1.model_sha256, &features, 0.3);
        monitor.record(1, 2_000, "never-loaded", &features, 0.3);
        assert!(monitor.bins("never-loaded", &features, 0.3).is_empty());
        assert_eq!(score_count(&monitor), 2);
        assert!(monitor.follow(&v1));
        assert_eq!(score_count(&monitor), 4);
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
