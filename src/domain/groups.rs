//! Protected attributes → (attribute, group) labels (pure). Groups come from configuration:
//! age band edges and a reference (privileged) group per attribute, and the pairs of attributes
//! monitored together (intersectional groups such as `sex:age_band` / `female:<=25`, whose
//! reference is the pair of references). Cardinality stays bounded: at most
//! [`MAX_INTERSECTIONS`] pairs, each with the product of its attributes' groups (plus `unknown`).

use serde::{Deserialize, Serialize};

use super::events::ProtectedAttributes;
use super::DomainError;

/// Monitored attributes, in a fixed order.
pub const ATTRIBUTES: [&str; 3] = ["sex", "age_band", "foreign_worker"];

/// Label of a group whose attribute value is missing or unrecognised.
pub const UNKNOWN: &str = "unknown";

/// Joins the two attributes of an intersection, and their groups.
pub const JOIN: char = ':';

/// Most intersections configurable (label cardinality stays bounded).
pub const MAX_INTERSECTIONS: usize = 3;

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
    /// Pairs of attributes also monitored together, e.g. `[["sex", "age_band"]]`.
    #[serde(default)]
    pub intersections: Vec<[String; 2]>,
}

impl GroupingConfig {
    /// The age band labels, youngest first.
    pub fn age_bands(&self) -> Vec<String> {
        match self.age_band_edges.len() {
            0 => Vec::new(),
            edges => (0..=edges).map(|index| self.age_band(index)).collect(),
        }
    }

    /// The label of age band `index` (0 is the youngest; the last is above every edge).
    fn age_band(&self, index: usize) -> String {
        let edges = &self.age_band_edges;
        match (index, edges.get(index)) {
            (0, Some(edge)) => format!("<={edge}"),
            (_, Some(edge)) => format!("{}-{edge}", edges[index - 1] + 1),
            (_, None) => edges.last().map(|last| format!(">{last}")).unwrap_or_else(|| UNKNOWN.to_owned()),
        }
    }

    /// Every monitored attribute: the three, then the intersections (`sex:age_band`). A position
    /// in this list is the attribute's index in [`GroupingConfig::classify`] and the monitors.
    pub fn attributes(&self) -> Vec<String> {
        let pairs = self.intersections.iter().map(|[first, second]| format!("{first}{JOIN}{second}"));
        ATTRIBUTES.iter().map(|attribute| (*attribute).to_owned()).chain(pairs).collect()
    }

    /// Every known group of `attribute` (reference included, `unknown` excluded).
    pub fn groups(&self, attribute: &str) -> Vec<String> {
        match attribute {
            "sex" => vec!["female".into(), "male".into()],
            "age_band" => self.age_bands(),
            "foreign_worker" => vec!["no".into(), "yes".into()],
            _ => match attribute.split_once(JOIN) {
                Some((first, second)) => {
                    let seconds = self.groups(second);
                    let pairs = self.groups(first).into_iter().flat_map(|one| {
                        seconds.iter().map(move |other| format!("{one}{JOIN}{other}")).collect::<Vec<_>>()
                    });
                    pairs.collect()
                }
                None => Vec::new(),
            },
        }
    }

    /// The reference group of `attribute` (of an intersection: the pair of references).
    pub fn reference(&self, attribute: &str) -> String {
        match attribute {
            "sex" => self.sex_reference.clone(),
            "age_band" => self.age_band_reference.clone(),
            "foreign_worker" => self.foreign_worker_reference.clone(),
            _ => match attribute.split_once(JOIN) {
                Some((first, second)) => format!("{}{JOIN}{}", self.reference(first), self.reference(second)),
                None => String::new(),
            },
        }
    }

    /// The persisted code of the attribute at `position`: 0–2 for the three, `3 + 3·a + b` for
    /// the intersection of attributes `a` and `b`, whatever the order of the configuration.
    pub fn code(&self, position: usize) -> i16 {
        match position.checked_sub(ATTRIBUTES.len()).and_then(|index| self.intersections.get(index)) {
            Some([first, second]) => (ATTRIBUTES.len() + 3 * index_of(first) + index_of(second)) as i16,
            None => position as i16,
        }
    }

