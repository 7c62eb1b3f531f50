//! One batch through decode → validate/features → score → decide → encode, on a scoring
//! thread. No I/O: every input record comes out as exactly one [`Outcome`].

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::writer::datum::GenericDatumWriter;
use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use schema_registry_converter::avro_common::AvroSchema;
use schema_registry_converter::schema_registry_common::get_payload;
use serde_json::{Map, Value};

use crate::decision::{decision_id, Cutoffs};
use crate::decode::{split_frame, ApplicationDecoder, DecodeError};
use crate::events::DecisionOutcome;
use crate::events::{LoanApplication, LoanDecision, ProtectedAttributes, LOAN_DECISION};
use crate::features::{append_feature_vector, ValidationError};
use crate::model::scorer::Scorer;
use crate::model::ModelBundle;
use crate::reasons::AdverseReason;

/// Longest accepted application id (it becomes a Kafka key, a UUIDv5 input and an indexed column).
pub const MAX_APPLICATION_ID_BYTES: usize = 256;

/// A consumed Kafka record, owned.
#[derive(Debug, Clone)]
pub struct InputRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub consumed_at: DateTime<Utc>,
}

/// What the batch needs besides its records.
pub struct BatchContext {
    /// The model scoring this batch (its card and reason catalogue); the scorer must be built from it.
    pub model: Arc<ModelBundle>,
    pub cutoffs: Cutoffs,
    /// Registry id of the LoanDecision schema.
    pub decision_schema_id: u32,
    /// Writer schemas of this batch's records, by id (unknown ids absent).
    pub writer_schemas: HashMap<u32, WriterSchema>,
    /// Per-record failures found before this stage (schema lookup), by position in the batch.
    pub early_failures: HashMap<usize, DecodeError>,
}

/// A writer schema: as fetched from the registry, or given directly (tools, tests).
#[derive(Clone)]
pub enum WriterSchema {
    Registry(Arc<AvroSchema>),
    Local(Arc<apache_avro::Schema>),
}

impl WriterSchema {
    /// The parsed schema.
    pub fn parsed(&self) -> &apache_avro::Schema {
        match self {
            Self::Registry(schema) => &schema.parsed,
            Self::Local(schema) => schema,
        }
    }
}

/// What became of one record.
#[derive(Debug, Clone)]
pub enum Outcome {
    Decided(Box<Decided>),
    DeadLetter(DeadLetter),
}

/// A decision ready to publish and audit.
#[derive(Debug, Clone)]
pub struct Decided {
    pub decision: LoanDecision,
    /// The feature vector as scored (card order).
    pub features: Vec<f64>,
    /// Confluent-framed Avro value for the decisions topic.
    pub payload: Vec<u8>,
    pub audit: AuditRow,
}

/// Why a record goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Fixed reason label.
    pub kind: &'static str,
    /// Human-readable reason; never applicant data.
    pub message: String,
}

/// One audit row: everything needed to explain and reproduce the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub decision_id: uuid::Uuid,
    pub application_id: String,
    pub model_version: String,
    pub model_sha256: String,
    pub decision: &'static str,
    pub probability_of_default: f64,
    pub approve_below: f64,
    pub decline_at_or_above: f64,
    /// Model inputs exactly as scored: feature name → value.
    pub model_inputs: Value,
    /// Adverse-action reasons (declines and reviews; empty for approvals).
    pub reasons: Vec<AdverseReason>,
    /// Version of the reason catalogue.
    pub reason_catalogue_version: String,
    /// Monitoring-only protected attributes.
    pub protected_attributes: ProtectedAttributes,
    pub schema_id: i32,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub event_time: DateTime<Utc>,
    pub consumed_at: DateTime<Utc>,
    pub processed_at: DateTime<Utc>,
}

impl From<DecodeError> for DeadLetter {
    fn from(error: DecodeError) -> Self {
        Self { kind: error.kind(), message: error.to_string() }
    }
}

