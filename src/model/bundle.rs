//! Loading a model directory: the card, the exact model text and the reason catalogue whose
//! hashes the card records, checked against each other and against the application schema.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::card::ModelCard;
use super::{ModelError, MODEL_CARD_FILE};
use crate::domain::{CreditRequest, ReasonCatalogue, PROTECTED_ATTRIBUTES};

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
        let catalogue = parse_catalogue(&catalogue_text, &card)
            .map_err(|reason| ModelError::Catalogue { path: catalogue_path, reason })?;
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

/// Parses catalogue TOML and checks it covers exactly the card's features.
pub fn parse_catalogue(text: &str, card: &ModelCard) -> Result<ReasonCatalogue, String> {
    let catalogue: ReasonCatalogue = toml::from_str(text).map_err(|error| error.to_string())?;
    catalogue.validate(&card.features).map_err(|error| error.to_string())?;
    Ok(catalogue)
}