    /// The position of the attribute persisted as `code`, if it is still monitored.
    pub fn position(&self, code: i16) -> Option<usize> {
        (0..ATTRIBUTES.len() + self.intersections.len()).find(|position| self.code(*position) == code)
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
            if !self.groups(attribute).contains(&reference) {
                return Err(DomainError::Grouping(format!(
                    "fairness.{attribute}_reference `{reference}` is not one of {:?}",
                    self.groups(attribute)
                )));
            }
        }
        if self.intersections.len() > MAX_INTERSECTIONS {
            return Err(DomainError::Grouping(format!(
                "fairness.intersections: at most {MAX_INTERSECTIONS} pairs (label cardinality)"
            )));
        }
        for (index, [first, second]) in self.intersections.iter().enumerate() {
            let known = |name: &String| ATTRIBUTES.contains(&name.as_str());
            if !known(first) || !known(second) || first == second {
                return Err(DomainError::Grouping(format!(
                    "fairness.intersections[{index}] = [{first:?}, {second:?}]: two different attributes of {ATTRIBUTES:?}"
                )));
            }
            if self.intersections[..index].iter().any(|earlier| earlier == &[first.clone(), second.clone()]) {
                return Err(DomainError::Grouping(format!("fairness.intersections[{index}] repeats a pair")));
            }
        }
        Ok(())
    }

    /// Group of each attribute, in [`GroupingConfig::attributes`] order (an intersection is
    /// `unknown` when either of its attributes is).
    pub fn classify(&self, protected: &ProtectedAttributes) -> Vec<String> {
        let mut indices = Vec::new();
        self.group_indices(protected, &mut indices);
        let pairs = self.intersections.iter().map(|[first, second]| (first.as_str(), Some(second.as_str())));
        let attributes = ATTRIBUTES.iter().map(|attribute| (*attribute, None)).chain(pairs);
        attributes.zip(indices).map(|((first, second), index)| self.group_label(first, second, index)).collect()
    }

    /// The label of group `index` of `first` (of the intersection with `second`, if given).
    fn group_label(&self, first: &str, second: Option<&str>, index: u16) -> String {
        let index = usize::from(index);
        match (first, second) {
            _ if index == usize::from(UNKNOWN_INDEX) => UNKNOWN.to_owned(),
            (first, Some(second)) => {
                let width = usize::from(self.group_count(second));
                let (one, other) = (index / width, index % width);
                let (one, other) =
                    (self.group_label(first, None, one as u16), self.group_label(second, None, other as u16));
                format!("{one}{JOIN}{other}")
            }
            ("sex", None) => ["female", "male"].get(index).map_or(UNKNOWN, |group| group).to_owned(),
            ("foreign_worker", None) => ["no", "yes"].get(index).map_or(UNKNOWN, |group| group).to_owned(),
            (_, None) => self.age_band(index),
        }
    }

    /// How many groups one of the three attributes has (`unknown` aside), as [`GroupingConfig::groups`].
    fn group_count(&self, attribute: &str) -> u16 {
        match attribute {
            "age_band" => self.age_band_edges.len() as u16 + 1,
            _ => 2,
        }
    }

    /// [`GroupingConfig::classify`] without a string: the group of each attribute as its index
    /// in [`GroupingConfig::groups`] ([`UNKNOWN_INDEX`] when unknown), written to `out`. Counting
    /// by index and naming the groups once ([`GroupingConfig::labels`]) costs no allocation per
    /// decision.
    pub fn group_indices(&self, protected: &ProtectedAttributes, out: &mut Vec<u16>) {
        out.clear();
        let sex = match protected.personal_status_and_sex.as_deref() {
            Some(value) if value.starts_with("female") => 0,
            Some(value) if value.starts_with("male") => 1,
            _ => UNKNOWN_INDEX,
        };
        let age_band = match protected.age_in_years {
            Some(age) if age >= 0 && !self.age_band_edges.is_empty() => {
                self.age_band_edges.partition_point(|edge| (*edge as i64) < i64::from(age)) as u16
            }
            _ => UNKNOWN_INDEX,
        };
        let foreign_worker = match protected.foreign_worker.as_deref() {
            Some("no") => 0,
            Some("yes") => 1,
            _ => UNKNOWN_INDEX,
        };
        out.extend([sex, age_band, foreign_worker]);
        for [first, second] in &self.intersections {
            let (one, other) = (out[index_of(first)], out[index_of(second)]);
            let width = self.group_count(second);
            out.push(if one == UNKNOWN_INDEX || other == UNKNOWN_INDEX { UNKNOWN_INDEX } else { one * width + other });
        }
    }

    /// Per attribute, in [`GroupingConfig::attributes`] order, the labels of its groups by index.
    pub fn labels(&self) -> Vec<Vec<String>> {
        self.attributes().iter().map(|attribute| self.groups(attribute)).collect()
    }
}

