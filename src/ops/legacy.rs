//! Audit rows written before the lean table (`decision_audit_legacy`), kept where they are and
//! verified as they were written: each row's hash covers its canonical JSON content, its chain
//! key and sequence number, and the previous row's hash. Floats enter as their IEEE-754 bits and
//! timestamps as microseconds, so a row read back hashes as it did when written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::domain::{AdverseReason, DecisionOutcome, ProtectedAttributes, GENESIS};
use futures::TryStreamExt;
use sqlx::PgPool;

use super::report::{Recorded, VerifyReport};
use super::OpsError;
use crate::sinks::SinkError;

/// One legacy audit row.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyRow {
    pub decision_id: uuid::Uuid,
    pub application_id: String,
    pub model_version: String,
    pub model_sha256: String,
    pub decision: &'static str,
    pub probability_of_default: f64,
    pub approve_below: f64,
    pub decline_at_or_above: f64,
    /// Model inputs exactly as scored: feature name → value.
    pub model_inputs: serde_json::Value,
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

/// A row's position in its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub chain_key: String,
    pub seq: i64,
    pub prev_hash: [u8; 32],
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
pub fn row_hash(row: &LegacyRow, link: &Link) -> [u8; 32] {
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

impl LegacyRow {
    /// The row as re-scoring compares it.
    pub fn recorded(&self) -> Recorded {
        let inputs = match &self.model_inputs {
            serde_json::Value::Object(map) => {
                map.iter().filter_map(|(name, value)| Some((name.clone(), value.as_f64()?))).collect()
            }
            _ => Default::default(),
        };
        let outcome = match self.decision {
            "approve" => DecisionOutcome::Approve,
            "review" => DecisionOutcome::Review,
            _ => DecisionOutcome::Decline,
        };
        Recorded {
            label: format!("decision {}", self.decision_id),
            model_version: self.model_version.clone(),
            model_sha256: self.model_sha256.clone(),
            inputs,
            probability_of_default: self.probability_of_default,
            outcome,
            cutoffs: crate::domain::Cutoffs {
                approve_below: self.approve_below,
                decline_at_or_above: self.decline_at_or_above,
            },
            catalogue_version: self.reason_catalogue_version.clone(),
            reasons: self.reasons.clone(),
        }
    }
}

/// Columns of an audit row as read back, in [`read_legacy_row`] order.
pub const AUDIT_COLUMNS: &str = "decision_id, application_id, model_version, model_sha256, decision, \
     probability_of_default, approve_below, decline_at_or_above, model_inputs, protected_attributes, schema_id, \
     source_topic, source_partition, source_offset, event_time, consumed_at, processed_at, reasons, \
     reason_catalogue_version";

/// An audit row as stored, from a query selecting [`AUDIT_COLUMNS`] first.
pub fn read_legacy_row(row: &PgRow) -> Result<LegacyRow, SinkError> {
    let decision_id: uuid::Uuid = row.try_get(0)?;
    let unreadable = |reason: String| SinkError::Unreadable { decision_id: decision_id.to_string(), reason };
    let decision: String = row.try_get(4)?;
    let decision = match decision.as_str() {
        "approve" => DecisionOutcome::Approve,
        "decline" => DecisionOutcome::Decline,
        "review" => DecisionOutcome::Review,
        other => return Err(unreadable(format!("unknown decision `{other}`"))),
    };
    let protected: serde_json::Value = row.try_get(9)?;
    let reasons: serde_json::Value = row.try_get(17)?;
    Ok(LegacyRow {
        decision_id,
        application_id: row.try_get(1)?,
        model_version: row.try_get(2)?,
        model_sha256: row.try_get(3)?,
        decision: decision.as_str(),
        probability_of_default: row.try_get(5)?,
        approve_below: row.try_get(6)?,
        decline_at_or_above: row.try_get(7)?,
        model_inputs: row.try_get(8)?,
        protected_attributes: serde_json::from_value(protected).map_err(|error| unreadable(error.to_string()))?,
        schema_id: row.try_get(10)?,
        source_topic: row.try_get(11)?,
        source_partition: row.try_get(12)?,
        source_offset: row.try_get(13)?,
        event_time: row.try_get(14)?,
        consumed_at: row.try_get(15)?,
        processed_at: row.try_get(16)?,
        reasons: serde_json::from_value(reasons).map_err(|error| unreadable(error.to_string()))?,
        reason_catalogue_version: row.try_get(18)?,
    })
}

/// Checks every legacy chain.
pub async fn verify_legacy_chains(pool: &PgPool, report: &mut VerifyReport) -> Result<(), OpsError> {
    report.unchained_rows = sqlx::query_scalar("SELECT count(*) FROM decision_audit_legacy WHERE chain_key IS NULL")
        .fetch_one(pool)
        .await?;
    let heads = sqlx::query(
        "SELECT chain_key, last_seq, last_hash, pruned_through_seq, pruned_through_hash FROM audit_chain_heads_legacy \
         ORDER BY chain_key",
    )
    .fetch_all(pool)
    .await?;
    let query = format!(
        "SELECT {AUDIT_COLUMNS}, chain_seq, prev_hash, row_hash FROM decision_audit_legacy WHERE chain_key = $1 \
         AND chain_seq > $2 ORDER BY chain_seq"
    );
    for head in heads {
        let key: String = head.get(0);
        let (last_seq, last_hash): (i64, Vec<u8>) = (head.get(1), head.get(2));
        let pruned_seq: i64 = head.get(3);
        let mut previous = hash_of(head.get::<Option<Vec<u8>>, _>(4).as_deref().unwrap_or(&GENESIS));
        let mut expected_seq = pruned_seq + 1;
        let mut rows = sqlx::query(&query).bind(&key).bind(pruned_seq).fetch(pool);
        let mut failures = 0;
        while let Some(stored) = rows.try_next().await? {
            let row = read_legacy_row(&stored)?;
            let seq: i64 = stored.get(19);
            let prev_hash = hash_of(&stored.get::<Vec<u8>, _>(20));
            let stored_hash = hash_of(&stored.get::<Vec<u8>, _>(21));
            report.chain_rows_checked += 1;
            if seq != expected_seq {
                failures += 1;
                report.chain_failures.push(format!("{key}: rows {expected_seq}..{} are missing", seq - 1));
            }
            if prev_hash != previous {
                failures += 1;
                report.chain_failures.push(format!("{key}: row {seq} does not link to its predecessor"));
            }
            let link = Link { chain_key: key.clone(), seq, prev_hash };
            if row_hash(&row, &link) != stored_hash {
                failures += 1;
                report
                    .chain_failures
                    .push(format!("{key}: row {seq} (decision {}) was altered after it was written", row.decision_id));
            }
            previous = stored_hash;
            expected_seq = seq + 1;
        }
        if expected_seq - 1 != last_seq || (last_seq > pruned_seq && previous[..] != last_hash[..]) {
            failures += 1;
            report
                .chain_failures
                .push(format!("{key}: ends at row {} but its head is row {last_seq}", expected_seq - 1));
        }
        report.chains_checked += 1;
        if failures > 0 {
            tracing::warn!(chain = %key, failures, "audit chain check failed");
        }
    }
    Ok(())
}

fn hash_of(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().unwrap_or([0xff; 32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn row() -> LegacyRow {
        LegacyRow {
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
        let link = Link { chain_key: "t/0".into(), seq: 1, prev_hash: GENESIS };
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
