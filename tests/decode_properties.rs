//! Property tests over the hot path decode → validate → features → score → decide
//! ([`process_batch`], no I/O): arbitrary bytes, wrong magic bytes, unknown schema ids,
//! truncated and over-long bodies, NaN / infinite / negative / huge amounts, unknown categories,
//! missing fields and oversized records. The worker never panics, every record gets exactly one
//! outcome, and every bad record is dead-lettered with the reason its fault calls for.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use apache_avro::writer::datum::GenericDatumWriter;
use chrono::Utc;
use credit_devtools::dataset::read_german_credit;
use credit_worker::app::{process_batch, BatchContext, WriterSchema};
use credit_worker::domain::PROTECTED_ATTRIBUTES;
use credit_worker::domain::{DecisionOutcome, LoanApplication, LOAN_APPLICATION};
use credit_worker::domain::{InputRecord, Outcome};
use credit_worker::model::ModelBundle;
use credit_worker::model::Scorer;
use proptest::prelude::*;

const KNOWN_KINDS: [&str; 13] = [
    "event_time_out_of_range",
    "empty_value",
    "bad_framing",
    "unknown_schema",
    "incompatible_schema",
    "avro_decode",
    "trailing_bytes",
    "missing_field",
    "out_of_range",
    "not_finite",
    "unknown_category",
    "wrong_type",
    "too_long",
];

struct Fixture {
    scorer: Scorer,
    context: BatchContext,
    applications: Vec<LoanApplication>,
}

// The scorer holds a LightGBM booster, which is not `Sync`: one fixture per test thread.
thread_local! {
    static FIXTURE: Fixture = fixture();
}

static ROWS: LazyLock<Vec<LoanApplication>> = LazyLock::new(|| {
    read_german_credit(&common::data_path())
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(index, row)| LoanApplication {
            application_id: format!("prop-{index}"),
            event_time: Utc::now().timestamp_millis(),
            credit_request: row.credit_request,
            protected_attributes: row.protected_attributes,
        })
        .collect()
});

fn fixture() -> Fixture {
    let bundle = ModelBundle::load(&common::model_dir()).unwrap();
    let scorer = Scorer::new(&bundle.model_text).unwrap();
    let cutoffs = bundle.card.cutoffs;
    let schemas = HashMap::from([(1, WriterSchema::Local(Arc::new(LOAN_APPLICATION.clone())))]);
    let context = BatchContext::new(Arc::new(bundle), cutoffs, schemas);
    Fixture { scorer, context, applications: ROWS.clone() }
}

fn record(value: Option<Vec<u8>>) -> InputRecord {
    InputRecord {
        topic: Arc::from("t"),
        partition: 0,
        offset: 0,
        key: None,
        value: value.map(Into::into),
        consumed_at: Utc::now(),
    }
}

fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut value = vec![0];
    value.extend_from_slice(&schema_id.to_be_bytes());
    value.extend_from_slice(body);
    value
}

fn encode(application: &LoanApplication) -> Vec<u8> {
    GenericDatumWriter::builder(&LOAN_APPLICATION).build().unwrap().write_ser_to_vec(application).unwrap()
}

/// The one outcome of one record; checks the invariants every outcome must satisfy.
fn outcome_of(value: Option<Vec<u8>>) -> Outcome {
    FIXTURE.with(|fixture| {
        let outcomes = process_batch(&fixture.scorer, &fixture.context, &[record(value)]);
        assert_eq!(outcomes.len(), 1);
        let outcome = outcomes.into_iter().next().unwrap();
        match &outcome {
            Outcome::DeadLetter(dead) => {
                assert!(KNOWN_KINDS.contains(&dead.kind), "unexpected kind {}", dead.kind);
                assert!(!dead.message.is_empty());
            }
            Outcome::Decided(decided) => {
                let decision = decided.row.decision_event();
                assert!((0.0..=1.0).contains(&decision.probability_of_default));
                assert_eq!(decision.reasons.is_empty(), decision.decision == DecisionOutcome::Approve);
                assert!(decision.reasons.iter().all(|r| !PROTECTED_ATTRIBUTES.contains(&r.feature.as_str())));
            }
            other => panic!("no record is redelivered here: {other:?}"),
        }
        outcome
    })
}

