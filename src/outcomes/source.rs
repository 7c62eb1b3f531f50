//! The outcomes consumer: `LoanOutcome` events are stored in `loan_outcomes` (idempotently),
//! joined to the decisions of the model in use, and counted in the outcome windows. Offsets are
//! stored after the outcomes are durable. On partition assignment the windows are rebuilt from
//! the two tables. Undecodable outcomes and outcomes of undecided applications are counted
//! (`credit_worker_outcomes_total{result}`) and skipped: they are monitoring input only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apache_avro::reader::datum::GenericDatumReader;
use chrono::{DateTime, TimeZone, Utc};
use futures::TryStreamExt;
use serde::Deserialize;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::LabelledDecision;
use crate::decode::{split_frame, SchemaCache, SchemaLookupError};
use crate::events::{ProtectedAttributes, LOAN_OUTCOME};
use crate::model::lifecycle::ModelManager;
use crate::monitoring::Monitoring;
use crate::offsets::next_offsets;
use crate::process::InputRecord;
use crate::source::{PartitionEvent, Source};

/// A `LoanOutcome` event.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct LoanOutcome {
    pub application_id: String,
    pub defaulted: bool,
    pub observed_at: i64,
}

/// Everything the outcomes consumer needs.
pub struct OutcomeSource {
    pub source: Source,
    pub partition_events: tokio::sync::mpsc::UnboundedReceiver<PartitionEvent>,
    pub schemas: SchemaCache,
    pub pool: PgPool,
    pub monitoring: Arc<Monitoring>,
    /// The models; outcomes join the decisions of the active one.
    pub models: Arc<ModelManager>,
    pub topic: String,
    pub window_seconds: i64,
    pub batch_max_records: usize,
    pub batch_max_wait: Duration,
}

