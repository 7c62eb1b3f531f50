//! Stored decisions read back as audit rows: to announce an already decided application again,
//! identical to its first announcement, and to verify and re-score rows.

use std::collections::HashMap;
use std::sync::Arc;

use bytestring::ByteString;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::policies::Policies;
use crate::domain::{application_key, outcome_of, AdverseReason, AuditRow, Cutoffs, DecisionOutcome};
use crate::domain::{DecisionPolicy, Inputs, PolicyReason, ProtectedAttributes, SealedBytes, StoredReason};
use crate::sinks::SinkError;

/// Columns of a stored row, in [`read_decision`] order.
pub const DECISION_COLUMNS: &str = "d.application_id, d.policy_id, d.outcome, d.probability_of_default, d.inputs, \
     d.reasons, d.contributions, d.sex_status, d.age_in_years, d.foreign_worker, d.schema_id, d.event_time, \
     d.consumed_at, d.processed_at, s.topic, s.partition, d.source_offset, d.protected_sealed";

/// A row selected with [`DECISION_COLUMNS`] first. A row written sealed comes back with its
/// protected attributes only `sealed` (opening them takes the keys; announcing and verifying do not).
pub async fn read_decision(
    row: &PgRow,
    policies: &Policies,
    connection: &mut PgConnection,
) -> Result<AuditRow, SinkError> {
    let application_id: String = row.try_get(0)?;
    let unreadable =
        |reason: &str| SinkError::Unreadable { decision_id: application_id.clone(), reason: reason.into() };
    let policy = policies.by_id(connection, row.try_get(1)?).await?;
    let outcome = outcome_of(row.try_get(2)?).ok_or_else(|| unreadable("unknown outcome code"))?;
    let entries: Vec<i16> = row.try_get(5)?;
    let contributions: Vec<f64> = row.try_get(6)?;
    if entries.len() != contributions.len() {
        return Err(unreadable("reasons and contributions differ in length"));
    }
    let age: Option<i16> = row.try_get(8)?;
    let topic: String = row.try_get(14)?;
    Ok(AuditRow {
        policy,
        outcome,
        probability_of_default: row.try_get(3)?,
        inputs: Inputs::from_vec(row.try_get(4)?),
        reasons: entries
            .into_iter()
            .zip(contributions)
            .map(|(entry, contribution)| StoredReason { entry, contribution })
            .collect(),
        protected: ProtectedAttributes {
            personal_status_and_sex: row.try_get::<Option<String>, _>(7)?.map(ByteString::from),
            age_in_years: age.map(i32::from),
            foreign_worker: row.try_get::<Option<String>, _>(9)?.map(ByteString::from),
        },
        sealed: row.try_get::<Option<Vec<u8>>, _>(17)?.map(SealedBytes::from_vec),
        schema_id: row.try_get(10)?,
        event_time: row.try_get(11)?,
        consumed_at: row.try_get(12)?,
        processed_at: row.try_get(13)?,
        source_topic: Arc::from(topic),
        source_partition: row.try_get(15)?,
        source_offset: row.try_get(16)?,
        application_id: application_id.into(),
    })
}

/// The stored decisions of `application_ids` (those decided), by application id.
pub async fn stored_decisions(
    connection: &mut PgConnection,
    policies: &Policies,
    application_ids: &[&str],
) -> Result<HashMap<ByteString, AuditRow>, SinkError> {
    if application_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<Vec<u8>> = application_ids.iter().map(|id| application_key(id).to_vec()).collect();
    let rows = sqlx::query(&format!(
        "SELECT {DECISION_COLUMNS} FROM decided_applications a \
         JOIN decisions d ON d.source_id = a.source_id AND d.chain_seq = a.chain_seq \
           AND d.processed_at = a.processed_at \
         JOIN source_partitions s ON s.source_id = d.source_id \
         WHERE a.application_key = ANY($1)"
    ))
    .bind(&keys)
    .fetch_all(&mut *connection)
    .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in &rows {
        let decision = read_decision(row, policies, connection).await?;
        stored.insert(decision.application_id.clone(), decision);
    }
    let missing: Vec<&str> = application_ids.iter().copied().filter(|id| !stored.contains_key(*id)).collect();
    if !missing.is_empty() {
        stored.extend(legacy_decisions(connection, &missing).await?);
    }
    Ok(stored)
}

/// Decisions made before the lean table (the earliest per application), as rows whose policy
/// holds just the reasons they gave: enough to announce them again as first announced.
async fn legacy_decisions(
    connection: &mut PgConnection,
    application_ids: &[&str],
) -> Result<HashMap<ByteString, AuditRow>, SinkError> {
    let rows = sqlx::query(
        "SELECT DISTINCT ON (application_id) application_id, model_version, model_sha256, decision, \
           probability_of_default, approve_below, decline_at_or_above, reasons, reason_catalogue_version, \
           protected_attributes, schema_id, source_topic, source_partition, source_offset, event_time, consumed_at, \
           processed_at \
         FROM decision_audit_legacy WHERE application_id = ANY($1) ORDER BY application_id, processed_at",
    )
    .bind(application_ids)
    .fetch_all(&mut *connection)
    .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in rows {
        let application_id: String = row.try_get(0)?;
        let unreadable = |reason: String| SinkError::Unreadable { decision_id: application_id.clone(), reason };
        let reasons: Vec<AdverseReason> =
            serde_json::from_value(row.try_get(7)?).map_err(|error| unreadable(error.to_string()))?;
        let protected: ProtectedAttributes =
            serde_json::from_value(row.try_get(9)?).map_err(|error| unreadable(error.to_string()))?;
        let outcome = match row.try_get::<String, _>(3)?.as_str() {
            "approve" => DecisionOutcome::Approve,
            "review" => DecisionOutcome::Review,
            "decline" => DecisionOutcome::Decline,
            other => return Err(unreadable(format!("unknown decision `{other}`"))),
        };
        let policy = DecisionPolicy {
            model_version: row.try_get(1)?,
            model_sha256: row.try_get(2)?,
            cutoffs: Cutoffs { approve_below: row.try_get(5)?, decline_at_or_above: row.try_get(6)? },
            catalogue_version: row.try_get(8)?,
            feature_names: Vec::new(),
            reasons: reasons
                .iter()
                .map(|reason| PolicyReason {
                    code: reason.code.clone(),
                    feature: reason.feature.clone(),
                    text: reason.text.clone(),
                })
                .collect(),
        };
        let topic: String = row.try_get(11)?;
        let decision = AuditRow {
            policy: Arc::new(policy),
            outcome,
            probability_of_default: row.try_get(4)?,
            inputs: Inputs::new(),
            reasons: reasons
                .iter()
                .enumerate()
                .map(|(index, reason)| StoredReason { entry: index as i16 + 1, contribution: reason.contribution })
                .collect(),
            protected,
            sealed: None,
            schema_id: row.try_get(10)?,
            source_topic: Arc::from(topic),
            source_partition: row.try_get(12)?,
            source_offset: row.try_get(13)?,
            event_time: row.try_get(14)?,
            consumed_at: row.try_get(15)?,
            processed_at: row.try_get(16)?,
            application_id: application_id.into(),
        };
        stored.insert(decision.application_id.clone(), decision);
    }
    Ok(stored)
}