fn kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::DeadLetter(dead) => dead.kind,
        Outcome::Decided(_) => "decided",
        Outcome::Redelivered { .. } | Outcome::Stored(_) | Outcome::Announced => "redelivered",
    }
}

fn row(index: usize) -> LoanApplication {
    FIXTURE.with(|fixture| fixture.applications[index % fixture.applications.len()].clone())
}

/// A fault applied to a valid application.
#[derive(Debug, Clone)]
enum Fault {
    None,
    Amount(f64),
    Category(String),
    MissingDuration,
    Truncate(usize),
    Trailing(Vec<u8>),
    UnknownSchema(u32),
    WrongMagic(u8),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::None),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-1.0),
            Just(0.0),
            Just(1e12),
            Just(f64::MAX),
            any::<f64>()
        ]
        .prop_map(Fault::Amount),
        "[a-z ]{0,12}".prop_map(Fault::Category),
        Just(Fault::MissingDuration),
        any::<usize>().prop_map(Fault::Truncate),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Fault::Trailing),
        (2u32..1000).prop_map(Fault::UnknownSchema),
        (1u8..=255).prop_map(Fault::WrongMagic),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes, framed or not, never panic and always get exactly one known outcome.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048), framed in any::<bool>()) {
        let value = if framed { frame(1, &bytes) } else { bytes };
        let outcome = outcome_of(Some(value));
        prop_assert!(KNOWN_KINDS.contains(&kind(&outcome)) || kind(&outcome) == "decided");
    }

    /// Each fault applied to a real application gives the reason it calls for; an application
    /// without a fault is decided.
    #[test]
    fn faults_get_their_reason(index in 0usize..1000, fault in fault()) {
        let mut application = row(index);
        let mut schema_id = 1;
        let mut magic = 0u8;
        let (mut cut, mut trailing) = (None, Vec::new());
        let expected: &[&str] = match &fault {
            Fault::None => &["decided"],
            Fault::Amount(amount) => {
                application.credit_request.credit_amount = Some(*amount);
                if !amount.is_finite() { &["not_finite"] }
                else if !(1.0..=1_000_000.0).contains(amount) { &["out_of_range"] }
                else { &["decided"] }
            }
            Fault::Category(label) => {
                application.credit_request.purpose = Some(label.clone());
                &["unknown_category"]
            }
            Fault::MissingDuration => {
                application.credit_request.duration_in_month = None;
                &["missing_field"]
            }
            Fault::Truncate(at) => {
                cut = Some(*at);
                &["avro_decode", "missing_field"]
            }
            Fault::Trailing(bytes) => {
                trailing = bytes.clone();
                &["trailing_bytes"]
            }
            Fault::UnknownSchema(id) => {
                // In the worker the registry answers "unknown" first (unknown_schema); without a
                // registry the decoder refuses an id it has no reader for.
                schema_id = *id;
                &["unknown_schema", "incompatible_schema"]
            }
            Fault::WrongMagic(byte) => {
                magic = *byte;
                &["bad_framing"]
            }
        };
        let mut body = encode(&application);
        if let Some(at) = cut {
            body.truncate(at % body.len());
        }
        body.extend_from_slice(&trailing);
        let mut value = frame(schema_id, &body);
        value[0] = magic;
        let outcome = outcome_of(Some(value));
        prop_assert!(expected.contains(&kind(&outcome)), "{fault:?}: got {}", kind(&outcome));
    }
}

/// Empty, missing and oversized values (4 MiB of garbage after a body, a 1 MiB application
/// id) are dead-lettered, not decided or panicking.
#[test]
fn empty_missing_and_oversized_values() {
    assert_eq!(kind(&outcome_of(None)), "empty_value");
    assert_eq!(kind(&outcome_of(Some(Vec::new()))), "empty_value");
    let mut oversized = encode(&row(0));
    let body_length = oversized.len();
    oversized.resize(4 << 20, 7);
    let outcome = outcome_of(Some(frame(1, &oversized)));
    assert_eq!(kind(&outcome), "trailing_bytes", "{body_length}-byte application followed by garbage");
    let huge_string = LoanApplication { application_id: "x".repeat(1 << 20), ..row(1) };
    assert_eq!(kind(&outcome_of(Some(frame(1, &encode(&huge_string))))), "too_long");
}
