//! Adverse-action reasons (pure): LightGBM TreeSHAP contributions → at most `max_reasons` codes
//! from a versioned catalogue. A contribution is in log-odds of default; only features that pushed
//! the score up by more than `min_contribution` are reasons. Order: largest contribution first,
//! exact ties by feature position, so the same inputs always give the same reasons.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::events::{AdverseReason, PROTECTED_ATTRIBUTES};
use super::features::{FeatureEncoding, FeatureSpec};
use super::DomainError;

/// Upper bound on reasons per decision (Regulation B: more than four is not helpful).
pub const MAX_REASONS: usize = 4;

/// Which side of the training median a numeric value lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Categorical features: one text whatever the value.
    Any,
    /// Value at or above the training median.
    High,
    /// Value below the training median.
    Low,
}

/// One catalogue entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueEntry {
    /// Model feature the reason explains.
    pub feature: String,
    /// `any` for categorical features, `high`/`low` for numeric ones.
    #[serde(default = "any")]
    pub direction: Direction,
    /// Stable reason code.
    pub code: String,
    /// Plain-language text for the adverse-action notice.
    pub text: String,
}

fn any() -> Direction {
    Direction::Any
}

/// The reason-code catalogue (`reason_codes.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonCatalogue {
    /// Catalogue version, recorded with every decision.
    pub version: String,
    /// Reasons per decision, 1..=4.
    pub max_reasons: usize,
    /// Contributions at or below this (log-odds) are not reasons.
    pub min_contribution: f64,
    /// Entries.
    pub reasons: Vec<CatalogueEntry>,
}

impl ReasonCatalogue {
    /// Checks the catalogue covers exactly `features`, with no protected attribute and no code twice.
    pub fn validate(&self, features: &[FeatureSpec]) -> Result<(), DomainError> {
        if !(1..=MAX_REASONS).contains(&self.max_reasons) {
            return Err(DomainError::CatalogueMaxReasons(self.max_reasons));
        }
        if !(self.min_contribution.is_finite() && self.min_contribution >= 0.0) {
            return Err(DomainError::CatalogueMinContribution(self.min_contribution));
        }
        let mut codes = HashSet::new();
        for entry in &self.reasons {
            if PROTECTED_ATTRIBUTES.contains(&entry.feature.as_str()) {
                return Err(DomainError::CatalogueProtected(entry.feature.clone()));
            }
            let expected = features.iter().find(|spec| spec.name == entry.feature).map(directions);
            if !expected.is_some_and(|directions| directions.contains(&entry.direction)) {
                return Err(DomainError::CatalogueUnexpected(entry.feature.clone()));
            }
            if !codes.insert(entry.code.as_str()) {
                return Err(DomainError::CatalogueDuplicateCode(entry.code.clone()));
            }
        }
        for spec in features {
            for direction in directions(spec) {
                if self.entry(&spec.name, direction).is_none() {
                    return Err(DomainError::CatalogueMissing { feature: spec.name.clone(), direction });
                }
            }
        }
        Ok(())
    }

    fn entry(&self, feature: &str, direction: Direction) -> Option<&CatalogueEntry> {
        self.reasons.iter().find(|entry| entry.feature == feature && entry.direction == direction)
    }

    /// Reasons for one row. `contributions` holds one value per feature then the bias (LightGBM's
    /// layout); `medians[i]` is the training median of numeric feature `i` (ignored otherwise).
    pub fn reasons(
        &self,
        features: &[FeatureSpec],
        row: &[f64],
        contributions: &[f64],
        medians: &[f64],
    ) -> Vec<AdverseReason> {
        let mut candidates: Vec<usize> =
            (0..features.len()).filter(|index| contributions[*index] > self.min_contribution).collect();
        candidates.sort_by(|a, b| contributions[*b].total_cmp(&contributions[*a]).then(a.cmp(b)));
        candidates.truncate(self.max_reasons);
        candidates
            .into_iter()
            .map(|index| {
                let spec = &features[index];
                let direction = match spec.encoding {
                    FeatureEncoding::Categorical { .. } => Direction::Any,
                    FeatureEncoding::Numeric { .. } if row[index] >= medians[index] => Direction::High,
                    FeatureEncoding::Numeric { .. } => Direction::Low,
                };
                let entry = self.entry(&spec.name, direction).expect("validated catalogue covers every feature");
                AdverseReason {
                    code: entry.code.clone(),
                    feature: spec.name.clone(),
                    text: entry.text.clone(),
                    contribution: contributions[index],
                }
            })
            .collect()
    }
}

