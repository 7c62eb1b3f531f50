//! Typed events and their Avro schemas (the `.avsc` files in `schemas/`, compiled in).

use std::sync::LazyLock;

use apache_avro::Schema;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

/// Avro schema text of [`LoanApplication`].
pub const LOAN_APPLICATION_SCHEMA: &str = include_str!("../../schemas/loan_application.avsc");
/// Avro schema text of [`LoanDecision`].
pub const LOAN_DECISION_SCHEMA: &str = include_str!("../../schemas/loan_decision.avsc");

/// Avro schema text of [`MonitoringAlert`].
pub const MONITORING_ALERT_SCHEMA: &str = include_str!("../../schemas/monitoring_alert.avsc");

/// Avro schema text of the `LoanOutcome` event.
pub const LOAN_OUTCOME_SCHEMA: &str = include_str!("../../schemas/loan_outcome.avsc");

/// Parsed [`LOAN_OUTCOME_SCHEMA`].
pub static LOAN_OUTCOME: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(LOAN_OUTCOME_SCHEMA).expect("bundled schema parses"));

/// Parsed [`MONITORING_ALERT_SCHEMA`].
pub static MONITORING_ALERT: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(MONITORING_ALERT_SCHEMA).expect("bundled schema parses"));

/// Parsed [`LOAN_APPLICATION_SCHEMA`], the reader schema the worker resolves writers against.
pub static LOAN_APPLICATION: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(LOAN_APPLICATION_SCHEMA).expect("bundled schema parses"));
/// Parsed [`LOAN_DECISION_SCHEMA`].
pub static LOAN_DECISION: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(LOAN_DECISION_SCHEMA).expect("bundled schema parses"));

/// Attributes that must never be model features (monitoring inputs only).
pub const PROTECTED_ATTRIBUTES: [&str; 3] = ["personal_status_and_sex", "age_in_years", "foreign_worker"];

/// A loan application as consumed from `loan-applications`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoanApplication {
    /// Unique id from the originating system.
    pub application_id: String,
    /// Submission time, milliseconds since the Unix epoch.
    pub event_time: i64,
    /// Model inputs.
    pub credit_request: CreditRequest,
    /// Monitoring-only attributes; never model inputs.
    pub protected_attributes: ProtectedAttributes,
}

/// The model-relevant part of an application (UCI Statlog German Credit attributes).
/// Every field is optional on the wire; validation turns a missing one into a dead letter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreditRequest {
    pub status_of_existing_checking_account: Option<String>,
    pub duration_in_month: Option<i32>,
    pub credit_history: Option<String>,
    pub purpose: Option<String>,
    pub credit_amount: Option<f64>,
    pub savings_account_and_bonds: Option<String>,
    pub present_employment_since: Option<String>,
    pub installment_rate_in_percentage_of_disposable_income: Option<i32>,
    pub other_debtors_or_guarantors: Option<String>,
    pub present_residence_since: Option<i32>,
    pub property: Option<String>,
    pub other_installment_plans: Option<String>,
    pub housing: Option<String>,
    pub number_of_existing_credits_at_this_bank: Option<i32>,
    pub job: Option<String>,
    pub number_of_people_being_liable_to_provide_maintenance_for: Option<i32>,
    pub telephone: Option<String>,
}

/// A value of one [`CreditRequest`] field, looked up by name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    Missing,
    Number(f64),
    Category(&'a str),
}

/// Attributes kept for fairness monitoring only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtectedAttributes {
    pub personal_status_and_sex: Option<ByteString>,
    pub age_in_years: Option<i32>,
    pub foreign_worker: Option<ByteString>,
}

/// Outcome of the decision policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DecisionOutcome {
    Approve,
    Decline,
    Review,
}

impl DecisionOutcome {
    /// Lower-case label used in metrics and the audit table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Decline => "decline",
            Self::Review => "review",
        }
    }
}

/// The decision event published to `loan-decisions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoanDecision {
    pub decision_id: String,
    pub application_id: String,
    pub decision: DecisionOutcome,
    pub probability_of_default: f64,
    pub model_version: String,
    pub model_sha256: String,
    pub approve_below: f64,
    pub decline_at_or_above: f64,
    pub event_time: i64,
    pub processed_at: i64,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub reasons: Vec<AdverseReason>,
    pub reason_catalogue_version: String,
}

