//! Making a decided batch durable, in this order: one audit transaction (new rows, their claims on
//! their applications, chain heads, audited-through offsets, monitor counts), then one Kafka
//! transaction announcing the batch (new decisions, stored decisions of applications decided
//! before, dead letters) with the consumer's offsets; a batch that announces nothing commits its
//! offsets through the consumer group instead. A crash between the two leaves decisions
//! audited but not announced: their records are redelivered and their stored decisions announced.
//! Each step is retried until it succeeds; records of partitions revoked meanwhile are dropped.
//! A row PostgreSQL refuses (a value out of range, a constraint) is left out and its record
//! dead-lettered: no decision is announced without its audit row, and the stream goes on.
//! The two steps are two stages of the pipeline: the next batch is audited while this one is
//! announced, and batches are announced in the order they were audited.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::{error, warn};

use super::batches::{lane_of, AuditedBatch, DecidedBatch, Precounted};
use super::pipeline::Pipeline;
use super::retry::GaveUp;
use super::Abandoned;
use crate::codec::encode_decision_into;
use crate::domain::{AuditRow, DeadLetter, InputRecord, Outcome};
use crate::error::{Retriable, Retry};
use crate::sinks::{BatchWrite, Progress, Publication, SinkError};
use crate::sources::{next_offsets, partition_list, SourceError};

impl Pipeline {
    /// The batch's audit transaction; its outcomes then say what to announce.
    pub(super) async fn audit_batch(&self, batch: DecidedBatch, lane: usize) -> Result<AuditedBatch, Abandoned> {
        let DecidedBatch { records, mut outcomes, epochs, precounted } = batch;
        let still_owned = self.assignment.still_owned(&epochs);
        let owned = |partition: i32| still_owned.contains(&partition);
        let decided: Vec<(usize, &AuditRow)> = outcomes
            .iter()
            .enumerate()
            .filter(|(position, _)| owned(records[*position].partition))
            .filter_map(|(position, outcome)| match outcome {
                Outcome::Decided(decided) => Some((position, &decided.row)),
                _ => None,
            })
            .collect();
        let audited = next_offsets(records.iter().filter(|record| owned(record.partition)));
        let (write, rejected) = self.audit(&decided, &audited, precounted.as_ref(), lane).await?;
        self.observe_audited(write.inserted.iter().map(|index| decided[*index].1));
        let new_rows: Vec<usize> = write.inserted.iter().map(|index| decided[*index].0).collect();
        let again: Vec<(usize, Outcome)> = decided
            .iter()
            .filter_map(|(position, row)| {
                Some((*position, self.announce_again(write.stored.get(&row.application_id)?)))
            })
            .collect();
        let rejected: Vec<(usize, DeadLetter)> =
            rejected.into_iter().map(|(index, reason)| (decided[index].0, reason)).collect();
        for (position, reason) in rejected {
            outcomes[position] = Outcome::DeadLetter(reason);
        }
        for (position, stored) in again {
            outcomes[position] = stored;
        }
        Ok(AuditedBatch { records, outcomes, epochs, new_rows, counts: write.counts })
    }

    /// The audit transaction, retried until it commits. A row PostgreSQL refuses is left out and
    /// the rest written again; returns the write (positions in `decided`) and the rows refused
    /// (positions in `decided`, with the reason their records are dead-lettered).
    async fn audit(
        &self,
        decided: &[(usize, &AuditRow)],
        audited: &[(Arc<str>, i32, i64)],
        precounted: Option<&Precounted>,
        lane: usize,
    ) -> Result<(BatchWrite, Vec<(usize, DeadLetter)>), Abandoned> {
        let mut rejected: Vec<(usize, DeadLetter)> = Vec::new();
        loop {
            let kept: Vec<usize> =
                (0..decided.len()).filter(|index| rejected.iter().all(|(refused, _)| refused != index)).collect();
            let rows: Vec<&AuditRow> = kept.iter().map(|index| decided[*index].1).collect();
            match self.write_audit(&rows, audited, precounted, lane).await {
                Err(GaveUp::Fatal(SinkError::RowRejected { position, code, message })) => {
                    let (partition, offset) = (rows[position].source_partition, rows[position].source_offset);
                    warn!(
                        partition,
                        offset, code, message, "PostgreSQL refused an audit row; its record is dead-lettered"
                    );
                    self.metrics.errors.with_label_values(&["postgres_row"]).inc();
                    let message = format!("PostgreSQL refused the audit row: {message} (SQLSTATE {code})");
                    rejected.push((kept[position], DeadLetter { kind: "rejected_by_database", message }));
                }
                result => {
                    let mut write = self.settle(result)?;
                    write.inserted = write.inserted.iter().map(|position| kept[*position]).collect();
                    return Ok((write, rejected));
                }
            }
        }
    }