fn directions(spec: &FeatureSpec) -> Vec<Direction> {
    match spec.encoding {
        FeatureEncoding::Categorical { .. } => vec![Direction::Any],
        FeatureEncoding::Numeric { .. } => vec![Direction::High, Direction::Low],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features() -> Vec<FeatureSpec> {
        vec![
            FeatureSpec { name: "purpose".into(), encoding: FeatureEncoding::Categorical { categories: vec![] } },
            FeatureSpec {
                name: "credit_amount".into(),
                encoding: FeatureEncoding::Numeric { valid_min: 0.0, valid_max: 1e6 },
            },
            FeatureSpec { name: "housing".into(), encoding: FeatureEncoding::Categorical { categories: vec![] } },
        ]
    }

    const CATALOGUE: &str = r#"
        version = "t-1"
        max_reasons = 2
        min_contribution = 0.01
        [[reasons]]
        feature = "purpose"
        code = "P"
        text = "Purpose"
        [[reasons]]
        feature = "credit_amount"
        direction = "high"
        code = "AH"
        text = "Amount too high"
        [[reasons]]
        feature = "credit_amount"
        direction = "low"
        code = "AL"
        text = "Amount"
        [[reasons]]
        feature = "housing"
        code = "H"
        text = "Housing"
    "#;

    fn parse(text: &str, features: &[FeatureSpec]) -> Result<ReasonCatalogue, DomainError> {
        let catalogue: ReasonCatalogue = toml::from_str(text).unwrap();
        catalogue.validate(features).map(|()| catalogue)
    }

    fn codes(reasons: &[AdverseReason]) -> Vec<&str> {
        reasons.iter().map(|reason| reason.code.as_str()).collect()
    }

    /// Largest adverse contributions first, capped at `max_reasons`; negative and near-zero ones
    /// are never reasons; the numeric direction follows the training median.
    #[test]
    fn selects_top_adverse_contributions() {
        let catalogue = parse(CATALOGUE, &features()).unwrap();
        let medians = [0.0, 1000.0, 0.0];
        let reasons = catalogue.reasons(&features(), &[1.0, 5000.0, 0.0], &[0.2, 0.5, 0.3, -1.0], &medians);
        assert_eq!(codes(&reasons), ["AH", "H"]);
        let reasons = catalogue.reasons(&features(), &[1.0, 500.0, 0.0], &[0.2, 0.5, -0.3, -1.0], &medians);
        assert_eq!(codes(&reasons), ["AL", "P"]);
        let reasons = catalogue.reasons(&features(), &[1.0, 500.0, 0.0], &[0.01, -0.5, 0.009, 2.0], &medians);
        assert!(reasons.is_empty(), "at or below min_contribution is not a reason: {reasons:?}");
    }

    /// Exactly equal contributions are ordered by feature position, so reasons never depend on sort
    /// stability or run.
    #[test]
    fn ties_break_by_feature_position() {
        let catalogue = parse(CATALOGUE, &features()).unwrap();
        let reasons = catalogue.reasons(&features(), &[0.0, 0.0, 0.0], &[0.3, 0.1, 0.3, 0.0], &[0.0; 3]);
        assert_eq!(codes(&reasons), ["P", "H"]);
    }

    /// A catalogue naming a protected attribute, missing a direction, or reusing a code is refused.
    #[test]
    fn invalid_catalogues_are_refused() {
        let protected = CATALOGUE.replace("feature = \"housing\"", "feature = \"age_in_years\"");
        assert_eq!(parse(&protected, &features()), Err(DomainError::CatalogueProtected("age_in_years".into())));
        let missing = CATALOGUE.replace("direction = \"low\"", "direction = \"high\"");
        assert_eq!(
            parse(&missing, &features()),
            Err(DomainError::CatalogueMissing { feature: "credit_amount".into(), direction: Direction::Low })
        );
        let duplicate = CATALOGUE.replace("code = \"H\"", "code = \"P\"");
        assert_eq!(parse(&duplicate, &features()), Err(DomainError::CatalogueDuplicateCode("P".into())));
        let too_many = CATALOGUE.replace("max_reasons = 2", "max_reasons = 5");
        assert_eq!(parse(&too_many, &features()), Err(DomainError::CatalogueMaxReasons(5)));
    }
}