/// A reason given for one decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdverseReason {
    pub code: String,
    pub feature: String,
    pub text: String,
    /// TreeSHAP contribution of the feature, log-odds of default.
    pub contribution: f64,
}

/// A fairness or drift alert state change, published to the alerts topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitoringAlert {
    pub alert_key: String,
    pub kind: AlertKind,
    pub metric: String,
    pub attribute: Option<String>,
    pub group: Option<String>,
    pub feature: Option<String>,
    pub state: AlertState,
    pub severity: Severity,
    pub value: f64,
    pub interval_lower: Option<f64>,
    pub interval_upper: Option<f64>,
    pub threshold: f64,
    pub window_seconds: i64,
    pub sample_size: i64,
    pub reference_sample_size: Option<i64>,
    pub model_version: String,
    pub state_since: i64,
    pub emitted_at: i64,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AlertKind {
    Fairness,
    Drift,
}

/// Severity of a firing alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Warning,
    Critical,
}

/// State carried by alert events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// A delayed label: whether an applicant defaulted, observed long after the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoanOutcome {
    pub application_id: String,
    pub defaulted: bool,
    pub observed_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of the Avro `CreditRequest` record is reachable through `CreditRequest::field`.
    #[test]
    fn every_schema_field_is_addressable() {
        let Schema::Record(application) = &*LOAN_APPLICATION else { panic!("record") };
        let request = &application.fields[2];
        let Schema::Record(record) = &request.schema else { panic!("record") };
        let empty = CreditRequest::default();
        for field in &record.fields {
            assert_eq!(empty.field(&field.name), Some(FieldValue::Missing), "{}", field.name);
        }
        assert_eq!(empty.field("age_in_years"), None);
    }

    /// A decision serialises to Avro against the bundled schema and reads back unchanged.
    #[test]
    fn decision_round_trips_through_avro() {
        let decision = LoanDecision {
            decision_id: "d".into(),
            application_id: "a".into(),
            decision: DecisionOutcome::Review,
            probability_of_default: 0.42,
            model_version: "credit-v1".into(),
            model_sha256: "00".into(),
            approve_below: 0.3,
            decline_at_or_above: 0.55,
            event_time: 1,
            processed_at: 2,
            source_topic: "t".into(),
            source_partition: 3,
            source_offset: 4,
            reasons: vec![AdverseReason {
                code: "R06".into(),
                feature: "credit_amount".into(),
                text: "Amount of credit requested is too high".into(),
                contribution: 0.25,
            }],
            reason_catalogue_version: "rc-1".into(),
        };
        use apache_avro::reader::datum::GenericDatumReader;
        use apache_avro::writer::datum::GenericDatumWriter;
        let bytes = GenericDatumWriter::builder(&LOAN_DECISION).build().unwrap().write_ser_to_vec(&decision).unwrap();
        let reader = GenericDatumReader::builder(&LOAN_DECISION).build().unwrap();
        let back = reader.read_value(&mut &bytes[..]).unwrap();
        assert_eq!(apache_avro::from_value::<LoanDecision>(&back).unwrap(), decision);
    }

    /// An alert (with and without optional fields) round-trips through its bundled schema.
    #[test]
    fn alert_round_trips_through_avro() {
        use apache_avro::reader::datum::GenericDatumReader;
        use apache_avro::writer::datum::GenericDatumWriter;
        let alert = MonitoringAlert {
            alert_key: "FAIRNESS/disparate_impact/age_band/<=25".into(),
            kind: AlertKind::Fairness,
            metric: "disparate_impact".into(),
            attribute: Some("age_band".into()),
            group: Some("<=25".into()),
            feature: None,
            state: AlertState::Firing,
            severity: Severity::Critical,
            value: 0.5,
            interval_lower: Some(0.4),
            interval_upper: Some(0.6),
            threshold: 0.8,
            window_seconds: 3600,
            sample_size: 100,
            reference_sample_size: None,
            model_version: "credit-v1".into(),
            state_since: 1,
            emitted_at: 2,
        };
        let bytes = GenericDatumWriter::builder(&MONITORING_ALERT).build().unwrap().write_ser_to_vec(&alert).unwrap();
        let reader = GenericDatumReader::builder(&MONITORING_ALERT).build().unwrap();
        assert_eq!(reader.read_deser::<MonitoringAlert>(&mut &bytes[..]).unwrap(), alert);
    }
}