impl From<ValidationError> for DeadLetter {
    fn from(error: ValidationError) -> Self {
        Self { kind: error.kind(), message: error.to_string() }
    }
}

struct Valid {
    index: usize,
    schema_id: u32,
    application: LoanApplication,
}

/// Processes `records` in order; the result has one outcome per record, same positions.
pub fn process_batch(scorer: &Scorer, context: &BatchContext, records: &[InputRecord]) -> Vec<Outcome> {
    let decoder = ApplicationDecoder::new(context.writer_schemas.iter().map(|(id, schema)| (*id, schema.parsed())));
    let width = context.model.card.features.len();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; records.len()];
    let mut valid = Vec::with_capacity(records.len());
    let mut rows = Vec::with_capacity(records.len() * width);
    for (index, record) in records.iter().enumerate() {
        match decode_and_map(&decoder, context, index, record, &mut rows) {
            Ok(item) => valid.push(item),
            Err(dead) => outcomes[index] = Some(Outcome::DeadLetter(dead)),
        }
    }
    let processed_at = Utc::now().trunc_subsecs(6);
    let writer = match GenericDatumWriter::builder(&LOAN_DECISION).build() {
        Ok(writer) => writer,
        Err(error) => {
            let reason = DeadLetter { kind: "encode_failed", message: error.to_string() };
            return records.iter().map(|_| Outcome::DeadLetter(reason.clone())).collect();
        }
    };
    let mut scored = Vec::with_capacity(valid.len());
    for (position, item) in valid.into_iter().enumerate() {
        let row = &rows[position * width..(position + 1) * width];
        match scorer.score_row(row) {
            Ok(probability) if probability.is_finite() => scored.push((item, row, probability)),
            Ok(_) => outcomes[item.index] = Some(scoring_failed("model returned a non-finite score".into())),
            Err(error) => outcomes[item.index] = Some(scoring_failed(error.to_string())),
        }
    }
    let reasons = adverse_reasons(scorer, context, &scored);
    for ((item, row, probability), reasons) in scored.into_iter().zip(reasons) {
        let index = item.index;
        outcomes[index] = Some(match reasons {
            Ok(reasons) => decide(context, &writer, &records[index], item, row, probability, reasons, processed_at),
            Err(message) => scoring_failed(message),
        });
    }
    outcomes.into_iter().map(|outcome| outcome.expect("every record has an outcome")).collect()
}

fn scoring_failed(message: String) -> Outcome {
    Outcome::DeadLetter(DeadLetter { kind: "scoring_failed", message })
}

/// Reasons for every scored row that is not approved, from one TreeSHAP call over those rows.
fn adverse_reasons(
    scorer: &Scorer,
    context: &BatchContext,
    scored: &[(Valid, &[f64], f64)],
) -> Vec<Result<Vec<AdverseReason>, String>> {
    let model = &context.model;
    let adverse: Vec<usize> = (0..scored.len())
        .filter(|position| context.cutoffs.decide(scored[*position].2) != DecisionOutcome::Approve)
        .collect();
    let matrix: Vec<f64> = adverse.iter().flat_map(|position| scored[*position].1.iter().copied()).collect();
    let mut results: Vec<Result<Vec<AdverseReason>, String>> = vec![Ok(Vec::new()); scored.len()];
    let stride = model.card.features.len() + 1;
    match scorer.contributions(&matrix) {
        Ok(contributions) => {
            for (slot, position) in adverse.into_iter().enumerate() {
                let values = &contributions[slot * stride..(slot + 1) * stride];
                let row = scored[position].1;
                results[position] =
                    Ok(model.catalogue.reasons(&model.card.features, row, values, &model.card.feature_medians));
            }
        }
        Err(error) => {
            for position in adverse {
                results[position] = Err(format!("contribution prediction failed: {error}"));
            }
        }
    }
    results
}

