//! The model inputs and their encodings, and validation and feature mapping: a `CreditRequest`
//! becomes the model's feature vector, or a typed reason why it cannot. Driven by the model card.

use serde::{Deserialize, Serialize};

use super::events::FieldValue;
use super::view::CreditRequestView;
use super::DomainError;

/// One model input and how an application field becomes its numeric value.
/// (`deny_unknown_fields` does not combine with `flatten`; the encoding enum checks its own fields.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Field name in `CreditRequest` and in the LightGBM model.
    pub name: String,
    /// Encoding.
    #[serde(flatten)]
    pub encoding: FeatureEncoding,
}

/// How a field is encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureEncoding {
    /// Used as is; values outside `[valid_min, valid_max]` are rejected.
    Numeric { valid_min: f64, valid_max: f64 },
    /// Encoded as the index of the label in `categories` (UCI code order); other labels are rejected.
    Categorical { categories: Vec<String> },
}

fn categorical(name: &str, categories: &[&str]) -> FeatureSpec {
    FeatureSpec {
        name: name.into(),
        encoding: FeatureEncoding::Categorical { categories: categories.iter().map(|c| (*c).to_owned()).collect() },
    }
}

fn numeric(name: &str, valid_min: f64, valid_max: f64) -> FeatureSpec {
    FeatureSpec { name: name.into(), encoding: FeatureEncoding::Numeric { valid_min, valid_max } }
}

/// The model inputs: every German Credit attribute except the protected ones. Categories are
/// listed in UCI code order (A11, A12, ...), which is ordinal for most attributes.
pub fn feature_specs() -> Vec<FeatureSpec> {
    vec![
        categorical(
            "status_of_existing_checking_account",
            &[
                "... < 0 DM",
                "0 <= ... < 200 DM",
                "... >= 200 DM / salary assignments for at least 1 year",
                "no checking account",
            ],
        ),
        numeric("duration_in_month", 1.0, 120.0),
        categorical(
            "credit_history",
            &[
                "no credits taken/ all credits paid back duly",
                "all credits at this bank paid back duly",
                "existing credits paid back duly till now",
                "delay in paying off in the past",
                "critical account/ other credits existing (not at this bank)",
            ],
        ),
        categorical(
            "purpose",
            &[
                "car (new)",
                "car (used)",
                "furniture/equipment",
                "radio/television",
                "domestic appliances",
                "repairs",
                "education",
                "vacation",
                "retraining",
                "business",
                "others",
            ],
        ),
        numeric("credit_amount", 1.0, 1_000_000.0),
        categorical(
            "savings_account_and_bonds",
            &[
                "... < 100 DM",
                "100 <= ... < 500 DM",
                "500 <= ... < 1000 DM",
                "... >= 1000 DM",
                "unknown/ no savings account",
            ],
        ),
        categorical(
            "present_employment_since",
            &["unemployed", "... < 1 year", "1 <= ... < 4 years", "4 <= ... < 7 years", "... >= 7 years"],
        ),
        numeric("installment_rate_in_percentage_of_disposable_income", 1.0, 4.0),
        categorical("other_debtors_or_guarantors", &["none", "co-applicant", "guarantor"]),
        numeric("present_residence_since", 1.0, 4.0),
        categorical(
            "property",
            &[
                "real estate",
                "building society savings agreement/ life insurance",
                "car or other, not in attribute Savings account/bonds",
                "unknown / no property",
            ],
        ),
        categorical("other_installment_plans", &["bank", "stores", "none"]),
        categorical("housing", &["rent", "own", "for free"]),
        numeric("number_of_existing_credits_at_this_bank", 1.0, 10.0),
        categorical(
            "job",
            &[
                "unemployed/ unskilled - non-resident",
                "unskilled - resident",
                "skilled employee / official",
                "management/ self-employed/ highly qualified employee/ officer",
            ],
        ),
        numeric("number_of_people_being_liable_to_provide_maintenance_for", 0.0, 20.0),
        categorical("telephone", &["none", "yes, registered under the customers name"]),
    ]
}

/// Appends the feature vector of `request` to `out` (one value per spec, in order).
/// On error `out` is left as it was.
pub fn append_feature_vector(
    specs: &[FeatureSpec],
    request: &CreditRequestView<'_>,
    out: &mut Vec<f64>,
) -> Result<(), DomainError> {
    let start = out.len();
    for spec in specs {
        match encode(spec, request) {
            Ok(value) => out.push(value),
            Err(error) => {
                out.truncate(start);
                return Err(error);
            }
        }
    }
    Ok(())
}