/// Index of an unknown group in [`GroupingConfig::group_indices`].
pub const UNKNOWN_INDEX: u16 = u16::MAX;

/// The label of group `index` among one attribute's `labels` (`unknown` for any other index).
pub fn label(labels: &[String], index: u16) -> &str {
    labels.get(usize::from(index)).map_or(UNKNOWN, String::as_str)
}

/// The position of one of the three attributes (validated names).
fn index_of(attribute: &str) -> usize {
    ATTRIBUTES.iter().position(|known| *known == attribute).unwrap_or_default()
}

impl Default for GroupingConfig {
    fn default() -> Self {
        Self {
            age_band_edges: vec![25],
            sex_reference: "male".into(),
            age_band_reference: ">25".into(),
            foreign_worker_reference: "no".into(),
            intersections: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protected(status: Option<&str>, age: Option<i32>, foreign: Option<&str>) -> ProtectedAttributes {
        ProtectedAttributes {
            personal_status_and_sex: status.map(Into::into),
            age_in_years: age,
            foreign_worker: foreign.map(Into::into),
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
            assert_eq!(config.classify(&input), expected.map(str::to_owned).to_vec(), "{input:?}");
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

    /// An intersection is a product of groups with the pair of references; its persisted code
    /// does not depend on the order of the configured pairs; bad pairs are refused.
    #[test]
    fn intersections() {
        let pair = |first: &str, second: &str| [first.to_owned(), second.to_owned()];
        let config = GroupingConfig {
            intersections: vec![pair("sex", "age_band"), pair("age_band", "foreign_worker")],
            ..GroupingConfig::default()
        };
        assert!(config.validate().is_ok());
        assert_eq!(config.attributes()[3..], ["sex:age_band".to_owned(), "age_band:foreign_worker".to_owned()]);
        assert_eq!(config.groups("sex:age_band"), ["female:<=25", "female:>25", "male:<=25", "male:>25"]);
        assert_eq!(config.reference("sex:age_band"), "male:>25");
        let young_woman = protected(Some("female : single"), Some(23), None);
        assert_eq!(config.classify(&young_woman)[3..], ["female:<=25".to_owned(), UNKNOWN.to_owned()]);
        let swapped = GroupingConfig {
            intersections: vec![pair("age_band", "foreign_worker"), pair("sex", "age_band")],
            ..GroupingConfig::default()
        };
        assert_eq!(config.code(3), swapped.code(4));
        assert_eq!(swapped.position(config.code(3)), Some(4));
        assert_eq!(GroupingConfig::default().position(config.code(3)), None, "no longer monitored");
        for bad in [vec![pair("sex", "sex")], vec![pair("sex", "income")], vec![pair("sex", "age_band"); 2]] {
            assert!(GroupingConfig { intersections: bad, ..GroupingConfig::default() }.validate().is_err());
        }
    }
}
