//! The audit hash chain (pure). Each row's hash covers its canonical content, its chain key and
//! sequence number, and the previous row's hash, so editing, deleting or reordering a row breaks
//! every later link. Floats enter as their IEEE-754 bits and timestamps as microseconds, so the
//! hash of a row read back from PostgreSQL equals the hash computed before it was written.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::events::ProtectedAttributes;
use crate::process::AuditRow;

/// `prev_hash` of the first row of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

/// A row's position in its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub chain_key: String,
    pub seq: i64,
    pub prev_hash: [u8; 32],
}

/// Chain of a source partition.
pub fn chain_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

#[derive(Serialize)]
struct Canonical<'a> {
    chain_key: &'a str,
    seq: i64,
    prev_hash: String,
    decision_id: String,
    application_id: &'a str,
    model_version: &'a str,
    model_sha256: &'a str,
    decision: &'a str,
    probability_of_default: u64,
    approve_below: u64,
    decline_at_or_above: u64,
    model_inputs: BTreeMap<&'a str, Option<u64>>,
    reasons: Vec<(&'a str, &'a str, &'a str, u64)>,
    reason_catalogue_version: &'a str,
    protected_attributes: &'a ProtectedAttributes,
    schema_id: i32,
    source_topic: &'a str,
    source_partition: i32,
    source_offset: i64,
    event_time_micros: i64,
    consumed_at_micros: i64,
    processed_at_micros: i64,
}

/// sha256 of the row's canonical form at `link`.
pub fn row_hash(row: &AuditRow, link: &Link) -> [u8; 32] {
    let model_inputs = match &row.model_inputs {
        serde_json::Value::Object(map) => {
            map.iter().map(|(name, value)| (name.as_str(), value.as_f64().map(f64::to_bits))).collect()
        }
        _ => BTreeMap::new(),
    };
    let canonical = Canonical {
        chain_key: &link.chain_key,
        seq: link.seq,
        prev_hash: hex::encode(link.prev_hash),
        decision_id: row.decision_id.to_string(),
        application_id: &row.application_id,
        model_version: &row.model_version,
        model_sha256: &row.model_sha256,
        decision: row.decision,
        probability_of_default: row.probability_of_default.to_bits(),
        approve_below: row.approve_below.to_bits(),
        decline_at_or_above: row.decline_at_or_above.to_bits(),
        model_inputs,
        reasons: row
            .reasons
            .iter()
            .map(|reason| {
                (reason.code.as_str(), reason.feature.as_str(), reason.text.as_str(), reason.contribution.to_bits())
            })
            .collect(),
        reason_catalogue_version: &row.reason_catalogue_version,
        protected_attributes: &row.protected_attributes,
        schema_id: row.schema_id,
        source_topic: &row.source_topic,
        source_partition: row.source_partition,
        source_offset: row.source_offset,
        event_time_micros: row.event_time.timestamp_micros(),
        consumed_at_micros: row.consumed_at.timestamp_micros(),
        processed_at_micros: row.processed_at.timestamp_micros(),
    };
    let bytes = serde_json::to_vec(&canonical).expect("canonical audit rows serialise");
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn row() -> AuditRow {
        AuditRow {
            decision_id: uuid::Uuid::nil(),
            application_id: "app-1".into(),
            model_version: "credit-v1".into(),
            model_sha256: "ab".into(),
            decision: "decline",
            probability_of_default: 0.61,
            approve_below: 0.3,
            decline_at_or_above: 0.55,
            model_inputs: serde_json::json!({"credit_amount": 1169.0, "duration_in_month": 6.0}),
            reasons: vec![],
            reason_catalogue_version: "rc".into(),
            protected_attributes: ProtectedAttributes::default(),
            schema_id: 1,
            source_topic: "t".into(),
            source_partition: 0,
            source_offset: 7,
            event_time: Utc.timestamp_millis_opt(1_700_000_000_000).unwrap(),
            consumed_at: Utc.timestamp_millis_opt(1_700_000_000_100).unwrap(),
            processed_at: Utc.timestamp_millis_opt(1_700_000_000_200).unwrap(),
        }
    }

    /// Any change to the content, the position or the previous hash changes the row hash; the key
    /// order of the inputs object does not.
    #[test]
    fn hash_covers_content_and_link() {
        let link = Link { chain_key: chain_key("t", 0), seq: 1, prev_hash: GENESIS };
        let base = row_hash(&row(), &link);
        assert_eq!(base, row_hash(&row(), &link));
        let mut edited = row();
        edited.probability_of_default = 0.610_000_000_000_000_1;
        assert_ne!(base, row_hash(&edited, &link));
        let mut edited = row();
        edited.model_inputs = serde_json::json!({"credit_amount": 1170.0, "duration_in_month": 6.0});
        assert_ne!(base, row_hash(&edited, &link));
        let mut reordered = row();
        reordered.model_inputs = serde_json::json!({"duration_in_month": 6.0, "credit_amount": 1169.0});
        assert_eq!(base, row_hash(&reordered, &link));
        assert_ne!(base, row_hash(&row(), &Link { seq: 2, ..link.clone() }));
        assert_ne!(base, row_hash(&row(), &Link { prev_hash: [1; 32], ..link }));
    }
}
