//! The committed model: verified at load, reproducible from the data, and the worker's fast
//! single-row scoring path equals LightGBM's batch prediction.

mod common;

use common::*;
use credit_devtools::dataset::read_german_credit;
use credit_devtools::train::{train, TrainOptions};
use credit_worker::domain::append_feature_vector;
use credit_worker::domain::DecisionOutcome;
use credit_worker::domain::PROTECTED_ATTRIBUTES;
use credit_worker::model::{ModelBundle, ModelError};
use credit_worker::model::{Scorer, CONTRIBUTION_TOLERANCE};

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
        reason_codes: repo_root().join("config/reason_codes.toml"),
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
        append_feature_vector(&bundle.card.features, &row.credit_request.view(), &mut matrix).unwrap();
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
    for file in ["model.txt", "model_card.json", "reason_codes.toml"] {
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

    std::fs::write(&card_path, &card).unwrap();
    let catalogue_path = directory.path().join("reason_codes.toml");
    let catalogue = std::fs::read_to_string(&catalogue_path).unwrap();
    std::fs::write(&catalogue_path, catalogue.replace("Status of checking account", "Checking account")).unwrap();
    let error = ModelBundle::load(directory.path()).unwrap_err();
    assert!(matches!(error, ModelError::CatalogueHashMismatch { .. }), "{error}");
    assert!(error.to_string().contains("refusing a changed catalogue"), "{error}");
}

/// For every row of the data set, LightGBM's TreeSHAP contributions (one per feature, then the
/// bias) sum to the raw score; reasons from a batch call equal those from a single-row call; at
/// most four are given, each a feature that raised the score; no protected attribute appears;
/// and every decline has at least one reason.
#[test]
fn contributions_sum_to_raw_scores_and_reasons_are_stable() {
    let bundle = ModelBundle::load(&model_dir()).unwrap();
    let (card, catalogue) = (&bundle.card, &bundle.catalogue);
    let mut matrix = Vec::new();
    for row in read_german_credit(&data_path()).unwrap() {
        append_feature_vector(&card.features, &row.credit_request.view(), &mut matrix).unwrap();
    }
    let width = card.features.len();
    let scorer = Scorer::new(&bundle.model_text).unwrap();
    let contributions = scorer.contributions(&matrix).unwrap();
    let booster = lightgbm3::Booster::from_string(&bundle.model_text).unwrap();
    let raw = booster.raw_scores_with_params(&matrix, width as i32, true, "num_threads=1").unwrap();
    assert_eq!(contributions.len(), 1000 * (width + 1));
    let (mut declines, mut samples) = (0, Vec::new());
    for (index, row) in matrix.chunks_exact(width).enumerate() {
        let values = &contributions[index * (width + 1)..(index + 1) * (width + 1)];
        let sum: f64 = values.iter().sum();
        assert!((sum - raw[index]).abs() < 1e-9, "row {index}: contributions sum {sum}, raw score {}", raw[index]);
        let reasons = catalogue.reasons(&card.features, row, values, &card.feature_medians);
        let single = scorer.contributions(row).unwrap();
        assert_eq!(reasons, catalogue.reasons(&card.features, row, &single, &card.feature_medians), "row {index}");
        assert!(reasons.len() <= 4);
        for reason in &reasons {
            assert!(reason.contribution > catalogue.min_contribution, "row {index}: {reason:?}");
            assert!(!PROTECTED_ATTRIBUTES.contains(&reason.feature.as_str()), "row {index}: {reason:?}");
        }
        if card.cutoffs.decide(scorer.score_row(row).unwrap()) == DecisionOutcome::Decline {
            declines += 1;
            assert!(!reasons.is_empty(), "decline without reasons, row {index}");
            if samples.len() < 3 {
                let codes: Vec<String> =
                    reasons.iter().map(|r| format!("{} {} ({:+.3})", r.code, r.text, r.contribution)).collect();
                samples.push(format!("row {index}: {}", codes.join("; ")));
            }
        }
    }
    assert!(declines > 100, "{declines} declines");
    println!("{declines} declines, all with reasons; samples:\n{}", samples.join("\n"));
}

/// The compiled trees stand in for LightGBM on every row of the data set, for both committed
/// models: probabilities identical bit for bit, TreeSHAP contributions within the tolerance, and
/// the same reasons in the same order.
#[test]
fn compiled_trees_reproduce_lightgbm_on_the_data_set() {
    let rows = read_german_credit(&data_path()).unwrap();
    for version in ["credit-v1", "credit-v2"] {
        let bundle = ModelBundle::load(&model_dir().parent().unwrap().join(version)).unwrap();
        let (card, catalogue) = (&bundle.card, &bundle.catalogue);
        let scorer = Scorer::new(&bundle.model_text).unwrap();
        assert_eq!(scorer.implementation(), "compiled", "{version}");
        let mut matrix = Vec::new();
        for row in &rows {
            append_feature_vector(&card.features, &row.credit_request.view(), &mut matrix).unwrap();
        }
        let width = card.features.len();
        let compiled = scorer.contributions(&matrix).unwrap();
        let reference = scorer.reference_contributions(&matrix).unwrap();
        let mut largest_difference = 0.0f64;
        for (index, row) in matrix.chunks_exact(width).enumerate() {
            let (ours, theirs) = (scorer.score_row(row).unwrap(), scorer.reference_score_row(row).unwrap());
            assert_eq!(ours.to_bits(), theirs.to_bits(), "{version} row {index}: {ours} vs {theirs}");
            let ours = &compiled[index * (width + 1)..(index + 1) * (width + 1)];
            let theirs = &reference[index * (width + 1)..(index + 1) * (width + 1)];
            for (a, b) in ours.iter().zip(theirs) {
                largest_difference = largest_difference.max((a - b).abs());
            }
            let codes = |values: &[f64]| -> Vec<String> {
                catalogue
                    .reasons(&card.features, row, values, &card.feature_medians)
                    .into_iter()
                    .map(|r| r.code)
                    .collect()
            };
            assert_eq!(codes(ours), codes(theirs), "{version} row {index}");
        }
        assert!(largest_difference <= CONTRIBUTION_TOLERANCE, "{version}: {largest_difference}");
        println!(
            "{version}: 1000 rows, probabilities identical, largest contribution difference {largest_difference:e}"
        );
    }
}
