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
                if self.position(&spec.name, direction).is_none() {
                    return Err(DomainError::CatalogueMissing { feature: spec.name.clone(), direction });
                }
            }
        }
        Ok(())
    }

    /// The position in `self.reasons` of the entry for `feature` in `direction`.
    fn position(&self, feature: &str, direction: Direction) -> Option<usize> {
        self.reasons.iter().position(|entry| entry.feature == feature && entry.direction == direction)
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
        self.choose(features, row, contributions, medians)
            .map(|(position, contribution)| {
                let entry = &self.reasons[position];
                AdverseReason {
                    code: entry.code.clone(),
                    feature: entry.feature.clone(),
                    text: entry.text.clone(),
                    contribution,
                }
            })
            .collect()
    }

    /// [`ReasonCatalogue::reasons`] without allocating: each reason as the position of its entry
    /// in `self.reasons`, with the feature's contribution, principal first.
    pub fn choose<'s>(
        &'s self,
        features: &'s [FeatureSpec],
        row: &'s [f64],
        contributions: &'s [f64],
        medians: &'s [f64],
    ) -> impl Iterator<Item = (usize, f64)> + 's {
        let mut top = [(0usize, 0.0f64); MAX_REASONS];
        let mut chosen = 0;
        let limit = self.max_reasons.min(MAX_REASONS);
        let adverse = contributions.iter().take(features.len()).copied().enumerate();
        for (index, contribution) in adverse.filter(|(_, contribution)| *contribution > self.min_contribution) {
            // Features come in position order: an equal contribution stays behind an earlier one.
            let at = top[..chosen].iter().position(|(_, kept)| contribution.total_cmp(kept).is_gt()).unwrap_or(chosen);
            if at < limit {
                chosen = (chosen + 1).min(limit);
                top.copy_within(at..chosen - 1, at + 1);
                top[at] = (index, contribution);
            }
        }
        top.into_iter().take(chosen).map(move |(index, contribution)| {
            let spec = &features[index];
            let direction = match spec.encoding {
                FeatureEncoding::Categorical { .. } => Direction::Any,
                FeatureEncoding::Numeric { .. } if row[index] >= medians[index] => Direction::High,
                FeatureEncoding::Numeric { .. } => Direction::Low,
            };
            let position = self.position(&spec.name, direction).expect("validated catalogue covers every feature");
            (position, contribution)
        })
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

    proptest::proptest! {
        /// The selection without allocation is the sort it replaces: contributions above the
        /// floor, largest first, ties by feature position, at most `max_reasons`.
        #[test]
        fn choosing_is_sorting_and_truncating(
            picks in proptest::collection::vec(0usize..6, 3),
            max_reasons in 1usize..=4,
        ) {
            let values = [0.5, 0.2, 0.2, 0.01, -1.0, f64::NAN];
            let contributions: Vec<f64> = picks.iter().map(|pick| values[*pick]).chain([0.0]).collect();
            let mut catalogue = parse(CATALOGUE, &features()).unwrap();
            catalogue.max_reasons = max_reasons;
            let mut expected: Vec<usize> = (0..3).filter(|index| contributions[*index] > 0.01).collect();
            expected.sort_by(|a, b| contributions[*b].total_cmp(&contributions[*a]).then(a.cmp(b)));
            expected.truncate(max_reasons);
            let row = [0.0, 5000.0, 0.0];
            let chosen: Vec<usize> = catalogue
                .choose(&features(), &row, &contributions, &[0.0, 1000.0, 0.0])
                .map(|(position, _)| position)
                .collect();
            let features = features();
            let named: Vec<&str> = chosen.iter().map(|position| catalogue.reasons[*position].feature.as_str()).collect();
            let wanted: Vec<&str> = expected.iter().map(|index| features[*index].name.as_str()).collect();
            proptest::prop_assert_eq!(named, wanted);
        }
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
