//! `train`: fits the LightGBM default model on the German Credit data, deterministically
//! (fixed seed, one thread), without protected attributes, and writes a versioned model directory.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use lightgbm3::{Booster, Dataset};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use credit_worker::domain::PROTECTED_ATTRIBUTES;
use credit_worker::domain::{append_feature_vector, feature_specs, Cutoffs, FeatureEncoding, FeatureSpec};
use credit_worker::model::{sha256_hex, ModelBundle, MODEL_CARD_FILE, REASON_CODES_FILE};
use credit_worker::model::{Histogram, ModelCard, TrainingHistograms, TrainingMetrics, TrainingProvenance};
use credit_worker::monitor::roc_auc;

use crate::dataset::{read_german_credit, LabeledApplication};

/// What to train and where to write it.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// German Credit CSV.
    pub data: PathBuf,
    /// Parent directory of model versions.
    pub models_dir: PathBuf,
    /// Version name; the model goes to `models_dir/version`.
    pub version: String,
    /// Seed for the split, the folds and LightGBM.
    pub seed: u64,
    /// Share of rows held out for the reported AUC.
    pub holdout_fraction: f64,
    /// Reason-code catalogue to package with the model (copied into its directory).
    pub reason_codes: PathBuf,
}

/// Summary of a training run.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub directory: PathBuf,
    pub model_sha256: String,
    pub metrics: TrainingMetrics,
}

const DATASET_CITATION: &str = "Hofmann, H. (1994). Statlog (German Credit Data). UCI Machine Learning Repository. https://doi.org/10.24432/C5NC77";

/// Decision cutoffs written to the model card (the base default rate is 30%).
pub const DEFAULT_CUTOFFS: Cutoffs = Cutoffs { approve_below: 0.30, decline_at_or_above: 0.55 };

fn lightgbm_parameters(seed: u64) -> serde_json::Value {
    json!({
        "objective": "binary",
        "num_iterations": 300,
        "learning_rate": 0.02,
        "num_leaves": 8,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.7,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 2.0,
        "seed": seed,
        "deterministic": true,
        "num_threads": 1,
        "verbosity": -1,
    })
}

