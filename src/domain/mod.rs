//! The domain, pure: events and their schemas, validation and features, the decision policy,
//! adverse-action reasons, protected-attribute groups, and the audit row with its hash. Nothing
//! here does I/O; everything is deterministic, so none of its errors can be cured by a retry.

mod audit;
mod counts;
mod decision;
mod event_time;
mod events;
mod features;
mod groups;
mod policy;
mod reasons;
mod record;
mod view;

use crate::error::{Retriable, Retry};

pub use audit::{
    application_key, outcome_code, outcome_of, AuditRow, Inputs, Reasons, SealedBytes, StoredReason, GENESIS,
};
pub use counts::{BucketCounts, DriftCount, FairnessCount};
pub use decision::{decision_id, Cutoffs};
pub use event_time::EventTimePolicy;
pub use events::{
    AdverseReason, AlertKind, AlertState, CreditRequest, DecisionOutcome, FieldValue, LoanApplication, LoanDecision,
    LoanOutcome, MonitoringAlert, ProtectedAttributes, Severity, LOAN_APPLICATION, LOAN_APPLICATION_SCHEMA,
    LOAN_DECISION, LOAN_DECISION_SCHEMA, LOAN_OUTCOME, LOAN_OUTCOME_SCHEMA, MONITORING_ALERT, MONITORING_ALERT_SCHEMA,
    PROTECTED_ATTRIBUTES,
};
pub use features::{append_feature_vector, feature_specs, FeatureEncoding, FeatureSpec};
pub use groups::{label, GroupingConfig, ATTRIBUTES, UNKNOWN, UNKNOWN_INDEX};
pub use policy::{DecisionPolicy, PolicyReason};
pub use reasons::{CatalogueEntry, Direction, ReasonCatalogue, MAX_REASONS};
pub use record::{DeadLetter, Decided, InputRecord, Outcome, MAX_APPLICATION_ID_BYTES};
pub use view::{share, ApplicationView, CreditRequestView, ProtectedView, CREDIT_REQUEST_FIELDS};

/// Why a domain rule refuses an application, a catalogue, cutoffs or a grouping. The messages
/// name fields and keys, never applicant data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
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
    #[error("reason catalogue `max_reasons` must be 1..={MAX_REASONS}, got {0}")]
    CatalogueMaxReasons(usize),
    #[error("reason catalogue `min_contribution` must be finite and >= 0, got {0}")]
    CatalogueMinContribution(f64),
    #[error("reason catalogue names protected attribute `{0}`")]
    CatalogueProtected(String),
    #[error("reason catalogue has no `{direction:?}` entry for feature `{feature}`")]
    CatalogueMissing { feature: String, direction: Direction },
    #[error("reason catalogue entry for `{0}` is not a model feature or has the wrong direction kind")]
    CatalogueUnexpected(String),
    #[error("reason code `{0}` is used twice")]
    CatalogueDuplicateCode(String),
    #[error(
        "cutoffs must satisfy 0 <= approve_below ({approve_below}) <= decline_at_or_above ({decline_at_or_above}) <= 1"
    )]
    Cutoffs { approve_below: f64, decline_at_or_above: f64 },
    #[error("{0}")]
    Grouping(String),
    #[error(
        "event time is not within {max_future_seconds} s ahead of or {max_past_seconds} s behind the processing time"
    )]
    EventTimeOutOfRange { max_future_seconds: i64, max_past_seconds: i64 },
}

impl DomainError {
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
            Self::CatalogueMaxReasons(_)
            | Self::CatalogueMinContribution(_)
            | Self::CatalogueProtected(_)
            | Self::CatalogueMissing { .. }
            | Self::CatalogueUnexpected(_)
            | Self::CatalogueDuplicateCode(_) => "invalid_catalogue",
            Self::Cutoffs { .. } => "invalid_cutoffs",
            Self::Grouping(_) => "invalid_grouping",
            Self::EventTimeOutOfRange { .. } => "event_time_out_of_range",
        }
    }
}

impl Retriable for DomainError {
    /// Domain rules are deterministic: the same input is refused again.
    fn retry(&self) -> Retry {
        Retry::Never
    }
}
