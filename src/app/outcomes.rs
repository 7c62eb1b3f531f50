//! The outcomes consumer: `LoanOutcome` events are stored in `loan_outcomes` (idempotently),
//! joined to the decisions of the model in use, and counted in the outcome windows. Offsets are
//! stored after the outcomes are durable. On partition assignment the windows are rebuilt from
//! the two tables. Undecodable outcomes, outcomes of undecided applications and outcomes whose
//! decision's protected attributes do not open are counted (`credit_worker_outcomes_total{result}`)
//! and skipped: they are monitoring input only, and never stop the worker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::interleave::interleave;
use super::retry::RetryPolicy;
use super::AppError;
use crate::codec::{decode_outcome, split_frame, CodecError, SchemaCache};
use crate::domain::{InputRecord, LoanOutcome};
use crate::error::{Retriable, Retry};
use crate::model::ModelManager;
use crate::monitor::{AuditReader, LabelledDecision, Monitoring, OutcomeRebuild};
use crate::sinks::AuditStore;
use crate::sources::{next_offsets, PartitionEvent, Source};

/// Everything the outcomes consumer needs besides its source.
pub struct OutcomeConsumer {
    pub schemas: SchemaCache,
    pub audit: AuditStore,
    pub monitoring: Arc<Monitoring>,
    /// The models; outcomes join the decisions of the active one.
    pub models: Arc<ModelManager>,
    pub topic: String,
    pub window_seconds: i64,
    pub batch_max_records: usize,
    pub batch_max_wait: Duration,
    pub retry: RetryPolicy,
}

impl OutcomeConsumer {
    /// Consumes `source` until `shutdown`, handling its partition `events` as they come. A batch
    /// being filled is kept across an event (it is never dropped half-filled: its records would
    /// be skipped once later offsets are stored).
    pub async fn run(self, source: Source, mut events: UnboundedReceiver<PartitionEvent>, shutdown: CancellationToken) {
        let next = || source.next_batch(self.batch_max_records, self.batch_max_wait);
        let (this, consumer, stop) = (&self, &source, &shutdown);
        let on_batch = move |batch: Vec<InputRecord>| async move {
            let on_retry = |error: &AppError, _| warn!(%error, "outcome batch failed; retrying");
            if this.retry.run(stop, || this.handle(&batch), on_retry).await.is_err() {
                return false;
            }
            consumer.store(&next_offsets(&batch));
            true
        };
        let on_event = move |event| async move { this.on_partitions(event).await };
        interleave(next, &mut events, &shutdown, on_batch, on_event).await;
        if let Err(error) = source.commit() {
            warn!(%error, "final outcomes commit");
        }
        tokio::task::block_in_place(|| source.close(Duration::from_secs(3)));
    }

    async fn on_partitions(&self, event: PartitionEvent) {
        match event {
            PartitionEvent::Revoked { partitions } => self.monitoring.outcomes.forget_partitions(&partitions),
            PartitionEvent::Assigned { partitions, at } => {
                let partitions: Vec<i32> = partitions.iter().map(|(partition, _)| *partition).collect();
                let model = self.models.active().bundle.card.model_sha256.clone();
                let keys = match self.audit.keys() {
                    Ok(keys) => keys,
                    Err(error) => return warn!(%error, "rebuilding outcome windows failed"),
                };
                let rebuilt = self
                    .monitoring
                    .rebuild_outcomes(
                        AuditReader { pool: self.audit.pool(), keys },
                        &self.topic,
                        &partitions,
                        at,
                        &model,
                        self.window_seconds,
                    )
                    .await;
                match rebuilt {
                    Ok(OutcomeRebuild { rows, unopenable: 0, .. }) => {
                        info!(?partitions, rows, "outcome windows rebuilt")
                    }
                    Ok(OutcomeRebuild { rows, unopenable, first_error }) => {
                        let error = first_error.map(|error| error.to_string()).unwrap_or_default();
                        warn!(?partitions, rows, unopenable, first = %error, "outcome windows rebuilt without the unopenable decisions")
                    }
                    Err(error) => warn!(%error, "rebuilding outcome windows failed"),
                }
            }
        }
    }

    async fn handle(&self, batch: &[InputRecord]) -> Result<(), AppError> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for record in batch {
            match self.decode(record).await {
                Ok(outcome) => outcomes.push((record, outcome)),
                Err(error) if error.retry() == Retry::Unavailable => return Err(error.into()),
                Err(error) => {
                    let (partition, offset) = (record.partition, record.offset);
                    warn!(partition, offset, %error, "invalid outcome record skipped");
                    self.monitoring.count_outcome("invalid");
                }
            }
        }
        if outcomes.is_empty() {
            return Ok(());
        }
        self.audit.store_outcomes(&outcomes).await?;
        let ids: Vec<&str> = outcomes.iter().map(|(_, outcome)| outcome.application_id.as_str()).collect();
        let model = self.models.active().bundle.card.model_sha256.clone();
        let decisions = self.audit.decisions_of(&ids, &model).await?;
        for (record, outcome) in &outcomes {
            match decisions.get(&outcome.application_id) {
                Some(Ok((approved, probability, protected))) => {
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
                Some(Err(error)) => {
                    let (partition, offset) = (record.partition, record.offset);
                    warn!(partition, offset, %error, "outcome skipped: its decision is unopenable");
                    self.monitoring.count_outcome("unopenable");
                }
                None => self.monitoring.count_outcome("unmatched"),
            }
        }
        Ok(())
    }

    async fn decode(&self, record: &InputRecord) -> Result<LoanOutcome, CodecError> {
        let (id, body) = split_frame(record.value.as_deref())?;
        let schema = self.schemas.writer_schema(id).await?;
        decode_outcome(id, &schema.parsed, body)
    }
}
