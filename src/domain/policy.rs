//! The decision policy a decision is made under: the model (version and sha256), the cutoffs in
//! force, and the reason catalogue with its entries. Audit rows reference it instead of repeating
//! it, and a stored decision is rebuilt from the row and its policy.

use super::decision::Cutoffs;
use super::features::FeatureSpec;
use super::reasons::ReasonCatalogue;

/// One catalogue entry as rows reference it (by its 1-based position).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyReason {
    pub code: String,
    pub feature: String,
    pub text: String,
}

/// Model, cutoffs and catalogue of a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionPolicy {
    pub model_version: String,
    pub model_sha256: String,
    pub cutoffs: Cutoffs,
    pub catalogue_version: String,
    /// Model inputs in card order.
    pub feature_names: Vec<String>,
    /// Catalogue entries; a row's reason `k` is `reasons[k - 1]`.
    pub reasons: Vec<PolicyReason>,
}

impl DecisionPolicy {
    /// The policy of a model card's features and catalogue under `cutoffs`.
    pub fn new(
        model_version: &str,
        model_sha256: &str,
        cutoffs: Cutoffs,
        features: &[FeatureSpec],
        catalogue: &ReasonCatalogue,
    ) -> Self {
        Self {
            model_version: model_version.to_owned(),
            model_sha256: model_sha256.to_owned(),
            cutoffs,
            catalogue_version: catalogue.version.clone(),
            feature_names: features.iter().map(|spec| spec.name.clone()).collect(),
            reasons: catalogue
                .reasons
                .iter()
                .map(|entry| PolicyReason {
                    code: entry.code.clone(),
                    feature: entry.feature.clone(),
                    text: entry.text.clone(),
                })
                .collect(),
        }
    }

    /// Entry `entry` (1-based).
    pub fn reason(&self, entry: i16) -> Option<&PolicyReason> {
        usize::try_from(entry).ok().and_then(|entry| entry.checked_sub(1)).and_then(|index| self.reasons.get(index))
    }
}