fn encode(spec: &FeatureSpec, request: &CreditRequestView<'_>) -> Result<f64, DomainError> {
    let name = || spec.name.clone();
    let value = request.field(&spec.name).ok_or_else(|| DomainError::UnknownFeature(name()))?;
    match (&spec.encoding, value) {
        (_, FieldValue::Missing) => Err(DomainError::MissingField(name())),
        (FeatureEncoding::Numeric { valid_min, valid_max }, FieldValue::Number(number)) => {
            if !number.is_finite() {
                Err(DomainError::NotFinite(name()))
            } else if number < *valid_min || number > *valid_max {
                Err(DomainError::OutOfRange { field: name(), min: *valid_min, max: *valid_max })
            } else {
                Ok(number)
            }
        }
        (FeatureEncoding::Categorical { categories }, FieldValue::Category(label)) => categories
            .iter()
            .position(|category| category == label)
            .map(|code| code as f64)
            .ok_or_else(|| DomainError::UnknownCategory(name())),
        (FeatureEncoding::Numeric { .. }, FieldValue::Category(_)) => Err(DomainError::WrongType(name(), "number")),
        (FeatureEncoding::Categorical { .. }, FieldValue::Number(_)) => {
            Err(DomainError::WrongType(name(), "category label"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CreditRequest;

    fn specs() -> Vec<FeatureSpec> {
        vec![
            FeatureSpec {
                name: "duration_in_month".into(),
                encoding: FeatureEncoding::Numeric { valid_min: 1.0, valid_max: 120.0 },
            },
            FeatureSpec {
                name: "housing".into(),
                encoding: FeatureEncoding::Categorical {
                    categories: vec!["rent".into(), "own".into(), "for free".into()],
                },
            },
            FeatureSpec {
                name: "credit_amount".into(),
                encoding: FeatureEncoding::Numeric { valid_min: 1.0, valid_max: 1e6 },
            },
        ]
    }

    fn request(duration: Option<i32>, housing: Option<&str>, amount: Option<f64>) -> CreditRequest {
        CreditRequest {
            duration_in_month: duration,
            housing: housing.map(str::to_owned),
            credit_amount: amount,
            ..CreditRequest::default()
        }
    }

    /// Table of inputs with the vector or the reason each must produce.
    #[test]
    fn maps_valid_inputs_and_names_each_failure() {
        let cases: Vec<(CreditRequest, Result<Vec<f64>, &str>)> = vec![
            (request(Some(12), Some("own"), Some(2500.0)), Ok(vec![12.0, 1.0, 2500.0])),
            (request(Some(1), Some("rent"), Some(1e6)), Ok(vec![1.0, 0.0, 1e6])),
            (request(None, Some("own"), Some(1.0)), Err("missing_field")),
            (request(Some(0), Some("own"), Some(1.0)), Err("out_of_range")),
            (request(Some(121), Some("own"), Some(1.0)), Err("out_of_range")),
            (request(Some(6), Some("castle"), Some(1.0)), Err("unknown_category")),
            (request(Some(6), Some("own"), Some(f64::NAN)), Err("not_finite")),
            (request(Some(6), Some("own"), Some(-5.0)), Err("out_of_range")),
            (request(Some(6), Some("own"), Some(f64::INFINITY)), Err("not_finite")),
        ];
        for (input, expected) in cases {
            let mut out = vec![99.0];
            let result = append_feature_vector(&specs(), &input.view(), &mut out);
            match expected {
                Ok(vector) => {
                    assert_eq!(result, Ok(()));
                    assert_eq!(out[1..], vector[..]);
                }
                Err(kind) => {
                    assert_eq!(result.unwrap_err().kind(), kind, "{input:?}");
                    assert_eq!(out, vec![99.0], "output untouched on error");
                }
            }
        }
    }

    /// A numeric feature given a label (or the reverse) is a type error, and a model feature that
    /// the schema does not carry is reported as such.
    #[test]
    fn reports_type_mismatch_and_unknown_feature() {
        let mut specs = specs();
        specs[1].encoding = FeatureEncoding::Numeric { valid_min: 0.0, valid_max: 1.0 };
        let result = append_feature_vector(&specs, &request(Some(6), Some("own"), Some(1.0)).view(), &mut vec![]);
        assert_eq!(result.unwrap_err().kind(), "wrong_type");
        specs[1].name = "age_in_years".into();
        let result = append_feature_vector(&specs, &request(Some(6), Some("own"), Some(1.0)).view(), &mut vec![]);
        assert_eq!(result, Err(DomainError::UnknownFeature("age_in_years".into())));
    }

    /// Protected attributes are not features, and every feature is a schema field.
    #[test]
    fn features_exclude_protected_attributes() {
        for spec in feature_specs() {
            assert!(!crate::domain::PROTECTED_ATTRIBUTES.contains(&spec.name.as_str()), "{}", spec.name);
            assert!(CreditRequest::default().field(&spec.name).is_some(), "{}", spec.name);
        }
    }
}
