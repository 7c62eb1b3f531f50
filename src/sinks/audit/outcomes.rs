//! Delayed outcomes: stored in `loan_outcomes` (idempotently, first observation wins) and joined
//! to the decisions of one model.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{FromRow, Row};

use super::AuditStore;
use crate::codec::{SealError, StoredProtected};
use crate::domain::{InputRecord, LoanOutcome, ProtectedAttributes};
use crate::sinks::SinkError;

/// A stored decision as the outcome join needs it: approved, probability of default, groups.
pub type JoinedDecision = (bool, f64, ProtectedAttributes);

impl AuditStore {
    /// Stores `outcomes` (each with the record it came from) in one transaction.
    pub async fn store_outcomes(&self, outcomes: &[(&InputRecord, LoanOutcome)]) -> Result<(), SinkError> {
        let mut transaction = self.pool().begin().await?;
        for (record, outcome) in outcomes {
            sqlx::query(
                "INSERT INTO loan_outcomes (application_id, defaulted, observed_at, source_topic, source_partition, source_offset)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (application_id) DO NOTHING",
            )
            .bind(&outcome.application_id)
            .bind(outcome.defaulted)
            .bind(millis(outcome.observed_at))
            .bind(&*record.topic)
            .bind(record.partition)
            .bind(record.offset)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// The decisions model `model_sha256` made for `application_ids`, by application id; a
    /// decision whose sealed protected attributes do not open (a key gone from the key file, an
    /// altered row) comes with the reason, and costs only its own outcome.
    pub async fn decisions_of(
        &self,
        application_ids: &[&str],
        model_sha256: &str,
    ) -> Result<HashMap<String, Result<JoinedDecision, SealError>>, SinkError> {
        let rows = sqlx::query(
            "SELECT application_id, outcome = 0, probability_of_default, sex_status, age_in_years, foreign_worker,
                    protected_sealed
             FROM application_decisions
             WHERE application_key = ANY(SELECT application_key(id) FROM unnest($1::text[]) AS id) AND model_sha256 = $2",
        )
        .bind(application_ids)
        .bind(model_sha256)
        .fetch_all(self.pool())
        .await?;
        let keys = self.keys()?;
        let mut joined = HashMap::with_capacity(rows.len());
        for row in rows {
            let stored = StoredProtected::from_row(&row)?;
            let application_id: String = row.get(0);
            let decision = stored.open(keys).map(|(_, protected)| (row.get(1), row.get(2), protected));
            joined.insert(application_id, decision);
        }
        Ok(joined)
    }
}

fn millis(value: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(value).single().unwrap_or_else(Utc::now)
}
