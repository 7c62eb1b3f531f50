//! The audit row and its hash chain (pure). A row is what the decision was made from and what it
//! was: inputs in model-card order, the outcome and probability, reasons as catalogue entries with
//! their contributions, the protected attributes (monitoring only), times, and where it came
//! from. Its policy (model, cutoffs, catalogue) is shared. The published `LoanDecision` is built
//! from the row, so a stored row republishes the identical event.
//!
//! The hash covers a compact binary encoding of the row and its policy, the row's place (topic,
//! partition, offset, position in the partition's chain) and the previous row's hash: editing,
//! deleting or reordering a row breaks every later link. Floats enter as IEEE-754 bits and times as
//! microseconds, so a row read back from PostgreSQL hashes the same.

use std::sync::Arc;

use bytestring::ByteString;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use smallvec::SmallVec;

use super::decision::decision_id;
use super::events::{AdverseReason, DecisionOutcome, LoanDecision, ProtectedAttributes};
use super::policy::DecisionPolicy;

/// `prev_hash` of the first row of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

/// A reason as stored: the 1-based catalogue entry and the feature's contribution (log-odds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredReason {
    pub entry: i16,
    pub contribution: f64,
}

/// Model inputs of a row: inline up to 24 features (no allocation per decision).
pub type Inputs = SmallVec<[f64; 24]>;

/// Reasons of a row: at most [`super::MAX_REASONS`], inline.
pub type Reasons = SmallVec<[StoredReason; 4]>;

/// Sealed protected attributes: inline up to 96 bytes (the data set's take up to 87).
pub type SealedBytes = SmallVec<[u8; 96]>;

/// One audit row. A new row's application id and protected texts share the consumed batch's
/// buffer; its inputs, reasons and sealed attributes are inline.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub policy: Arc<DecisionPolicy>,
    pub application_id: ByteString,
    pub outcome: DecisionOutcome,
    pub probability_of_default: f64,
    /// Model inputs exactly as scored, in the policy's feature order.
    pub inputs: Inputs,
    /// Adverse-action reasons, principal first (empty for approvals).
    pub reasons: Reasons,
    /// Monitoring-only protected attributes (in memory; at rest they are sealed).
    pub protected: ProtectedAttributes,
    /// The protected attributes as stored, sealed (see `codec::ProtectedKeys`): set on rows read
    /// back that were written sealed and on new rows sealed when decided; `None` on new rows the
    /// sink is to seal, and on rows written before sealing.
    pub sealed: Option<SealedBytes>,
    pub schema_id: i32,
    pub source_topic: Arc<str>,
    pub source_partition: i32,
    pub source_offset: i64,
    pub event_time: DateTime<Utc>,
    pub consumed_at: DateTime<Utc>,
    pub processed_at: DateTime<Utc>,
}

