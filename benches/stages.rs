//! Micro-benchmarks of the hot stages, on the German Credit rows and the committed model:
//! Avro decode, validation + feature mapping, LightGBM scoring (single-row fast path vs one
//! batch call), TreeSHAP reasons (alone, and with scoring for the adverse rows as a batch takes
//! them), the monitoring window update, audit row hashing, and a whole
//! 500-record batch through `process_batch` (everything a scoring thread does per batch).
//!
//! `cargo bench --bench stages` (or `make bench`); figures are per element where a throughput is set.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use apache_avro::writer::datum::GenericDatumWriter;
use chrono::Utc;
use credit_devtools::dataset::read_german_credit;
use credit_worker::app::{process_batch, BatchContext, WriterSchema};
use credit_worker::codec::ApplicationDecoder;
use credit_worker::config::WorkerConfig;
use credit_worker::domain::append_feature_vector;
use credit_worker::domain::GENESIS;
use credit_worker::domain::{DecisionOutcome, InputRecord, Outcome};
use credit_worker::domain::{LoanApplication, LOAN_APPLICATION};
use credit_worker::model::ModelBundle;
use credit_worker::model::Scorer;
use credit_worker::monitor::Monitoring;
use credit_worker::sources::RecordBuffer;
use credit_worker::telemetry::Metrics;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const SCHEMA_ID: u32 = 1;
const BATCH: usize = 500;

struct Fixture {
    bundle: Arc<ModelBundle>,
    scorer: Scorer,
    applications: Vec<LoanApplication>,
    bodies: Vec<Vec<u8>>,
    rows: Vec<f64>,
    width: usize,
}

fn fixture() -> Fixture {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bundle = Arc::new(ModelBundle::load(&root.join("models/credit-v1")).expect("committed model"));
    let scorer = Scorer::new(&bundle.model_text).expect("scorer");
    let data = read_german_credit(&root.join("data/german_credit.csv")).expect("data set");
    let now = Utc::now().timestamp_millis();
    let applications: Vec<LoanApplication> = data
        .into_iter()
        .enumerate()
        .map(|(index, row)| LoanApplication {
            application_id: format!("bench-{index:08}"),
            event_time: now,
            credit_request: row.credit_request,
            protected_attributes: row.protected_attributes,
        })
        .collect();
    let writer = GenericDatumWriter::builder(&LOAN_APPLICATION).build().expect("writer");
    let bodies = applications.iter().map(|application| writer.write_ser_to_vec(application).expect("encode")).collect();
    let width = bundle.card.features.len();
    let mut rows = Vec::with_capacity(applications.len() * width);
    for application in &applications {
        append_feature_vector(&bundle.card.features, &application.credit_request.view(), &mut rows).expect("valid row");
    }
    Fixture { bundle, scorer, applications, bodies, rows, width }
}

fn context(fixture: &Fixture) -> BatchContext {
    let schemas: HashMap<u32, WriterSchema> =
        [(SCHEMA_ID, WriterSchema::Local(Arc::new(LOAN_APPLICATION.clone())))].into_iter().collect();
    BatchContext::new(Arc::clone(&fixture.bundle), fixture.bundle.card.cutoffs, schemas)
}

fn records(fixture: &Fixture) -> Vec<InputRecord> {
    let mut buffer = RecordBuffer::new(Arc::from("loan-applications"), BATCH);
    for index in 0..BATCH {
        let body = &fixture.bodies[index % fixture.bodies.len()];
        let mut value = Vec::with_capacity(body.len() + 5);
        value.push(0);
        value.extend_from_slice(&SCHEMA_ID.to_be_bytes());
        value.extend_from_slice(body);
        let key = fixture.applications[index % fixture.applications.len()].application_id.as_bytes();
        buffer.push((index % 4) as i32, index as i64, Some(key), Some(&value), Utc::now());
    }
    buffer.finish()
}

fn stages(c: &mut Criterion) {
    let fixture = fixture();
    let count = fixture.applications.len();
    let mut group = c.benchmark_group("stages");
    group.throughput(Throughput::Elements(count as u64));

    let decoder = ApplicationDecoder::new([(SCHEMA_ID, &*LOAN_APPLICATION)]);
    group.bench_function("avro_decode", |b| {
        b.iter(|| {
            for body in &fixture.bodies {
                black_box(decoder.decode(SCHEMA_ID, body).expect("decodes"));
            }
        })
    });

    let mut out = Vec::with_capacity(fixture.rows.len());
    group.bench_function("validate_and_map_features", |b| {
        b.iter(|| {
            out.clear();
            for application in &fixture.applications {
                append_feature_vector(&fixture.bundle.card.features, &application.credit_request.view(), &mut out)
                    .expect("valid");
            }
            black_box(&out);
        })
    });

    group.bench_function("score_single_row_fast", |b| {
        b.iter(|| {
            for row in fixture.rows.chunks_exact(fixture.width) {
                black_box(fixture.scorer.score_row(row).expect("scores"));
            }
        })
    });
    group.bench_function("score_batch_call", |b| {
        b.iter(|| black_box(fixture.scorer.score_batch(&fixture.rows).expect("scores")))
    });

    let contributions = fixture.scorer.contributions(&fixture.rows).expect("contributions");
    group.bench_function("treeshap_contributions", |b| {
        b.iter(|| black_box(fixture.scorer.contributions(&fixture.rows).expect("contributions")))
    });
    let cutoffs = fixture.bundle.card.cutoffs;
    let adverse = |probability: f64| cutoffs.decide(probability) != DecisionOutcome::Approve;
    group.bench_function("score_and_explain_adverse", |b| {
        b.iter(|| black_box(fixture.scorer.score_and_explain(&fixture.rows, adverse)))
    });
    group.bench_function("reason_selection", |b| {
        let card = &fixture.bundle.card;
        b.iter(|| {
            for (row, values) in
                fixture.rows.chunks_exact(fixture.width).zip(contributions.chunks_exact(fixture.width + 1))
            {
                black_box(fixture.bundle.catalogue.reasons(&card.features, row, values, &card.feature_medians));
            }
        })
    });

    let context = context(&fixture);
    let batch = records(&fixture);
    let audit_rows: Vec<_> = process_batch(&fixture.scorer, &context, &batch)
        .into_iter()
        .filter_map(|outcome| match outcome {
            Outcome::Decided(decided) => Some(decided.row),
            _ => None,
        })
        .collect();
    group.throughput(Throughput::Elements(audit_rows.len() as u64));
    let config =
        WorkerConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"), &BTreeMap::new())
            .expect("default config");
    let monitoring = Monitoring::new(&config, &fixture.bundle.card, Metrics::new());
    // The monitors per batch: the counts the audit transaction persists, then the windows fed
    // from them.
    group.bench_function("window_update", |b| {
        let rows: Vec<&_> = audit_rows.iter().collect();
        b.iter(|| monitoring.record_counts(&monitoring.bucket_counts(&rows)))
    });
    let keys = credit_worker::codec::ProtectedKeys::parse(&credit_worker::codec::ProtectedKeys::generate()).unwrap();
    group.bench_function("audit_row_seal_and_hash", |b| {
        b.iter(|| {
            for row in &audit_rows {
                let sealed = keys.seal(&row.application_id, &row.protected);
                black_box(row.hash(1, &GENESIS, Some(&sealed)));
            }
        })
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("process_batch_500", |b| {
        b.iter_batched(
            || batch.clone(),
            |records| black_box(process_batch(&fixture.scorer, &context, &records)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
