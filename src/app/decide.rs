//! One batch through decode → validate/features → score → decide → encode, on a scoring
//! thread. No I/O: every input record comes out as exactly one [`Outcome`].

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use schema_registry_converter::avro_common::AvroSchema;

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{split_frame, ApplicationDecoder, CodecError, Decoded, ProtectedKeys};
use crate::domain::MAX_APPLICATION_ID_BYTES;
use crate::domain::{append_feature_vector, AuditRow, DeadLetter, Decided, DecisionPolicy};
use crate::domain::{share, Inputs, ProtectedAttributes, ProtectedView, Reasons, StoredReason};
use crate::domain::{DecisionOutcome, DomainError, EventTimePolicy, InputRecord, LoanApplication, Outcome};
use crate::model::{ModelBundle, ScoredRows, Scorer};
use crate::sources::Claim;

/// What the batch needs besides its records.
#[derive(Clone)]
pub struct BatchContext {
    /// The model scoring this batch (its card and reason catalogue); the scorer must be built from it.
    pub model: Arc<ModelBundle>,
    /// The policy decisions are made under (the model's, with the cutoffs in force).
    pub policy: Arc<DecisionPolicy>,
    /// Per partition, how far earlier work went: records it covers are redelivered.
    pub claims: HashMap<i32, Claim>,
    /// Writer schemas of this batch's records, by id (unknown ids absent).
    pub writer_schemas: HashMap<u32, WriterSchema>,
    /// Per-record failures found before this stage (schema lookup), by (partition, offset).
    pub early_failures: HashMap<(i32, i64), CodecError>,
    /// How far event times may lie from the processing time.
    pub event_times: EventTimePolicy,
    /// Seals each new row's protected attributes here, on the scoring thread (`None`: the audit
    /// sink seals them).
    pub sealer: Option<Arc<ProtectedKeys>>,
}

impl BatchContext {
    /// A context for `model` under `cutoffs`, with no record redelivered and no early failure
    /// (tools, tests and benches; the worker builds its own from the loaded model).
    pub fn new(
        model: Arc<ModelBundle>,
        cutoffs: crate::domain::Cutoffs,
        writer_schemas: HashMap<u32, WriterSchema>,
    ) -> Self {
        let card = &model.card;
        let policy = DecisionPolicy::new(&card.version, &card.model_sha256, cutoffs, &card.features, &model.catalogue);
        Self {
            policy: Arc::new(policy),
            model,
            claims: HashMap::new(),
            writer_schemas,
            early_failures: HashMap::new(),
            event_times: EventTimePolicy::default(),
            sealer: None,
        }
    }

    /// Whether `record` lies below its partition's audited offset (it has its outcome already).
    pub fn is_redelivered(&self, record: &InputRecord) -> bool {
        self.claims.get(&record.partition).is_some_and(|claim| record.offset < claim.audited_through)
    }

    /// Whether `record`'s outcome was announced already.
    pub fn is_announced(&self, record: &InputRecord) -> bool {
        self.claims.get(&record.partition).is_some_and(|claim| record.offset < claim.announced_through)
    }
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

struct Valid<'r> {
    index: usize,
    schema_id: u32,
    /// What the decision needs of the application once its features are in the batch's rows.
    kept: Kept<'r>,
    /// The application's event time, within the policy's skew.
    event_time: DateTime<Utc>,
}

/// The parts of an application its decision needs after scoring, so a row moves a few words,
/// not the whole decoded application: borrowed from the record's bytes where the writer schema
/// is the bundled one, else the resolved application.
enum Kept<'r> {
    InPlace { application_id: &'r str, protected: ProtectedView<'r> },
    Resolved(Box<LoanApplication>),
}

impl<'r> From<Decoded<'r>> for Kept<'r> {
    fn from(decoded: Decoded<'r>) -> Self {
        match decoded {
            Decoded::InPlace(view) => Self::InPlace { application_id: view.application_id, protected: view.protected },
            Decoded::Resolved(application) => Self::Resolved(application),
        }
    }
}

impl Kept<'_> {
    fn application_id(&self) -> &str {
        match self {
            Self::InPlace { application_id, .. } => application_id,
            Self::Resolved(application) => &application.application_id,
        }
    }

    /// The application id and protected attributes an audit row keeps, sharing `source` (the
    /// record's value) where they were read from it.
    fn into_owned(self, source: Option<&Bytes>) -> (ByteString, ProtectedAttributes) {
        match self {
            Self::InPlace { application_id, protected } => {
                (share(source, application_id), protected.to_attributes_within(source))
            }
            Self::Resolved(application) => {
                let LoanApplication { application_id, protected_attributes, .. } = *application;
                (application_id.into(), protected_attributes)
            }
        }
    }
}