/// Trains, evaluates and writes the model directory; the written model is reloaded and verified.
pub fn train(options: &TrainOptions) -> Result<TrainReport> {
    let rows = read_german_credit(&options.data)?;
    let specs = feature_specs();
    ensure!(
        specs.iter().all(|spec| !PROTECTED_ATTRIBUTES.contains(&spec.name.as_str())),
        "a protected attribute is listed as a feature"
    );
    let matrix = FeatureMatrix::build(&specs, &rows)?;
    let parameters = lightgbm_parameters(options.seed);

    let (train_rows, holdout_rows) = stratified_split(&matrix.labels, options.holdout_fraction, options.seed);
    let booster = fit(&matrix, &train_rows, &parameters, &specs)?;
    let holdout_scores = predict(&booster, &matrix, &holdout_rows)?;
    let holdout_auc = roc_auc(&holdout_scores, &select(&matrix.labels, &holdout_rows));

    let mut cv5_auc_folds = Vec::new();
    for fold in stratified_folds(&matrix.labels, 5, options.seed) {
        let fit_rows: Vec<usize> = (0..matrix.labels.len()).filter(|row| !fold.contains(row)).collect();
        let fold_booster = fit(&matrix, &fit_rows, &parameters, &specs)?;
        let scores = predict(&fold_booster, &matrix, &fold)?;
        cv5_auc_folds.push(roc_auc(&scores, &select(&matrix.labels, &fold)));
    }
    let cv5_auc_mean = cv5_auc_folds.iter().sum::<f64>() / cv5_auc_folds.len() as f64;

    let directory = options.models_dir.join(&options.version);
    std::fs::create_dir_all(&directory).with_context(|| format!("creating {}", directory.display()))?;
    let model_file = "model.txt";
    let model_text = booster.save_string()?;
    std::fs::write(directory.join(model_file), &model_text)?;

    let reason_codes = std::fs::read(&options.reason_codes)
        .with_context(|| format!("reading the reason catalogue {}", options.reason_codes.display()))?;
    std::fs::write(directory.join(REASON_CODES_FILE), &reason_codes)?;
    let feature_medians = (0..specs.len()).map(|column| median_of(&matrix, column, &train_rows)).collect();

    let train_scores = predict(&booster, &matrix, &train_rows)?;
    let histograms = TrainingHistograms {
        features: specs
            .iter()
            .enumerate()
            .map(|(column, spec)| feature_histogram(spec, column, &matrix, &train_rows))
            .collect(),
        score: score_histogram(&train_scores),
    };
    let metrics = TrainingMetrics {
        holdout_auc,
        cv5_auc_mean,
        cv5_auc_folds,
        train_rows: train_rows.len(),
        holdout_rows: holdout_rows.len(),
        default_rate: matrix.labels.iter().filter(|label| **label > 0.5).count() as f64 / matrix.labels.len() as f64,
    };
    let card = ModelCard {
        model_name: "german-credit-default-lightgbm".into(),
        version: options.version.clone(),
        model_file: model_file.into(),
        model_sha256: sha256_hex(model_text.as_bytes()),
        target: "probability of default: P(creditability = bad)".into(),
        features: specs,
        excluded_protected_attributes: PROTECTED_ATTRIBUTES.iter().map(|name| (*name).to_owned()).collect(),
        cutoffs: DEFAULT_CUTOFFS,
        metrics: metrics.clone(),
        training: TrainingProvenance {
            dataset: DATASET_CITATION.into(),
            dataset_license: "CC BY 4.0".into(),
            dataset_sha256: sha256_hex(&std::fs::read(&options.data)?),
            seed: options.seed,
            lightgbm_parameters: parameters,
        },
        histograms,
        feature_medians,
        reason_codes_file: REASON_CODES_FILE.into(),
        reason_codes_sha256: sha256_hex(&reason_codes),
    };
    let card_json = serde_json::to_string_pretty(&card)? + "\n";
    std::fs::write(directory.join(MODEL_CARD_FILE), card_json)?;
    ModelBundle::load(&directory).context("verifying the written model")?;
    Ok(TrainReport { directory, model_sha256: card.model_sha256, metrics })
}

/// Row-major feature matrix and labels (1 = default).
struct FeatureMatrix {
    values: Vec<f64>,
    labels: Vec<f32>,
    width: usize,
}

impl FeatureMatrix {
    fn build(specs: &[FeatureSpec], rows: &[LabeledApplication]) -> Result<Self> {
        let mut values = Vec::with_capacity(rows.len() * specs.len());
        for (index, row) in rows.iter().enumerate() {
            append_feature_vector(specs, &row.credit_request.view(), &mut values)
                .with_context(|| format!("data row {}", index + 2))?;
        }
        let labels = rows.iter().map(|row| if row.defaulted { 1.0 } else { 0.0 }).collect();
        Ok(Self { values, labels, width: specs.len() })
    }

    fn rows(&self, indices: &[usize]) -> Vec<f64> {
        indices.iter().flat_map(|row| self.values[row * self.width..(row + 1) * self.width].iter().copied()).collect()
    }
}

fn fit(
    matrix: &FeatureMatrix,
    rows: &[usize],
    parameters: &serde_json::Value,
    specs: &[FeatureSpec],
) -> Result<Booster> {
    let mut dataset =
        Dataset::from_slice(&matrix.rows(rows), &select(&matrix.labels, rows), matrix.width as i32, true)?;
    let names: Vec<String> = specs.iter().map(|spec| spec.name.clone()).collect();
    dataset.set_feature_names(&names)?;
    Ok(Booster::train(dataset, parameters)?)
}

fn predict(booster: &Booster, matrix: &FeatureMatrix, rows: &[usize]) -> Result<Vec<f64>> {
    Ok(booster.predict_with_params(&matrix.rows(rows), matrix.width as i32, true, "num_threads=1")?)
}

fn select<T: Copy>(values: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|row| values[*row]).collect()
}