    /// One audit transaction of `rows`, retried while retrying can help.
    async fn write_audit(
        &self,
        rows: &[&AuditRow],
        audited: &[(Arc<str>, i32, i64)],
        precounted: Option<&Precounted>,
        lane: usize,
    ) -> Result<BatchWrite, GaveUp<SinkError>> {
        let count = |fresh: &[&AuditRow]| Precounted::of_fresh(precounted, fresh, &self.monitoring);
        // Only the lane's own partitions: another lane's would be locked by both transactions.
        let lanes = self.config.pipeline.audit_lanes;
        let announced: Vec<(Arc<str>, i32, i64)> = (self.announced.lock())
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|(_, partition, _)| lane_of(*partition, lanes) == lane)
            .cloned()
            .collect();
        let progress = Progress { audited, announced: &announced };
        let attempt = || async {
            let started = Instant::now();
            let result = self.audit.write_batch(rows, &progress, &count).await;
            self.observe_stage("audit", started);
            result
        };
        let on_retry = |error: &SinkError, _| {
            self.metrics.sink_retries.with_label_values(&["postgres"]).inc();
            self.metrics.errors.with_label_values(&["postgres"]).inc();
            if error.retry() == Retry::Unavailable {
                self.readiness.database_ok.store(false, Ordering::Release);
            }
            warn!(%error, "audit write failed; retrying");
        };
        let write = self.retry.run(&self.shutdown, attempt, on_retry).await?;
        self.announced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|entry| !announced.contains(entry));
        self.readiness.database_ok.store(true, Ordering::Release);
        self.metrics.audit_rows_written.inc_by(write.inserted.len() as u64);
        self.metrics.audit_batch_rows.observe(rows.len() as f64);
        Ok(write)
    }

    /// The Kafka transaction: every outcome of the partitions still owned, and their offsets.
    pub(super) async fn announce(
        &self,
        records: &[InputRecord],
        outcomes: &[Outcome],
        epochs: &HashMap<i32, u64>,
    ) -> Result<(), Abandoned> {
        let mut buffer = std::mem::take(&mut *self.payloads.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let payloads = tokio::task::block_in_place(|| Payloads::encode(outcomes, self.decision_schema_id, &mut buffer));
        // The offsets of an attempt whose commit's outcome is unknown.
        let in_doubt: std::sync::Mutex<Option<rdkafka::TopicPartitionList>> = std::sync::Mutex::new(None);
        let attempt = || async {
            let started = Instant::now();
            let doubtful = in_doubt.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            if let Some(offsets) = doubtful {
                // Settled first, whatever is owned now: the replaced producer's transaction is
                // committed or aborted, and its offsets say which.
                let settled = tokio::task::block_in_place(|| {
                    self.producer.settle()?;
                    self.source.committed_through(&offsets).map_err(|SourceError::Kafka(error)| SinkError::Kafka(error))
                })?;
                *in_doubt.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                if settled {
                    warn!("the transaction left in doubt had committed; the batch is announced");
                    return Ok(next_offsets(records.iter().filter(|record| epochs.contains_key(&record.partition))));
                }
            }
            let still_owned = self.assignment.still_owned(epochs);
            let owned = |partition: i32| still_owned.contains(&partition);
            let publications: Vec<Publication<'_>> = records
                .iter()
                .zip(outcomes)
                .zip(payloads.spans.iter())
                .filter(|((record, _), _)| owned(record.partition))
                .filter_map(|((record, outcome), span)| publication(record, outcome, &payloads.bytes[span.clone()]))
                .collect();
            let next = next_offsets(records.iter().filter(|record| owned(record.partition)));
            if next.is_empty() {
                return Ok(next);
            }
            let offsets = partition_list(&next);
            if publications.is_empty() {
                // Nothing to make atomic with the offsets: the group commits them itself (its
                // generation is checked as in a transaction). Tansu commits an offsets-only
                // transaction only when it is the producer's first.
                let result = tokio::task::block_in_place(|| self.source.commit_offsets(&offsets));
                self.observe_stage("publish", started);
                return result.map(|()| next).map_err(|SourceError::Kafka(error)| SinkError::Kafka(error));
            }
            let group = self.source.group_metadata().ok_or(SinkError::NoGroupMetadata)?;
            let result = tokio::task::block_in_place(|| self.producer.publish(&publications, &offsets, &group));
            self.observe_stage("publish", started);
            if matches!(result, Err(SinkError::InDoubt(_))) {
                *in_doubt.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(offsets);
            }
            result.map(|()| next)
        };
        let on_retry = |error: &SinkError, _| {
            self.metrics.sink_retries.with_label_values(&["kafka"]).inc();
            self.metrics.errors.with_label_values(&["kafka_publish"]).inc();
            warn!(%error, "announcing the batch failed; retrying");
        };
        let announced = self.settle(self.retry.run(&self.shutdown, attempt, on_retry).await)?;
        drop(payloads);
        *self.payloads.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = buffer;
        let mut pending = self.announced.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (topic, partition, offset) in announced {
            match pending.iter_mut().find(|(t, p, _)| *t == topic && *p == partition) {
                Some(entry) => entry.2 = entry.2.max(offset),
                None => pending.push((topic, partition, offset)),
            }
        }
        Ok(())
    }

    /// A step's result: shutdown abandons the batch; an error retrying cannot fix stops the worker.
    fn settle<T>(&self, result: Result<T, GaveUp<SinkError>>) -> Result<T, Abandoned> {
        match result {
            Ok(value) => Ok(value),
            Err(GaveUp::Shutdown) => Err(Abandoned),
            Err(GaveUp::Fatal(failure)) => {
                error!(%failure, "a sink failed in a way retrying cannot fix; stopping");
                self.supervisor.ended("sink");
                Err(Abandoned)
            }
        }
    }
}