/// Processes `records` in order; the result has one outcome per record, same positions.
pub fn process_batch(scorer: &Scorer, context: &BatchContext, records: &[InputRecord]) -> Vec<Outcome> {
    let decoder = ApplicationDecoder::new(context.writer_schemas.iter().map(|(id, schema)| (*id, schema.parsed())));
    let width = context.model.card.features.len();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; records.len()];
    let mut valid = Vec::with_capacity(records.len());
    let mut rows = Vec::with_capacity(records.len() * width);
    let processed_at = Utc::now().trunc_subsecs(6);
    for (index, record) in records.iter().enumerate() {
        let announced = context.is_announced(record);
        match decode_and_map(&decoder, context, index, record, processed_at, &mut rows) {
            Ok(item) if context.is_redelivered(record) => {
                rows.truncate(rows.len() - width);
                let application_id = item.kept.application_id().to_owned();
                outcomes[index] = Some(Outcome::Redelivered { application_id, announced });
            }
            Ok(item) => valid.push(item),
            Err(_) if announced => outcomes[index] = Some(Outcome::Announced),
            Err(dead) => outcomes[index] = Some(Outcome::DeadLetter(dead)),
        }
    }
    let cutoffs = &context.policy.cutoffs;
    let adverse = |probability: f64| probability.is_finite() && cutoffs.decide(probability) != DecisionOutcome::Approve;
    let scoring = scorer.score_and_explain(&rows, adverse);
    let reasons = adverse_reasons(context, &rows, &scoring);
    for (position, (item, (probability, reasons))) in
        valid.into_iter().zip(scoring.probabilities.into_iter().zip(reasons)).enumerate()
    {
        let index = item.index;
        let row = &rows[position * width..(position + 1) * width];
        outcomes[index] = Some(match (probability, reasons) {
            (Ok(probability), Ok(reasons)) if probability.is_finite() => {
                decide(context, &records[index], item, row, probability, reasons, processed_at)
            }
            (Ok(probability), Err(message)) if probability.is_finite() => scoring_failed(message),
            (Ok(_), _) => scoring_failed("model returned a non-finite score".into()),
            (Err(error), _) => scoring_failed(error.to_string()),
        });
    }
    outcomes.into_iter().map(|outcome| outcome.expect("every record has an outcome")).collect()
}

fn scoring_failed(message: String) -> Outcome {
    Outcome::DeadLetter(DeadLetter { kind: "scoring_failed", message })
}

/// Per row of `rows`, its adverse-action reasons: none for a row `scoring` did not explain (an
/// approval), the catalogue's selection from its contributions for one it did. The policy was
/// built from this catalogue (`DecisionPolicy::new` keeps its order): entry = position + 1.
fn adverse_reasons(context: &BatchContext, rows: &[f64], scoring: &ScoredRows) -> Vec<Result<Reasons, String>> {
    let model = &context.model;
    let (features, medians) = (&model.card.features, &model.card.feature_medians);
    let width = features.len();
    let mut results: Vec<Result<Reasons, String>> = vec![Ok(Reasons::new()); scoring.probabilities.len()];
    match &scoring.contributions {
        Ok(contributions) => {
            for (values, position) in contributions.chunks_exact(width + 1).zip(&scoring.explained) {
                let row = &rows[position * width..(position + 1) * width];
                let chosen = model.catalogue.choose(features, row, values, medians);
                let stored = chosen.map(|(entry, contribution)| StoredReason { entry: entry as i16 + 1, contribution });
                results[*position] = Ok(stored.collect());
            }
        }
        Err(error) => {
            for position in &scoring.explained {
                results[*position] = Err(format!("contribution prediction failed: {error}"));
            }
        }
    }
    results
}

fn decode_and_map<'r>(
    decoder: &ApplicationDecoder<'_>,
    context: &BatchContext,
    index: usize,
    record: &'r InputRecord,
    processed_at: DateTime<Utc>,
    rows: &mut Vec<f64>,
) -> Result<Valid<'r>, DeadLetter> {
    if let Some(error) = context.early_failures.get(&(record.partition, record.offset)) {
        return Err(error.clone().into());
    }
    let (schema_id, body) = split_frame(record.value.as_deref())?;
    let decoded = decoder.decode(schema_id, body)?;
    let application = decoded.view();
    if application.application_id.trim().is_empty() {
        return Err(DomainError::MissingField("application_id".into()).into());
    }
    if application.application_id.len() > MAX_APPLICATION_ID_BYTES {
        let max = MAX_APPLICATION_ID_BYTES;
        return Err(DomainError::TooLong { field: "application_id".into(), max }.into());
    }
    let event_time = context.event_times.check(application.event_time, processed_at)?;
    append_feature_vector(&context.model.card.features, &application.credit_request, rows)?;
    Ok(Valid { index, schema_id, kept: decoded.into(), event_time })
}

fn decide(
    context: &BatchContext,
    record: &InputRecord,
    item: Valid<'_>,
    inputs: &[f64],
    probability: f64,
    reasons: Reasons,
    processed_at: DateTime<Utc>,
) -> Outcome {
    let policy = &context.policy;
    let (application_id, protected) = item.kept.into_owned(record.value.as_ref());
    let sealed = context.sealer.as_ref().map(|keys| keys.seal(&application_id, &protected));
    let row = AuditRow {
        policy: Arc::clone(policy),
        application_id,
        outcome: policy.cutoffs.decide(probability),
        probability_of_default: probability,
        inputs: Inputs::from_slice(inputs),
        reasons,
        protected,
        sealed,
        schema_id: item.schema_id as i32,
        source_topic: Arc::clone(&record.topic),
        source_partition: record.partition,
        source_offset: record.offset,
        event_time: item.event_time.trunc_subsecs(3),
        consumed_at: record.consumed_at.trunc_subsecs(6),
        processed_at,
    };
    Outcome::Decided(Box::new(Decided { row }))
}