/// Row indices of each class, shuffled with `seed`.
fn shuffled_by_class(labels: &[f32], seed: u64) -> [Vec<usize>; 2] {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut classes = [Vec::new(), Vec::new()];
    for (row, label) in labels.iter().enumerate() {
        classes[usize::from(*label > 0.5)].push(row);
    }
    for class in &mut classes {
        class.shuffle(&mut rng);
    }
    classes
}

/// Stratified split: (fit rows, holdout rows), both sorted.
fn stratified_split(labels: &[f32], holdout_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let (mut fit_rows, mut holdout) = (Vec::new(), Vec::new());
    for class in shuffled_by_class(labels, seed) {
        let cut = (class.len() as f64 * holdout_fraction).round() as usize;
        holdout.extend_from_slice(&class[..cut]);
        fit_rows.extend_from_slice(&class[cut..]);
    }
    fit_rows.sort_unstable();
    holdout.sort_unstable();
    (fit_rows, holdout)
}

/// Stratified k folds (each sorted).
fn stratified_folds(labels: &[f32], folds: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut result = vec![Vec::new(); folds];
    for class in shuffled_by_class(labels, seed) {
        for (position, row) in class.into_iter().enumerate() {
            result[position % folds].push(row);
        }
    }
    result.iter_mut().for_each(|fold| fold.sort_unstable());
    result
}

/// Numeric: decile cut points of the training values (deduplicated); categorical: one bin per code.
fn feature_histogram(spec: &FeatureSpec, column: usize, matrix: &FeatureMatrix, rows: &[usize]) -> Histogram {
    let values: Vec<f64> = rows.iter().map(|row| matrix.values[row * matrix.width + column]).collect();
    let edges = match &spec.encoding {
        FeatureEncoding::Categorical { .. } => Vec::new(),
        FeatureEncoding::Numeric { .. } => decile_edges(&values),
    };
    let bins = match &spec.encoding {
        FeatureEncoding::Categorical { categories } => categories.len(),
        FeatureEncoding::Numeric { .. } => edges.len() + 1,
    };
    count_into(Histogram { name: spec.name.clone(), edges, counts: vec![0; bins] }, &values)
}

/// Median (lower middle value) of one column over `rows`.
fn median_of(matrix: &FeatureMatrix, column: usize, rows: &[usize]) -> f64 {
    let mut values: Vec<f64> = rows.iter().map(|row| matrix.values[row * matrix.width + column]).collect();
    values.sort_by(f64::total_cmp);
    values[(values.len() - 1) / 2]
}

fn score_histogram(scores: &[f64]) -> Histogram {
    let edges = (1..10).map(|tenth| f64::from(tenth) / 10.0).collect();
    count_into(Histogram { name: "score".into(), edges, counts: vec![0; 10] }, scores)
}

fn count_into(mut histogram: Histogram, values: &[f64]) -> Histogram {
    for value in values {
        let bin = histogram.bin_of(*value);
        histogram.counts[bin] += 1;
    }
    histogram
}

fn decile_edges(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..10).map(|tenth| sorted[(sorted.len() * tenth / 10).min(sorted.len() - 1)]).collect();
    edges.dedup();
    edges.retain(|edge| *edge > sorted[0]);
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split keeps the class ratio, loses no row, and is the same for the same seed.
    #[test]
    fn split_is_stratified_complete_and_deterministic() {
        let labels: Vec<f32> = (0..100).map(|row| if row % 10 < 3 { 1.0 } else { 0.0 }).collect();
        let (fit_rows, holdout) = stratified_split(&labels, 0.2, 7);
        assert_eq!(holdout.len(), 20);
        assert_eq!(holdout.iter().filter(|row| labels[**row] > 0.5).count(), 6);
        let mut all: Vec<usize> = fit_rows.iter().chain(&holdout).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(stratified_split(&labels, 0.2, 7), (fit_rows, holdout));
        let folds = stratified_folds(&labels, 5, 7);
        assert!(folds.iter().all(|fold| fold.len() == 20));
    }
}