/// What `outcome` announces; `payload` is its decision's, encoded.
fn publication<'a>(record: &'a InputRecord, outcome: &'a Outcome, payload: &'a [u8]) -> Option<Publication<'a>> {
    match outcome {
        Outcome::Decided(decided) | Outcome::Stored(decided) => {
            Some(Publication::Decision { application_id: &decided.row.application_id, payload })
        }
        Outcome::DeadLetter(reason) => Some(Publication::DeadLetter { record, reason }),
        Outcome::Redelivered { .. } | Outcome::Announced => None,
    }
}

/// The `LoanDecision` of every decision of a batch, encoded once (before the first attempt)
/// into the buffer every announcement reuses.
struct Payloads<'b> {
    bytes: &'b [u8],
    /// By outcome: its payload's place in `bytes` (empty for outcomes that are not decisions).
    spans: Vec<std::ops::Range<usize>>,
}

impl<'b> Payloads<'b> {
    fn encode(outcomes: &[Outcome], schema_id: u32, bytes: &'b mut Vec<u8>) -> Self {
        bytes.clear();
        let spans = outcomes
            .iter()
            .map(|outcome| {
                let start = bytes.len();
                if let Outcome::Decided(decided) | Outcome::Stored(decided) = outcome {
                    encode_decision_into(bytes, &decided.row, schema_id);
                }
                start..bytes.len()
            })
            .collect();
        Self { bytes, spans }
    }
}