/// The key an application is decided once under: the first 16 bytes of sha256(application id)
/// (in SQL: `substring(sha256(convert_to(application_id, 'UTF8')) FROM 1 FOR 16)`).
pub fn application_key(application_id: &str) -> [u8; 16] {
    let digest = Sha256::digest(application_id.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Outcome as stored: 0 approve, 1 review, 2 decline.
pub fn outcome_code(outcome: DecisionOutcome) -> i16 {
    match outcome {
        DecisionOutcome::Approve => 0,
        DecisionOutcome::Review => 1,
        DecisionOutcome::Decline => 2,
    }
}

/// The outcome stored as `code`.
pub fn outcome_of(code: i16) -> Option<DecisionOutcome> {
    match code {
        0 => Some(DecisionOutcome::Approve),
        1 => Some(DecisionOutcome::Review),
        2 => Some(DecisionOutcome::Decline),
        _ => None,
    }
}

impl AuditRow {
    /// The decision event announced for this row.
    pub fn decision_event(&self) -> LoanDecision {
        let policy = &self.policy;
        let reasons = self
            .reasons
            .iter()
            .filter_map(|reason| {
                let entry = policy.reason(reason.entry)?;
                Some(AdverseReason {
                    code: entry.code.clone(),
                    feature: entry.feature.clone(),
                    text: entry.text.clone(),
                    contribution: reason.contribution,
                })
            })
            .collect();
        LoanDecision {
            decision_id: decision_id(&self.application_id, &policy.model_sha256).to_string(),
            application_id: self.application_id.to_string(),
            decision: self.outcome,
            probability_of_default: self.probability_of_default,
            model_version: policy.model_version.clone(),
            model_sha256: policy.model_sha256.clone(),
            approve_below: policy.cutoffs.approve_below,
            decline_at_or_above: policy.cutoffs.decline_at_or_above,
            event_time: self.event_time.timestamp_millis(),
            processed_at: self.processed_at.timestamp_millis(),
            source_topic: self.source_topic.to_string(),
            source_partition: self.source_partition,
            source_offset: self.source_offset,
            reasons,
            reason_catalogue_version: policy.catalogue_version.clone(),
        }
    }

    /// sha256 of the row's binary encoding at position `seq` of its chain, after `prev_hash`.
    /// With `sealed` (v3, rows written sealed) it covers the sealed protected attributes, so a
    /// chain verifies without the key; without (v2, older rows) it covers them in plain.
    pub fn hash(&self, seq: i64, prev_hash: &[u8; 32], sealed: Option<&[u8]>) -> [u8; 32] {
        let mut hasher = Sha256::new();
        let mut text = |value: &dyn AsRef<[u8]>| {
            let value = value.as_ref();
            hasher.update((value.len() as u32).to_le_bytes());
            hasher.update(value);
        };
        text(&if sealed.is_some() { "credit-audit-v3" } else { "credit-audit-v2" });
        text(&&*self.source_topic);
        text(&self.application_id);
        let policy = &self.policy;
        text(&policy.model_version);
        text(&policy.model_sha256);
        text(&policy.catalogue_version);
        for reason in &self.reasons {
            text(&policy.reason(reason.entry).map_or("", |entry| entry.code.as_str()));
        }
        let protected = &self.protected;
        match sealed {
            Some(sealed) => text(&sealed),
            None => {
                text(&protected.personal_status_and_sex.as_deref().unwrap_or("\u{0}"));
                text(&protected.foreign_worker.as_deref().unwrap_or("\u{0}"));
            }
        }
        hasher.update(prev_hash);
        let mut number = |value: i64| hasher.update(value.to_le_bytes());
        number(seq);
        number(i64::from(self.source_partition));
        number(self.source_offset);
        number(i64::from(outcome_code(self.outcome)));
        number(self.probability_of_default.to_bits() as i64);
        number(policy.cutoffs.approve_below.to_bits() as i64);
        number(policy.cutoffs.decline_at_or_above.to_bits() as i64);
        number(self.inputs.len() as i64);
        for value in &self.inputs {
            number(value.to_bits() as i64);
        }
        number(self.reasons.len() as i64);
        for reason in &self.reasons {
            number(reason.contribution.to_bits() as i64);
        }
        if sealed.is_none() {
            number(protected.age_in_years.map_or(i64::MIN, i64::from));
        }
        number(i64::from(self.schema_id));
        number(self.event_time.timestamp_micros());
        number(self.consumed_at.timestamp_micros());
        number(self.processed_at.timestamp_micros());
        hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cutoffs, PolicyReason};
    use chrono::TimeZone;

    fn policy() -> Arc<DecisionPolicy> {
        Arc::new(DecisionPolicy {
            model_version: "credit-v1".into(),
            model_sha256: "ab".into(),
            cutoffs: Cutoffs { approve_below: 0.3, decline_at_or_above: 0.55 },
            catalogue_version: "rc".into(),
            feature_names: vec!["credit_amount".into(), "duration_in_month".into()],
            reasons: vec![
                PolicyReason { code: "R06".into(), feature: "credit_amount".into(), text: "Amount too high".into() },
                PolicyReason { code: "R02".into(), feature: "duration_in_month".into(), text: "Term too long".into() },
            ],
        })
    }

    fn row() -> AuditRow {
        AuditRow {
            policy: policy(),
            application_id: "app-1".into(),
            outcome: DecisionOutcome::Decline,
            probability_of_default: 0.61,
            inputs: vec![1169.0, 6.0].into(),
            reasons: vec![StoredReason { entry: 2, contribution: 0.4 }, StoredReason { entry: 1, contribution: 0.1 }]
                .into(),
            protected: ProtectedAttributes::default(),
            sealed: None,
            schema_id: 1,
            source_topic: Arc::from("t"),
            source_partition: 0,
            source_offset: 7,
            event_time: Utc.timestamp_millis_opt(1_700_000_000_000).unwrap(),
            consumed_at: Utc.timestamp_millis_opt(1_700_000_000_100).unwrap(),
            processed_at: Utc.timestamp_millis_opt(1_700_000_000_200).unwrap(),
        }
    }

    /// The chain's format is fixed: rows stored years ago must verify. These are the hashes of
    /// one row as plain (v2) and sealed (v3), pinned.
    #[test]
    fn the_hash_format_is_pinned() {
        let plain = hex::encode(row().hash(1, &GENESIS, None));
        let sealed = hex::encode(row().hash(7, &[9; 32], Some(&[5; 300])));
        assert_eq!(
            (plain.as_str(), sealed.as_str()),
            (
                "d7f73d1ce8f65289ea314e54397d56de0d2a82c118912e1d6564bdc823f86560",
                "f777be50ff287fe6040f54753864235e69abb0f476873dac99e811f5c71712f1"
            )
        );
    }

    /// Any change to the content, the place or the previous hash changes the row hash; of a
    /// sealed row, any change to the sealed bytes does.
    #[test]
    fn hash_covers_content_place_and_link() {
        let base = row().hash(1, &GENESIS, None);
        assert_eq!(base, row().hash(1, &GENESIS, None));
        let sealed = row().hash(1, &GENESIS, Some(b"sealed"));
        assert_ne!(sealed, base);
        assert_ne!(sealed, row().hash(1, &GENESIS, Some(b"sealee")));
        assert_ne!(sealed, row().hash(1, &GENESIS, Some(b"")));
        let edits: [fn(&mut AuditRow); 8] = [
            |row| row.probability_of_default = 0.610_000_000_000_000_1,
            |row| row.inputs[0] = 1170.0,
            |row| row.reasons.swap(0, 1),
            |row| row.reasons[0].contribution = 0.41,
            |row| row.source_offset = 8,
            |row| row.protected.age_in_years = Some(30),
            |row| row.outcome = DecisionOutcome::Review,
            |row| Arc::make_mut(&mut row.policy).cutoffs.approve_below = 0.31,
        ];
        for (index, edit) in edits.iter().enumerate() {
            let mut edited = row();
            edit(&mut edited);
            assert_ne!(base, edited.hash(1, &GENESIS, None), "edit {index}");
        }
        assert_ne!(base, row().hash(1, &[1; 32], None));
        assert_ne!(base, row().hash(2, &GENESIS, None));
    }

    /// The event carries the policy's model, cutoffs and reason texts, principal reason first.
    #[test]
    fn decision_event_from_the_row() {
        let event = row().decision_event();
        assert_eq!(event.decision, DecisionOutcome::Decline);
        assert_eq!(event.model_version, "credit-v1");
        let codes: Vec<&str> = event.reasons.iter().map(|reason| reason.code.as_str()).collect();
        assert_eq!(codes, ["R02", "R06"]);
        assert_eq!(event.reasons[0].text, "Term too long");
        assert_eq!(event.decision_id, decision_id("app-1", "ab").to_string());
        assert_eq!((event.event_time, event.processed_at), (1_700_000_000_000, 1_700_000_000_200));
    }
}
