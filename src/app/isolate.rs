//! Poison records: a panic while processing a batch must cost the worker one record, not the
//! stream. The batch is processed whole; if that panics, each record alone, and a record that
//! panics on its own is dead-lettered as `internal_error` (or, if its outcome was announced
//! before a restart, left as it was).

use std::panic::{catch_unwind, AssertUnwindSafe};

use tracing::error;

use crate::domain::{DeadLetter, InputRecord, Outcome};

/// `process(records)`; if that panics, `process` of each record alone.
pub fn isolate_panics(
    records: &[InputRecord],
    is_announced: impl Fn(&InputRecord) -> bool,
    process: impl Fn(&[InputRecord]) -> Vec<Outcome>,
) -> Vec<Outcome> {
    if let Ok(outcomes) = catch_unwind(AssertUnwindSafe(|| process(records))) {
        return outcomes;
    }
    error!(records = records.len(), "processing a batch panicked; processing its records one by one");
    let alone = |record: &InputRecord| {
        let outcome = catch_unwind(AssertUnwindSafe(|| process(std::slice::from_ref(record))));
        if let Some(outcome) = outcome.ok().and_then(|mut outcomes| outcomes.pop()) {
            return outcome;
        }
        let (partition, offset) = (record.partition, record.offset);
        error!(partition, offset, "processing a record panicked: it is dead-lettered as internal_error");
        if is_announced(record) {
            return Outcome::Announced;
        }
        Outcome::DeadLetter(DeadLetter {
            kind: "internal_error",
            message: "the worker failed on this record (a defect of the worker); see its log".into(),
        })
    };
    records.iter().map(alone).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64) -> InputRecord {
        InputRecord { topic: "t".into(), partition: 0, offset, key: None, value: None, consumed_at: chrono::Utc::now() }
    }

    fn kinds(outcomes: &[Outcome]) -> Vec<&'static str> {
        let kind = |outcome: &Outcome| match outcome {
            Outcome::DeadLetter(dead) => dead.kind,
            Outcome::Announced => "announced",
            _ => "other",
        };
        outcomes.iter().map(kind).collect()
    }

    /// Stands in for `process_batch`: one `fine` outcome per record, a panic if the batch holds
    /// the poison offset.
    fn process(poison: i64) -> impl Fn(&[InputRecord]) -> Vec<Outcome> {
        move |records: &[InputRecord]| {
            assert!(records.iter().all(|record| record.offset != poison), "poison record");
            records.iter().map(|_| Outcome::DeadLetter(DeadLetter { kind: "fine", message: String::new() })).collect()
        }
    }

    /// The poison record alone is dead-lettered; the others keep their outcomes, in order; a
    /// poison record announced before a restart is not announced again.
    #[test]
    fn a_poison_record_costs_only_itself() {
        let records: Vec<InputRecord> = (0..5).map(record).collect();
        let outcomes = isolate_panics(&records, |_| false, process(2));
        assert_eq!(kinds(&outcomes), ["fine", "fine", "internal_error", "fine", "fine"]);
        let outcomes = isolate_panics(&records, |record| record.offset < 3, process(2));
        assert_eq!(kinds(&outcomes), ["fine", "fine", "announced", "fine", "fine"]);
        assert_eq!(kinds(&isolate_panics(&records, |_| false, process(9))), ["fine"; 5]);
    }
}
