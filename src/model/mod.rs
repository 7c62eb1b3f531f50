//! Models: versioned directories holding a LightGBM text model and its model card.
//! Loading verifies the sha256 and that the model's features match the card and the schema.

pub mod card;
pub mod lifecycle;
pub mod scorer;
pub mod train;
pub mod trees;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::events::CreditRequest;
use crate::reasons::{CatalogueError, ReasonCatalogue};
use card::ModelCard;

/// File name of the model card inside a model directory.
pub const MODEL_CARD_FILE: &str = "model_card.json";

/// File name of the reason-code catalogue inside a model directory.
pub const REASON_CODES_FILE: &str = "reason_codes.toml";

/// Attributes that must never be model features.
pub const PROTECTED_ATTRIBUTES: [&str; 3] = ["personal_status_and_sex", "age_in_years", "foreign_worker"];

/// Why a model directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("model card {path} is invalid: {source}")]
    Card { path: PathBuf, source: serde_json::Error },
    #[error("model file {path} has sha256 {actual}, the model card says {expected}: refusing a changed model")]
    HashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("model features {model:?} differ from the model card's {card:?}")]
    FeatureMismatch { model: Vec<String>, card: Vec<String> },
    #[error("model card feature `{0}` is not a field of the LoanApplication schema's credit_request")]
    NotInSchema(String),
    #[error("model card uses protected attribute `{0}` as a feature")]
    ProtectedFeature(String),
    #[error(
        "reason catalogue {path} has sha256 {actual}, the model card says {expected}: refusing a changed catalogue"
    )]
    CatalogueHashMismatch { path: PathBuf, expected: String, actual: String },
    #[error("reason catalogue {path}: {source}")]
    Catalogue { path: PathBuf, source: CatalogueError },
    #[error("model card has {medians} feature medians for {features} features")]
    Medians { medians: usize, features: usize },
    #[error("a scoring thread failed to start")]
    ScorerThread,
    #[error("LightGBM: {0}")]
    LightGbm(#[from] lightgbm3::Error),
}

/// A verified model: its card, the exact model text and reason catalogue whose hashes the card records.
#[derive(Debug, Clone)]
pub struct ModelBundle {
    pub card: ModelCard,
    pub model_text: String,
    pub catalogue: ReasonCatalogue,
    pub directory: PathBuf,
}

impl ModelBundle {
    /// Loads and verifies the model in `directory`.
    pub fn load(directory: &Path) -> Result<Self, ModelError> {
        let card_path = directory.join(MODEL_CARD_FILE);
        let card_text = read(&card_path)?;
        let card: ModelCard =
            serde_json::from_str(&card_text).map_err(|source| ModelError::Card { path: card_path.clone(), source })?;
        let model_path = directory.join(&card.model_file);
        let model_text = read(&model_path)?;
        let actual = sha256_hex(model_text.as_bytes());
        if actual != card.model_sha256 {
            return Err(ModelError::HashMismatch { path: model_path, expected: card.model_sha256, actual });
        }
        check_card_features(&card)?;
        let catalogue_path = directory.join(&card.reason_codes_file);
        let catalogue_text = read(&catalogue_path)?;
        let actual = sha256_hex(catalogue_text.as_bytes());
        if actual != card.reason_codes_sha256 {
            return Err(ModelError::CatalogueHashMismatch {
                path: catalogue_path,
                expected: card.reason_codes_sha256,
                actual,
            });
        }
        let catalogue = ReasonCatalogue::parse(&catalogue_text, &card.features)
            .map_err(|source| ModelError::Catalogue { path: catalogue_path, source })?;
        if card.feature_medians.len() != card.features.len() {
            return Err(ModelError::Medians { medians: card.feature_medians.len(), features: card.features.len() });
        }
        let bundle = Self { card, model_text, catalogue, directory: directory.to_owned() };
        bundle.check_features()?;
        Ok(bundle)
    }

    /// Feature names in card order.
    pub fn feature_names(&self) -> Vec<String> {
        self.card.features.iter().map(|feature| feature.name.clone()).collect()
    }

    fn check_features(&self) -> Result<(), ModelError> {
        let card = self.feature_names();
        let booster = lightgbm3::Booster::from_string(&self.model_text)?;
        let model = booster.feature_name()?;
        if model != card {
            return Err(ModelError::FeatureMismatch { model, card });
        }
        Ok(())
    }
}

/// The card's features are schema fields and none is a protected attribute.
fn check_card_features(card: &ModelCard) -> Result<(), ModelError> {
    for feature in &card.features {
        let name = &feature.name;
        if PROTECTED_ATTRIBUTES.contains(&name.as_str()) {
            return Err(ModelError::ProtectedFeature(name.clone()));
        }
        if CreditRequest::default().field(name).is_none() {
            return Err(ModelError::NotInSchema(name.clone()));
        }
    }
    Ok(())
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Read { path: path.to_owned(), source })
}
