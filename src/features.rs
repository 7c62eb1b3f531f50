//! Validation and feature mapping: a `CreditRequest` becomes the model's feature vector,
//! or a typed reason why it cannot. Pure; driven by the model card.

use crate::events::{CreditRequest, FieldValue};
use crate::model::card::{FeatureEncoding, FeatureSpec};

/// Why an application cannot be scored. The message never contains applicant data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("required field `{0}` is missing")]
    MissingField(String),
    #[error("field `{field}` is outside [{min}, {max}]")]
    OutOfRange { field: String, min: f64, max: f64 },
    #[error("field `{0}` is not a finite number")]
    NotFinite(String),
    #[error("field `{0}` has a category that is not in the model card's vocabulary")]
    UnknownCategory(String),
    #[error("field `{0}` has the wrong type (expected {1})")]
    WrongType(String, &'static str),
    #[error("field `{field}` is longer than {max} bytes")]
    TooLong { field: String, max: usize },
    #[error("model feature `{0}` has no field in the application schema")]
    UnknownFeature(String),
}

impl ValidationError {
    /// Fixed, low-cardinality reason label (metrics, dead-letter header).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingField(_) => "missing_field",
            Self::OutOfRange { .. } => "out_of_range",
            Self::NotFinite(_) => "not_finite",
            Self::UnknownCategory(_) => "unknown_category",
            Self::WrongType(..) => "wrong_type",
            Self::UnknownFeature(_) => "unknown_feature",
            Self::TooLong { .. } => "too_long",
        }
    }
}

/// Appends the feature vector of `request` to `out` (one value per spec, in order).
/// On error `out` is left as it was.
pub fn append_feature_vector(
    specs: &[FeatureSpec],
    request: &CreditRequest,
    out: &mut Vec<f64>,
) -> Result<(), ValidationError> {
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

fn encode(spec: &FeatureSpec, request: &CreditRequest) -> Result<f64, ValidationError> {
    let name = || spec.name.clone();
    let value = request.field(&spec.name).ok_or_else(|| ValidationError::UnknownFeature(name()))?;
    match (&spec.encoding, value) {
        (_, FieldValue::Missing) => Err(ValidationError::MissingField(name())),
        (FeatureEncoding::Numeric { valid_min, valid_max }, FieldValue::Number(number)) => {
            if !number.is_finite() {
                Err(ValidationError::NotFinite(name()))
            } else if number < *valid_min || number > *valid_max {
                Err(ValidationError::OutOfRange { field: name(), min: *valid_min, max: *valid_max })
            } else {
                Ok(number)
            }
        }
        (FeatureEncoding::Categorical { categories }, FieldValue::Category(label)) => categories
            .iter()
            .position(|category| category == label)
            .map(|code| code as f64)
            .ok_or_else(|| ValidationError::UnknownCategory(name())),
        (FeatureEncoding::Numeric { .. }, FieldValue::Category(_)) => Err(ValidationError::WrongType(name(), "number")),
        (FeatureEncoding::Categorical { .. }, FieldValue::Number(_)) => {
            Err(ValidationError::WrongType(name(), "category label"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let result = append_feature_vector(&specs(), &input, &mut out);
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
        let result = append_feature_vector(&specs, &request(Some(6), Some("own"), Some(1.0)), &mut vec![]);
        assert_eq!(result.unwrap_err().kind(), "wrong_type");
        specs[1].name = "age_in_years".into();
        let result = append_feature_vector(&specs, &request(Some(6), Some("own"), Some(1.0)), &mut vec![]);
        assert_eq!(result, Err(ValidationError::UnknownFeature("age_in_years".into())));
    }
}
