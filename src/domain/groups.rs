//! Protected attributes → (attribute, group) labels (pure). Groups come from configuration:
//! age band edges and a reference (privileged) group per attribute.

use serde::{Deserialize, Serialize};

use super::events::ProtectedAttributes;
use super::DomainError;

/// Monitored attributes, in a fixed order.
pub const ATTRIBUTES: [&str; 3] = ["sex", "age_band", "foreign_worker"];

/// Label of a group whose attribute value is missing or unrecognised.
pub const UNKNOWN: &str = "unknown";

/// How applications are grouped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupingConfig {
    /// Upper edges (inclusive) of the age bands: `[25]` gives `<=25` and `>25`.
    pub age_band_edges: Vec<u32>,
    /// Reference group for `sex` (`male` or `female`).
    pub sex_reference: String,
    /// Reference group for `age_band` (one of the band labels).
    pub age_band_reference: String,
    /// Reference group for `foreign_worker` (`yes` or `no`).
    pub foreign_worker_reference: String,
}

impl GroupingConfig {
    /// The age band labels, youngest first.
    pub fn age_bands(&self) -> Vec<String> {
        let edges = &self.age_band_edges;
        let mut bands = Vec::with_capacity(edges.len() + 1);
        for (index, edge) in edges.iter().enumerate() {
            bands.push(match index {
                0 => format!("<={edge}"),
                _ => format!("{}-{edge}", edges[index - 1] + 1),
            });
        }
        if let Some(last) = edges.last() {
            bands.push(format!(">{last}"));
        }
        bands
    }

    /// Every known group of `attribute` (reference included, `unknown` excluded).
    pub fn groups(&self, attribute: &str) -> Vec<String> {
        match attribute {
            "sex" => vec!["female".into(), "male".into()],
            "age_band" => self.age_bands(),
            "foreign_worker" => vec!["no".into(), "yes".into()],
            _ => Vec::new(),
        }
    }

    /// The reference group of `attribute`.
    pub fn reference(&self, attribute: &str) -> &str {
        match attribute {
            "sex" => &self.sex_reference,
            "age_band" => &self.age_band_reference,
            _ => &self.foreign_worker_reference,
        }
    }

    /// Checks edges ascend and every reference is one of its attribute's groups.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.age_band_edges.is_empty() || self.age_band_edges.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(DomainError::Grouping(
                "fairness.age_band_edges must be non-empty and strictly ascending".into(),
            ));
        }
        for attribute in ATTRIBUTES {
            let reference = self.reference(attribute);
            if !self.groups(attribute).iter().any(|group| group == reference) {
                return Err(DomainError::Grouping(format!(
                    "fairness.{attribute}_reference `{reference}` is not one of {:?}",
                    self.groups(attribute)
                )));
            }
        }
        Ok(())
    }

    /// Group of each attribute, in [`ATTRIBUTES`] order.
    pub fn classify(&self, protected: &ProtectedAttributes) -> [String; 3] {
        let sex = match protected.personal_status_and_sex.as_deref() {
            Some(value) if value.starts_with("female") => "female",
            Some(value) if value.starts_with("male") => "male",
            _ => UNKNOWN,
        };
        let age_band = match protected.age_in_years {
            Some(age) if age >= 0 => {
                let index = self.age_band_edges.partition_point(|edge| (*edge as i64) < i64::from(age));
                self.age_bands()[index].clone()
            }
            _ => UNKNOWN.to_owned(),
        };
        let foreign_worker = match protected.foreign_worker.as_deref() {
            Some("yes") => "yes",
            Some("no") => "no",
            _ => UNKNOWN,
        };
        [sex.to_owned(), age_band, foreign_worker.to_owned()]
    }
}

impl Default for GroupingConfig {
    fn default() -> Self {
        Self {
            age_band_edges: vec![25],
            sex_reference: "male".into(),
            age_band_reference: ">25".into(),
            foreign_worker_reference: "no".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protected(status: Option<&str>, age: Option<i32>, foreign: Option<&str>) -> ProtectedAttributes {
        ProtectedAttributes {
            personal_status_and_sex: status.map(str::to_owned),
            age_in_years: age,
            foreign_worker: foreign.map(str::to_owned),
        }
    }

    /// Sex from the combined status field, age bands inclusive at the edge, unknowns labelled.
    #[test]
    fn classification_table() {
        let config = GroupingConfig::default();
        let cases = [
            (protected(Some("female : divorced/separated/married"), Some(25), Some("yes")), ["female", "<=25", "yes"]),
            (protected(Some("male : single"), Some(26), Some("no")), ["male", ">25", "no"]),
            (protected(None, None, None), ["unknown", "unknown", "unknown"]),
            (protected(Some("other"), Some(-1), Some("maybe")), ["unknown", "unknown", "unknown"]),
        ];
        for (input, expected) in cases {
            assert_eq!(config.classify(&input), expected.map(str::to_owned), "{input:?}");
        }
    }

    /// Several edges give labelled middle bands; validation rejects bad edges and references.
    #[test]
    fn bands_and_validation() {
        let mut config = GroupingConfig { age_band_edges: vec![25, 40], ..GroupingConfig::default() };
        assert_eq!(config.age_bands(), vec!["<=25", "26-40", ">40"]);
        assert_eq!(config.classify(&protected(None, Some(30), None))[1], "26-40");
        assert!(config.validate().is_err(), "reference >25 is no longer a band");
        config.age_band_reference = ">40".into();
        assert!(config.validate().is_ok());
        config.age_band_edges = vec![40, 25];
        assert!(config.validate().is_err());
        assert!(GroupingConfig { sex_reference: "x".into(), ..GroupingConfig::default() }.validate().is_err());
    }
}