impl OutcomeSource {
    /// Consumes until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(event) = self.partition_events.recv() => self.on_partitions(event).await,
                batch = self.source.next_batch(self.batch_max_records, self.batch_max_wait) => {
                    let mut attempt = 0u64;
                    while let Err(error) = self.handle(&batch).await {
                        warn!(%error, attempt, "outcome batch failed; retrying");
                        attempt += 1;
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(200 * attempt.min(25))) => {}
                        }
                    }
                    self.source.store(&next_offsets(batch.iter().map(|r| (&*r.topic, r.partition, r.offset))));
                }
            }
        }
        if let Err(error) = self.source.commit() {
            warn!(%error, "final outcomes commit");
        }
    }

    async fn on_partitions(&self, event: PartitionEvent) {
        match event {
            PartitionEvent::Revoked { partitions } => self.monitoring.outcomes.forget_partitions(&partitions),
            PartitionEvent::Assigned { partitions, at } => match self.rebuild(&partitions, at).await {
                Ok(rows) => info!(?partitions, rows, "outcome windows rebuilt"),
                Err(error) => warn!(%error, "rebuilding outcome windows failed"),
            },
        }
    }

    async fn handle(&self, batch: &[InputRecord]) -> Result<()> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for record in batch {
            match self.decode(record).await? {
                Some(outcome) => outcomes.push((record, outcome)),
                None => self.monitoring.count_outcome("invalid"),
            }
        }
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut transaction = self.pool.begin().await?;
        for (record, outcome) in &outcomes {
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
        let ids: Vec<&str> = outcomes.iter().map(|(_, outcome)| outcome.application_id.as_str()).collect();
        let decisions = self.decisions(&ids).await?;
        for (record, outcome) in &outcomes {
            match decisions.get(&outcome.application_id) {
                Some((approved, probability, protected)) => {
                    self.monitoring.outcomes.record(&LabelledDecision {
                        partition: record.partition,
                        observed_millis: outcome.observed_at,
                        approved: *approved,
                        defaulted: outcome.defaulted,
                        probability_of_default: *probability,
                        protected: protected.clone(),
                    });
                    self.monitoring.count_outcome("matched");
                }
                None => self.monitoring.count_outcome("unmatched"),
            }
        }
        Ok(())
    }

    async fn decode(&self, record: &InputRecord) -> Result<Option<LoanOutcome>> {
        let invalid = |reason: &str| {
            warn!(partition = record.partition, offset = record.offset, reason, "invalid outcome record skipped");
            Ok(None)
        };
        let Ok((id, body)) = split_frame(record.value.as_deref()) else { return invalid("not Confluent wire format") };
        let schema = match self.schemas.writer_schema(id).await {
            Ok(schema) => schema,
            Err(SchemaLookupError::Unknown(_)) => return invalid("unknown schema id"),
            Err(SchemaLookupError::Unavailable(reason)) => anyhow::bail!("schema registry unavailable: {reason}"),
        };
        if schema.parsed.canonical_form() != LOAN_OUTCOME.canonical_form() {
            return invalid("writer schema is not LoanOutcome");
        }
        let reader = GenericDatumReader::builder(&schema.parsed).build()?;
        let mut remaining = body;
        match reader.read_deser::<LoanOutcome>(&mut remaining) {
            Ok(outcome) if remaining.is_empty() => Ok(Some(outcome)),
            Ok(_) => invalid("trailing bytes"),
            Err(_) => invalid("Avro body does not match its schema"),
        }
    }

    fn active_model_sha256(&self) -> String {
        self.models.active().bundle.card.model_sha256.clone()
    }

    async fn decisions(&self, ids: &[&str]) -> Result<HashMap<String, (bool, f64, ProtectedAttributes)>> {
        let rows = sqlx::query(
            "SELECT application_id, decision, probability_of_default, protected_attributes FROM decision_audit
             WHERE application_id = ANY($1) AND model_sha256 = $2",
        )
        .bind(ids)
        .bind(self.active_model_sha256())
        .fetch_all(&self.pool)
        .await
        .context("joining outcomes to decisions")?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let protected = serde_json::from_value(row.get(3)).unwrap_or_default();
                (row.get(0), (row.get::<String, _>(1) == "approve", row.get(2), protected))
            })
            .collect())
    }

    async fn rebuild(&self, partitions: &[i32], before: DateTime<Utc>) -> Result<u64> {
        let mut rows = sqlx::query(
            "SELECT o.source_partition, o.observed_at, o.defaulted, a.decision, a.probability_of_default, a.protected_attributes
             FROM loan_outcomes o JOIN decision_audit a ON a.application_id = o.application_id AND a.model_sha256 = $4
             WHERE o.source_topic = $1 AND o.source_partition = ANY($2) AND o.written_at < $3
               AND o.observed_at >= (SELECT max(observed_at) FROM loan_outcomes WHERE source_topic = $1 AND source_partition = ANY($2))
                                    - make_interval(secs => $5)",
        )
        .bind(&self.topic)
        .bind(partitions)
        .bind(before)
        .bind(self.active_model_sha256())
        .bind(self.window_seconds as f64)
        .fetch(&self.pool);
        let mut count = 0;
        while let Some(row) = rows.try_next().await? {
            let observed: DateTime<Utc> = row.get(1);
            self.monitoring.outcomes.record(&LabelledDecision {
                partition: row.get(0),
                observed_millis: observed.timestamp_millis(),
                defaulted: row.get(2),
                approved: row.get::<String, _>(3) == "approve",
                probability_of_default: row.get(4),
                protected: serde_json::from_value(row.get(5)).unwrap_or_default(),
            });
            count += 1;
        }
        Ok(count)
    }
}

fn millis(value: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(value).single().unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::writer::datum::GenericDatumWriter;

    /// An outcome written with the bundled schema reads back through the strict reader.
    #[test]
    fn outcome_round_trips() {
        let outcome = LoanOutcome { application_id: "a".into(), defaulted: true, observed_at: 5 };
        let bytes = GenericDatumWriter::builder(&LOAN_OUTCOME).build().unwrap().write_ser_to_vec(&outcome).unwrap();
        let canonical = apache_avro::Schema::parse_str(&LOAN_OUTCOME.canonical_form()).unwrap();
        let reader = GenericDatumReader::builder(&canonical).build().unwrap();
        assert_eq!(reader.read_deser::<LoanOutcome>(&mut &bytes[..]).unwrap(), outcome);
    }
}