fn decode_and_map(
    decoder: &ApplicationDecoder<'_>,
    context: &BatchContext,
    index: usize,
    record: &InputRecord,
    rows: &mut Vec<f64>,
) -> Result<Valid, DeadLetter> {
    if let Some(error) = context.early_failures.get(&index) {
        return Err(error.clone().into());
    }
    let (schema_id, body) = split_frame(record.value.as_deref())?;
    let application = decoder.decode(schema_id, body)?;
    if application.application_id.trim().is_empty() {
        return Err(ValidationError::MissingField("application_id".into()).into());
    }
    if application.application_id.len() > MAX_APPLICATION_ID_BYTES {
        let max = MAX_APPLICATION_ID_BYTES;
        return Err(ValidationError::TooLong { field: "application_id".into(), max }.into());
    }
    append_feature_vector(&context.model.card.features, &application.credit_request, rows)?;
    Ok(Valid { index, schema_id, application })
}

#[allow(clippy::too_many_arguments)]
fn decide(
    context: &BatchContext,
    writer: &GenericDatumWriter<'_>,
    record: &InputRecord,
    item: Valid,
    row: &[f64],
    probability: f64,
    reasons: Vec<AdverseReason>,
    processed_at: DateTime<Utc>,
) -> Outcome {
    let card = &context.model.card;
    let catalogue_version = &context.model.catalogue.version;
    let outcome = context.cutoffs.decide(probability);
    let id = decision_id(&item.application.application_id, &card.model_sha256);
    let event_time = Utc.timestamp_millis_opt(item.application.event_time).single().unwrap_or(processed_at);
    let decision = LoanDecision {
        decision_id: id.to_string(),
        application_id: item.application.application_id.clone(),
        decision: outcome,
        probability_of_default: probability,
        model_version: card.version.clone(),
        model_sha256: card.model_sha256.clone(),
        approve_below: context.cutoffs.approve_below,
        decline_at_or_above: context.cutoffs.decline_at_or_above,
        event_time: item.application.event_time,
        processed_at: processed_at.timestamp_millis(),
        source_topic: record.topic.to_string(),
        source_partition: record.partition,
        source_offset: record.offset,
        reasons,
        reason_catalogue_version: catalogue_version.clone(),
    };
    let payload = match encode_decision(writer, &decision, context.decision_schema_id) {
        Ok(payload) => payload,
        Err(error) => return Outcome::DeadLetter(DeadLetter { kind: "encode_failed", message: error }),
    };
    let model_inputs: Map<String, Value> =
        card.features.iter().zip(row).map(|(spec, value)| (spec.name.clone(), Value::from(*value))).collect();
    let audit = AuditRow {
        decision_id: id,
        application_id: decision.application_id.clone(),
        model_version: card.version.clone(),
        model_sha256: card.model_sha256.clone(),
        decision: outcome.as_str(),
        probability_of_default: probability,
        approve_below: context.cutoffs.approve_below,
        decline_at_or_above: context.cutoffs.decline_at_or_above,
        model_inputs: Value::Object(model_inputs),
        reasons: decision.reasons.clone(),
        reason_catalogue_version: catalogue_version.clone(),
        protected_attributes: item.application.protected_attributes,
        schema_id: item.schema_id as i32,
        source_topic: decision.source_topic.clone(),
        source_partition: record.partition,
        source_offset: record.offset,
        event_time,
        consumed_at: record.consumed_at.trunc_subsecs(6),
        processed_at,
    };
    Outcome::Decided(Box::new(Decided { decision, features: row.to_vec(), payload, audit }))
}

/// Avro-encodes a decision with the Confluent header for `schema_id`.
pub fn encode_decision(
    writer: &GenericDatumWriter<'_>,
    decision: &LoanDecision,
    schema_id: u32,
) -> Result<Vec<u8>, String> {
    let body = writer.write_ser_to_vec(decision).map_err(|error| error.to_string())?;
    Ok(get_payload(schema_id, body))
}
