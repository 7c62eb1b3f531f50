//! The model card: the contract between training and serving (features, encodings,
//! validation ranges, cutoffs, metrics and training histograms for drift checks).

use serde::{Deserialize, Serialize};

use crate::domain::{Cutoffs, FeatureSpec};

/// Everything the worker needs to know about a model besides its trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Model family name.
    pub model_name: String,
    /// Version, also the directory name under `models/`.
    pub version: String,
    /// LightGBM text model file, relative to the model directory.
    pub model_file: String,
    /// sha256 of `model_file`, checked at load.
    pub model_sha256: String,
    /// What the score means.
    pub target: String,
    /// Ordered model inputs: position `i` is column `i` of the feature vector.
    pub features: Vec<FeatureSpec>,
    /// Attributes deliberately kept out of the features.
    pub excluded_protected_attributes: Vec<String>,
    /// Default decision cutoffs (config may override).
    pub cutoffs: Cutoffs,
    /// Evaluation figures.
    pub metrics: TrainingMetrics,
    /// Data and parameters the model was trained with.
    pub training: TrainingProvenance,
    /// Training distributions, for PSI drift checks.
    pub histograms: TrainingHistograms,
    /// Training median of each feature, card order: numeric reason directions compare against it.
    pub feature_medians: Vec<f64>,
    /// Adverse-action reason catalogue, relative to the model directory.
    pub reason_codes_file: String,
    /// sha256 of `reason_codes_file`, checked at load.
    pub reason_codes_sha256: String,
}

/// Evaluation figures recorded at training time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingMetrics {
    /// ROC AUC of this model on the stratified holdout.
    pub holdout_auc: f64,
    /// Mean ROC AUC of 5-fold stratified cross-validation over the whole data set, same parameters.
    pub cv5_auc_mean: f64,
    /// Per-fold AUCs.
    pub cv5_auc_folds: Vec<f64>,
    /// Rows used to fit this model.
    pub train_rows: usize,
    /// Rows held out.
    pub holdout_rows: usize,
    /// Share of defaults ("bad") in the whole data set.
    pub default_rate: f64,
}

/// Provenance of the training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingProvenance {
    /// Data set citation.
    pub dataset: String,
    /// Licence of the data set.
    pub dataset_license: String,
    /// sha256 of the CSV file trained on.
    pub dataset_sha256: String,
    /// Seed for the split and for LightGBM.
    pub seed: u64,
    /// LightGBM parameters.
    pub lightgbm_parameters: serde_json::Value,
}

/// Training-time histograms (same binning the worker uses at run time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingHistograms {
    /// One per feature, in feature order.
    pub features: Vec<Histogram>,
    /// Predicted probability of default on the training rows.
    pub score: Histogram,
}

/// Counts per bin. Numeric: `edges` are the inner cut points (bin `i` holds
/// `edges[i-1] <= x < edges[i]`), so there are `edges.len() + 1` bins. Categorical: no edges,
/// one bin per category code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Histogram {
    /// Feature name (or `score`).
    pub name: String,
    /// Inner cut points, ascending.
    pub edges: Vec<f64>,
    /// Count per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Bin of `value`: by cut points for numeric histograms, by code for categorical ones.
    pub fn bin_of(&self, value: f64) -> usize {
        if self.edges.is_empty() {
            return (value.max(0.0) as usize).min(self.counts.len().saturating_sub(1));
        }
        self.edges.partition_point(|edge| *edge <= value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values land in the bin whose half-open interval holds them; codes map to their own bin.
    #[test]
    fn bins_are_half_open_and_codes_are_direct() {
        let numeric = Histogram { name: "x".into(), edges: vec![1.0, 2.0], counts: vec![0; 3] };
        let cases = [(0.5, 0), (1.0, 1), (1.5, 1), (2.0, 2), (99.0, 2)];
        for (value, bin) in cases {
            assert_eq!(numeric.bin_of(value), bin, "{value}");
        }
        let categorical = Histogram { name: "c".into(), edges: vec![], counts: vec![0; 4] };
        assert_eq!(categorical.bin_of(2.0), 2);
        assert_eq!(categorical.bin_of(7.0), 3);
    }
}
