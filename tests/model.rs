//! The committed model: verified at load, reproducible from the data, and the worker's fast
//! single-row scoring path equals LightGBM's batch prediction.

mod common;

use common::*;
use credit_worker::dataset::read_german_credit;
use credit_worker::features::append_feature_vector;
use credit_worker::model::scorer::Scorer;
use credit_worker::model::train::{train, TrainOptions};
use credit_worker::model::{ModelBundle, ModelError, PROTECTED_ATTRIBUTES};

/// Training again with the same data and seed writes a byte-identical model (same sha256 as the
/// committed one), with AUCs in the expected range and no protected attribute among the features.
#[test]
fn training_is_deterministic_and_reproduces_the_committed_model() {
    let committed = ModelBundle::load(&model_dir()).expect("committed model loads");
    let temporary = tempfile::tempdir().unwrap();
    let report = train(&TrainOptions {
        data: data_path(),
        models_dir: temporary.path().to_owned(),
        version: "credit-v1".into(),
        seed: committed.card.training.seed,
        holdout_fraction: 0.2,
    })
    .unwrap();
    assert_eq!(report.model_sha256, committed.card.model_sha256);
    let retrained = ModelBundle::load(&report.directory).unwrap();
    assert_eq!(retrained.card, committed.card);
    assert!(report.metrics.cv5_auc_mean > 0.74, "cv AUC {}", report.metrics.cv5_auc_mean);
    assert!(report.metrics.holdout_auc > 0.70, "holdout AUC {}", report.metrics.holdout_auc);
    for name in retrained.feature_names() {
        assert!(!PROTECTED_ATTRIBUTES.contains(&name.as_str()), "{name}");
    }
}

/// The fast single-row path used by the worker gives bit-identical probabilities to LightGBM's
/// batch prediction from the model file, for every row of the data set.
#[test]
fn fast_single_row_scoring_equals_lightgbm_batch_prediction() {
    let bundle = ModelBundle::load(&model_dir()).unwrap();
    let mut matrix = Vec::new();
    for row in read_german_credit(&data_path()).unwrap() {
        append_feature_vector(&bundle.card.features, &row.credit_request, &mut matrix).unwrap();
    }
    let width = bundle.card.features.len();
    let scorer = Scorer::new(&bundle.model_text).unwrap();
    let mut fast = Vec::new();
    scorer.score_rows(&matrix, &mut fast).unwrap();
    let booster = lightgbm3::Booster::from_file(model_dir().join("model.txt").to_str().unwrap()).unwrap();
    let batch = booster.predict_with_params(&matrix, width as i32, true, "num_threads=1").unwrap();
    assert_eq!(fast.len(), 1000);
    for (index, (fast, batch)) in fast.iter().zip(&batch).enumerate() {
        assert_eq!(fast.to_bits(), batch.to_bits(), "row {index}");
    }
}

/// A model file that differs from the card's hash, or a card naming a feature the schema
/// does not have, is refused with an error saying so.
#[test]
fn changed_or_incompatible_models_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    for file in ["model.txt", "model_card.json"] {
        std::fs::copy(model_dir().join(file), directory.path().join(file)).unwrap();
    }
    let model_path = directory.path().join("model.txt");
    let text = std::fs::read_to_string(&model_path).unwrap();
    std::fs::write(&model_path, text.replacen("leaf_value=", "leaf_value=1", 1)).unwrap();
    let error = ModelBundle::load(directory.path()).unwrap_err();
    assert!(matches!(error, ModelError::HashMismatch { .. }), "{error}");

    std::fs::write(&model_path, &text).unwrap();
    let card_path = directory.path().join("model_card.json");
    let card = std::fs::read_to_string(&card_path).unwrap();
    std::fs::write(&card_path, card.replace("\"name\": \"telephone\"", "\"name\": \"age_in_years\"")).unwrap();
    let error = ModelBundle::load(directory.path()).unwrap_err();
    assert!(matches!(error, ModelError::ProtectedFeature(ref name) if name == "age_in_years"), "{error}");
}
