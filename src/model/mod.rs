//! Models: versioned directories holding a LightGBM text model, its model card and its reason
//! catalogue ([`ModelBundle`]); compiled trees for scoring and TreeSHAP; scoring threads; and
//! the lifecycle of the active, previous and shadow models.

mod bundle;
mod card;
mod lifecycle;
mod pool;
mod scorer;
mod trees;

use std::path::PathBuf;

use crate::error::{Retriable, Retry};

pub use bundle::{sha256_hex, ModelBundle};
pub use card::{Histogram, ModelCard, TrainingHistograms, TrainingMetrics, TrainingProvenance};
pub(crate) use lifecycle::{LoadedModel, ModelManager};
pub use lifecycle::{ModelRef, ModelStatus};
pub use scorer::{ScoredRows, Scorer, CONTRIBUTION_TOLERANCE};

/// File name of the model card inside a model directory.
pub const MODEL_CARD_FILE: &str = "model_card.json";

/// File name of the reason-code catalogue inside a model directory.
pub const REASON_CODES_FILE: &str = "reason_codes.toml";

/// Why a model cannot be loaded, compiled, changed or run.
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
    #[error("reason catalogue {path}: {reason}")]
    Catalogue { path: PathBuf, reason: String },
    #[error("model card has {medians} feature medians for {features} features")]
    Medians { medians: usize, features: usize },
    #[error("objective `{0}` is not binary with a sigmoid")]
    UnsupportedObjective(String),
    #[error("tree {tree}: {reason}")]
    UnsupportedTree { tree: usize, reason: String },
    #[error("model text has no trees")]
    NoTrees,
    #[error("a scoring thread failed to start")]
    ScorerThread,
    #[error("scoring pool has shut down")]
    PoolClosed,
    #[error("scoring thread panicked")]
    ScorerPanicked,
    #[error("LightGBM: {0}")]
    LightGbm(#[from] lightgbm3::Error),
    #[error("model version `{0}` is not a plain directory name (letters, digits, '.', '_', '-')")]
    InvalidVersion(String),
    #[error("model `{version}` cannot be used: {source}")]
    Load { version: String, source: Box<ModelError> },
    #[error("model `{version}` has features {theirs:?}, the serving pipeline maps {ours:?}: deploy it with a restart")]
    Incompatible { version: String, ours: Vec<String>, theirs: Vec<String> },
    #[error("model `{version}`: cutoffs: {reason}")]
    Cutoffs { version: String, reason: String },
    #[error("there is no previous model to roll back to")]
    NoPrevious,
    #[error("loading the model was interrupted")]
    Interrupted,
}

impl Retriable for ModelError {
    /// A model that cannot be loaded stays unusable; only an interrupted load may succeed again.
    fn retry(&self) -> Retry {
        match self {
            Self::Interrupted => Retry::Conflict,
            _ => Retry::Never,
        }
    }
}
