//! The `LoanDecision` Avro body written straight from an audit row: the bytes apache-avro writes
//! for [`AuditRow::decision_event`] (the tests compare them), without building the event's
//! strings or going through serde. The schema is fixed and bundled (`schemas/loan_decision.avsc`);
//! a change to it must change this writer too, which the tests catch.

use crate::domain::{decision_id, AuditRow, DecisionOutcome};

/// A Confluent-framed `LoanDecision` for `row`, under registry id `schema_id`.
pub fn encode_decision(row: &AuditRow, schema_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + 96 * row.reasons.len());
    encode_decision_into(&mut out, row, schema_id);
    out
}

/// [`encode_decision`], appended to `out` (a batch's decisions share one buffer).
pub fn encode_decision_into(out: &mut Vec<u8>, row: &AuditRow, schema_id: u32) {
    let policy = &row.policy;
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    let mut id = uuid::Uuid::encode_buffer();
    text(out, decision_id(&row.application_id, &policy.model_sha256).hyphenated().encode_lower(&mut id));
    text(out, &row.application_id);
    long(out, symbol(row.outcome));
    double(out, row.probability_of_default);
    text(out, &policy.model_version);
    text(out, &policy.model_sha256);
    double(out, policy.cutoffs.approve_below);
    double(out, policy.cutoffs.decline_at_or_above);
    long(out, row.event_time.timestamp_millis());
    long(out, row.processed_at.timestamp_millis());
    text(out, &row.source_topic);
    long(out, i64::from(row.source_partition));
    long(out, row.source_offset);
    let reasons = || row.reasons.iter().filter_map(|reason| Some((policy.reason(reason.entry)?, reason.contribution)));
    let count = reasons().count();
    if count > 0 {
        long(out, count as i64);
        for (entry, contribution) in reasons() {
            text(out, &entry.code);
            text(out, &entry.feature);
            text(out, &entry.text);
            double(out, contribution);
        }
    }
    long(out, 0);
    text(out, &policy.catalogue_version);
}

/// The enum's index in the schema's symbols (APPROVE, DECLINE, REVIEW).
fn symbol(outcome: DecisionOutcome) -> i64 {
    match outcome {
        DecisionOutcome::Approve => 0,
        DecisionOutcome::Decline => 1,
        DecisionOutcome::Review => 2,
    }
}

/// Avro `int` and `long`: zig-zag, then 7 bits per byte, low first.
fn long(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn text(out: &mut Vec<u8>, value: &str) {
    long(out, value.len() as i64);
    out.extend_from_slice(value.as_bytes());
}

fn double(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use apache_avro::writer::datum::GenericDatumWriter;
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::codec::encode_framed;
    use crate::domain::{Cutoffs, DecisionPolicy, PolicyReason, ProtectedAttributes, StoredReason, LOAN_DECISION};

    fn row(outcome: DecisionOutcome, reasons: Vec<StoredReason>, offset: i64) -> AuditRow {
        let policy = DecisionPolicy {
            model_version: "credit-v1".into(),
            model_sha256: "35bf70c4".into(),
            cutoffs: Cutoffs { approve_below: 0.3, decline_at_or_above: 0.55 },
            catalogue_version: "rc-2".into(),
            feature_names: vec!["credit_amount".into(), "duration_in_month".into()],
            reasons: vec![
                PolicyReason { code: "R06".into(), feature: "credit_amount".into(), text: "Amount too high".into() },
                PolicyReason {
                    code: "R02".into(),
                    feature: "duration_in_month".into(),
                    text: "Term ¿too long?".into(),
                },
            ],
        };
        AuditRow {
            policy: Arc::new(policy),
            application_id: format!("app-{offset}-ü").into(),
            outcome,
            probability_of_default: 0.1 + offset as f64 / 1e4,
            inputs: vec![1169.0, 6.0].into(),
            reasons: reasons.into(),
            protected: ProtectedAttributes::default(),
            sealed: None,
            schema_id: 1,
            source_topic: Arc::from("loan-applications"),
            source_partition: (offset % 7) as i32,
            source_offset: offset,
            event_time: Utc.timestamp_millis_opt(1_700_000_000_000 - offset % 3_000_000_000_000).unwrap(),
            consumed_at: Utc.timestamp_millis_opt(1_700_000_000_100).unwrap(),
            processed_at: Utc.timestamp_millis_opt(1_700_000_000_200 + offset).unwrap(),
        }
    }

    /// Every outcome, with no, one and several reasons (an unknown entry left out, as in the
    /// event), small and large offsets and negative times: the bytes apache-avro writes.
    #[test]
    fn bytes_equal_apache_avro() {
        let writer = GenericDatumWriter::builder(&LOAN_DECISION).build().unwrap();
        let reason = |entry, contribution| StoredReason { entry, contribution };
        let reason_sets = [vec![], vec![reason(2, 0.4)], vec![reason(2, 0.4), reason(9, 0.2), reason(1, -0.1)]];
        for outcome in [DecisionOutcome::Approve, DecisionOutcome::Decline, DecisionOutcome::Review] {
            for reasons in &reason_sets {
                for offset in [0, 1, 63, 64, 8191, 1 << 40, 1_000_000_000_000_000] {
                    let row = row(outcome, reasons.clone(), offset);
                    let expected = encode_framed(&writer, &row.decision_event(), 300).unwrap();
                    assert_eq!(encode_decision(&row, 300), expected, "{outcome:?} {reasons:?} {offset}");
                }
            }
        }
    }
}
