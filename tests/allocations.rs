//! What the decision path allocates per decision: a scoring thread's work on a batch (decode,
//! score, explain, decide, seal) and the source's copy of the consumed records.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use apache_avro::writer::datum::GenericDatumWriter;
use chrono::Utc;
use credit_devtools::dataset::read_german_credit;
use credit_worker::app::{process_batch, BatchContext, WriterSchema};
use credit_worker::codec::ProtectedKeys;
use credit_worker::domain::{InputRecord, LoanApplication, Outcome, LOAN_APPLICATION};
use credit_worker::model::{ModelBundle, Scorer};
use credit_worker::sources::RecordBuffer;

/// Counts allocations (and reallocations) while switched on.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `work`.
fn allocations<T>(work: impl FnOnce() -> T) -> (usize, T) {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let result = work();
    COUNTING.store(false, Ordering::Relaxed);
    (ALLOCATIONS.load(Ordering::Relaxed), result)
}

/// Confluent-framed application bodies (schema id 1) of the data set's rows.
fn framed_values(count: usize) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = read_german_credit(&root.join("data/german_credit.csv")).expect("data set");
    let writer = GenericDatumWriter::builder(&LOAN_APPLICATION).build().expect("writer");
    let now = Utc::now().timestamp_millis();
    (0..count)
        .map(|index| {
            let row = &data[index % data.len()];
            let application = LoanApplication {
                application_id: format!("allocation-test-application-{index:08}"),
                event_time: now,
                credit_request: row.credit_request.clone(),
                protected_attributes: row.protected_attributes.clone(),
            };
            let mut value = vec![0, 0, 0, 0, 1];
            value.extend(writer.write_ser_to_vec(&application).expect("encode"));
            (application.application_id, value)
        })
        .collect()
}

/// Records as the source makes them: one buffer per batch.
fn records(values: &[(String, Vec<u8>)]) -> Vec<InputRecord> {
    let mut buffer = RecordBuffer::new(Arc::from("loan-applications"), values.len());
    for (offset, (key, value)) in values.iter().enumerate() {
        buffer.push((offset % 4) as i32, offset as i64, Some(key.as_bytes()), Some(value), Utc::now());
    }
    buffer.finish()
}

/// Deciding a batch allocates one block per decision, its box, and nothing else per record or
/// per decision: inputs, reasons and sealed attributes are inline, the application id and the
/// protected texts share the consumed batch's buffers. Making the batch's records from consumed
/// messages copies them into a few 64 KiB chunks, not one block per key and per value.
#[test]
fn deciding_allocates_one_box_per_decision() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bundle = Arc::new(ModelBundle::load(&root.join("models/credit-v1")).expect("committed model"));
    let scorer = Scorer::new(&bundle.model_text).expect("scorer");
    let schemas = HashMap::from([(1, WriterSchema::Local(Arc::new(LOAN_APPLICATION.clone())))]);
    let mut context = BatchContext::new(Arc::clone(&bundle), bundle.card.cutoffs, schemas);
    let keys = ProtectedKeys::parse(&ProtectedKeys::generate()).expect("key file");
    context.sealer = Some(Arc::new(keys));
    let mut per_batch = Vec::new();
    for size in [400, 800] {
        let values = framed_values(size);
        let (making, records) = allocations(|| records(&values));
        let _ = process_batch(&scorer, &context, &records[..8]);
        let (deciding, outcomes) = allocations(|| process_batch(&scorer, &context, &records));
        let decided = outcomes.iter().filter(|outcome| matches!(outcome, Outcome::Decided(_))).count();
        assert_eq!(decided, size, "every record decided");
        per_batch.push((size, making, deciding));
    }
    let [(small, making_small, deciding_small), (large, making_large, deciding_large)] = per_batch[..] else {
        unreachable!()
    };
    let extra = |a: usize, b: usize| b.saturating_sub(a) as f64 / (large - small) as f64;
    let (making, deciding) = (extra(making_small, making_large), extra(deciding_small, deciding_large));
    eprintln!(
        "allocations: making records {making_small} / {making_large}, deciding {deciding_small} / {deciding_large}"
    );
    assert!(
        making < 0.02,
        "{making:.2} allocations per consumed record ({making_small} for {small}, {making_large} for {large})"
    );
    assert!(
        deciding < 1.01,
        "{deciding:.2} allocations per decision ({deciding_small} for {small}, {deciding_large} for {large})"
    );
}
