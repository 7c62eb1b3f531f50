//! The pipeline: the intake decodes, scores and decides the next batch on a scoring thread while
//! the sink makes earlier ones durable, joined by a bounded queue of
//! `pipeline.batches_in_flight` batches. The sink audits batches in order (all that are waiting
//! at once), and announces them, with their offsets, once they are audited (all that are
//! waiting at once), while the next are audited: an audit never waits for an announcement
//! unless `pipeline.batches_in_flight` audited batches wait.
//! Shadow scoring runs behind the sink, on its own queue: a slow challenger never delays a batch
//! unless that queue is full.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use super::decide::{process_batch, BatchContext};
use super::isolate::isolate_panics;
use super::retry::RetryPolicy;
use super::shutdown::Supervisor;
use super::Abandoned;
use crate::codec::SchemaCache;
use crate::config::WorkerConfig;
use crate::domain::{BucketCounts, InputRecord, Outcome};
use crate::model::{LoadedModel, ModelManager};
use crate::monitor::{Monitoring, ShadowComparison};
use crate::sinks::{AuditStore, DecisionProducer};
use crate::sources::{Assignment, Source};
use crate::telemetry::{Metrics, Readiness};

/// Batches waiting for the challenger before the sink waits for it.
const SHADOW_QUEUE: usize = 4;

/// Everything the two stages use.
pub struct Pipeline {
    pub(super) config: WorkerConfig,
    pub(super) metrics: Metrics,
    pub(super) readiness: Arc<Readiness>,
    pub(super) models: Arc<ModelManager>,
    pub(super) shadow: Arc<ShadowComparison>,
    pub(super) audit: AuditStore,
    pub(super) schemas: SchemaCache,
    pub(super) decision_schema_id: u32,
    pub(super) producer: Arc<DecisionProducer>,
    pub(super) source: Source,
    pub(super) assignment: Arc<Assignment>,
    /// Per (topic, partition), the next offset after the batches announced since the last audit
    /// transaction, which records them.
    pub(super) announced: std::sync::Mutex<Vec<(Arc<str>, i32, i64)>>,
    pub(super) monitoring: Arc<Monitoring>,
    pub(super) retry: RetryPolicy,
    pub(super) shutdown: CancellationToken,
    /// Told when a stage fails in a way retrying cannot fix.
    pub(super) supervisor: Supervisor,
}

/// A batch decided on a scoring thread, waiting for its sinks.
pub(super) struct DecidedBatch {
    pub(super) records: Vec<InputRecord>,
    pub(super) outcomes: Vec<Outcome>,
    /// The assignment epoch of each partition the batch holds records of.
    pub(super) epochs: HashMap<i32, u64>,
}

/// A batch whose audit transaction committed, waiting for its announcement.
pub(super) struct AuditedBatch {
    pub(super) records: Vec<InputRecord>,
    /// Outcomes as announced: rows PostgreSQL refused are dead letters, applications decided
    /// before carry their stored decisions.
    pub(super) outcomes: Vec<Outcome>,
    pub(super) epochs: HashMap<i32, u64>,
    /// Positions of the outcomes whose rows are new (the monitors count these, and only these).
    pub(super) new_rows: Vec<usize>,
    /// The monitors' counts of the new rows, as persisted.
    pub(super) counts: BucketCounts,
}

/// A batch that batches queued behind it can join, to be finished as one.
trait Merge: Sized {
    /// The assignment epoch of each partition the batch holds records of.
    fn epochs(&self) -> &HashMap<i32, u64>;
    /// Appends `next` (the batch after this one).
    fn absorb(&mut self, next: Self);
}

impl Merge for DecidedBatch {
    fn epochs(&self) -> &HashMap<i32, u64> {
        &self.epochs
    }

    fn absorb(&mut self, next: DecidedBatch) {
        self.records.extend(next.records);
        self.outcomes.extend(next.outcomes);
        self.epochs.extend(next.epochs);
    }
}

impl Merge for AuditedBatch {
    fn epochs(&self) -> &HashMap<i32, u64> {
        &self.epochs
    }

    fn absorb(&mut self, next: AuditedBatch) {
        let shift = self.outcomes.len();
        self.new_rows.extend(next.new_rows.iter().map(|position| position + shift));
        self.records.extend(next.records);
        self.outcomes.extend(next.outcomes);
        self.epochs.extend(next.epochs);
        self.counts.extend(next.counts);
    }
}

/// Whether `later` may join `earlier`: every partition both hold records of has the same epoch
/// (was not revoked and assigned again between them). Otherwise records decided under the old
/// assignment would pass as the new one's, beside their redelivered copies.
fn same_assignment<T: Merge>(earlier: &T, later: &T) -> bool {
    let earlier = earlier.epochs();
    later.epochs().iter().all(|(partition, epoch)| earlier.get(partition).is_none_or(|own| own == epoch))
}

/// Receives the next batch, joined by every batch queued behind it of the same assignment; one
/// of another is kept in `held` for the next call.
async fn next_merged<T: Merge>(queue: &mut tokio::sync::mpsc::Receiver<T>, held: &mut Option<T>) -> Option<T> {
    let mut batch = match held.take() {
        Some(batch) => batch,
        None => queue.recv().await?,
    };
    while let Ok(next) = queue.try_recv() {
        if !same_assignment(&batch, &next) {
            *held = Some(next);
            break;
        }
        batch.absorb(next);
    }
    Some(batch)
}

impl Pipeline {
    /// Runs both stages until shutdown; on shutdown the intake stops and the queued batches are
    /// finished (or left for redelivery).
    pub async fn run(self) -> anyhow::Result<()> {
        let max_records = self.config.pipeline.batch_max_records;
        let max_wait = Duration::from_millis(self.config.pipeline.batch_max_wait_ms);
        let in_flight = self.config.pipeline.batches_in_flight;
        let (decided, mut to_finish) = tokio::sync::mpsc::channel(in_flight);
        // Each stage is a task of its own: a stage blocking its thread on librdkafka (in
        // `block_in_place`) leaves the others running.
        let shared = Arc::new(self);
        let pipeline = Arc::clone(&shared);
        let (to_shadow, mut shadowed) = tokio::sync::mpsc::channel::<(Arc<LoadedModel>, Vec<Outcome>)>(SHADOW_QUEUE);
        let intake = async move {
            loop {
                let batch = tokio::select! {
                    _ = pipeline.shutdown.cancelled() => break,
                    batch = pipeline.source.next_batch(max_records, max_wait) => batch,
                };
                let span = info_span!("decide", records = batch.len());
                let Ok(batch) = pipeline.decide_batch(batch).instrument(span).await else {
                    pipeline.supervisor.ended("intake");
                    break;
                };
                if decided.send(batch).await.is_err() {
                    break;
                }
            }
        };
        // The sink is two stages: batches are audited while earlier ones are announced, and
        // announced in audit order. Batches that queued up behind a slow stage are finished
        // together: one audit transaction (one commit to wait for), or one Kafka transaction.
        let (audited, mut to_announce) = tokio::sync::mpsc::channel::<AuditedBatch>(in_flight);
        let pipeline = Arc::clone(&shared);
        let audit = async move {
            let mut held = None;
            while let Some(batch) = next_merged(&mut to_finish, &mut held).await {
                let span = info_span!("audit", records = batch.records.len());
                let Ok(batch) = pipeline.audit_batch(batch).instrument(span).await else {
                    warn!("shutdown during a failing batch: its offsets (and later ones) were not stored; they will be redelivered");
                    to_finish.close();
                    break;
                };
                if audited.send(batch).await.is_err() {
                    to_finish.close();
                    break;
                }
            }
        };
        let pipeline = Arc::clone(&shared);
        let announce = async move {
            let mut held = None;
            while let Some(batch) = next_merged(&mut to_announce, &mut held).await {
                let span = info_span!("announce", records = batch.records.len());
                if pipeline.finish_batch(batch, &to_shadow).instrument(span).await.is_err() {
                    warn!("shutdown while announcing a batch: its offsets (and later ones) were not stored; it will be redelivered and its stored decisions announced");
                    to_announce.close();
                    break;
                }
            }
        };
        let pipeline = Arc::clone(&shared);
        let shadow = async move {
            while let Some((challenger, outcomes)) = shadowed.recv().await {
                pipeline.compare_with(&challenger, outcomes).await;
            }
        };
        let stages = [tokio::spawn(intake), tokio::spawn(audit), tokio::spawn(announce), tokio::spawn(shadow)];
        for (name, stage) in ["intake", "audit", "announce", "shadow"].into_iter().zip(stages) {
            if let Err(error) = stage.await {
                tracing::error!(%error, stage = name, "a pipeline stage failed");
                shared.supervisor.ended(name);
            }
        }
        let Some(pipeline) = Arc::into_inner(shared) else { anyhow::bail!("a pipeline stage outlived the pipeline") };
        let announced =
            std::mem::take(&mut *pipeline.announced.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        if !announced.is_empty() {
            if let Err(error) = pipeline.audit.mark_announced(&announced).await {
                warn!(%error, "recording the last announced offsets failed (a new group would announce that batch again)");
            }
        }
        info!("drained: every finished batch is audited and announced, with its offsets");
        let Self { source, producer, .. } = pipeline;
        tokio::task::block_in_place(|| {
            source.close(Duration::from_secs(3));
            if let Some(producer) = Arc::into_inner(producer) {
                producer.close(Duration::from_secs(3));
            }
        });
        Ok(())
    }

    /// Decodes, scores and decides a batch on the active model's scoring thread. Records of
    /// partitions no longer owned are dropped; records already decided (redelivered) are not
    /// scored again but carry their stored decision.
    async fn decide_batch(&self, mut records: Vec<InputRecord>) -> Result<DecidedBatch, Abandoned> {
        self.metrics.events_consumed.inc_by(records.len() as u64);
        let claims = self.assignment.claims(records.iter().map(|record| record.partition).collect::<Vec<_>>()).await;
        records.retain(|record| claims.contains_key(&record.partition));
        let started = Instant::now();
        let model = self.models.active();
        self.monitoring.follow_model(&model.bundle.card);
        let context = self.batch_context(&model, &records, claims.clone()).await?;
        self.observe_stage("decode_schemas", started);

        let started = Instant::now();
        let context = Arc::new(context);
        let (records, mut outcomes) = self.score(&model, Arc::clone(&context), records).await?;
        self.observe_stage("score", started);
        if outcomes.iter().any(|outcome| matches!(outcome, Outcome::Redelivered { .. })) {
            self.recall_decisions(&model, &context, &records, &mut outcomes).await?;
        }
        let epochs = claims.into_iter().map(|(partition, claim)| (partition, claim.epoch)).collect();
        Ok(DecidedBatch { records, outcomes, epochs })
    }

    /// Runs `process_batch` on a scoring thread of `model`.
    pub(super) async fn score(
        &self,
        model: &LoadedModel,
        context: Arc<BatchContext>,
        records: Vec<InputRecord>,
    ) -> Result<(Vec<InputRecord>, Vec<Outcome>), Abandoned> {
        model
            .pool
            .run(move |scorer| {
                let announced = |record: &InputRecord| context.is_announced(record);
                let outcomes = isolate_panics(&records, announced, |batch| process_batch(scorer, &context, batch));
                (records, outcomes)
            })
            .await
            .map_err(|error| {
                tracing::error!(%error, "scoring pool failed");
                self.metrics.errors.with_label_values(&["scoring"]).inc();
                Abandoned
            })
    }

    /// Announces an audited batch with its offsets, counts it, then queues it for the
    /// challenger, if there is one.
    async fn finish_batch(
        &self,
        batch: AuditedBatch,
        to_shadow: &tokio::sync::mpsc::Sender<(Arc<LoadedModel>, Vec<Outcome>)>,
    ) -> Result<(), Abandoned> {
        let AuditedBatch { records, outcomes, epochs, new_rows, counts } = batch;
        self.announce(&records, &outcomes, &epochs).await?;
        self.record_outcomes(&outcomes, &new_rows, &counts);
        if let Some(challenger) = self.models.shadow() {
            let _ = to_shadow.send((challenger, outcomes)).await;
        }
        Ok(())
    }

    pub(super) fn observe_stage(&self, stage: &str, started: Instant) {
        self.metrics.stage_seconds.with_label_values(&[stage]).observe(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(partition: i32, offsets: std::ops::Range<i64>, epoch: u64) -> DecidedBatch {
        let records: Vec<InputRecord> = offsets
            .map(|offset| InputRecord {
                topic: Arc::from("in"),
                partition,
                offset,
                key: None,
                value: None,
                consumed_at: chrono::Utc::now(),
            })
            .collect();
        let outcomes = records.iter().map(|_| Outcome::Announced).collect();
        DecidedBatch { records, outcomes, epochs: HashMap::from([(partition, epoch)]) }
    }

    /// Batches queued behind a slow sink are merged only while every partition they share has
    /// the same epoch: a batch decided before its partition was revoked and assigned again must
    /// not pass as one of the new assignment (its records would be audited and announced again
    /// beside their redelivered copies).
    #[test]
    fn batches_merge_only_within_one_assignment() {
        let mut first = decided(3, 0..2, 5);
        for next in [decided(3, 2..4, 5), decided(4, 0..1, 9)] {
            assert!(same_assignment(&first, &next));
            first.absorb(next);
        }
        assert_eq!(first.records.len(), 5);
        assert_eq!(first.epochs, HashMap::from([(3, 5), (4, 9)]));
        assert!(!same_assignment(&first, &decided(3, 2..6, 6)), "partition 3 changed hands");
    }

    /// Queued batches are taken together up to the first of another assignment, which comes next.
    #[tokio::test]
    async fn a_batch_of_another_assignment_waits_for_the_next_turn() {
        let (sender, mut queue) = tokio::sync::mpsc::channel(4);
        for batch in [decided(3, 0..2, 5), decided(4, 0..1, 9), decided(3, 2..6, 6), decided(3, 6..7, 6)] {
            sender.send(batch).await.unwrap();
        }
        drop(sender);
        let mut held = None;
        let first = next_merged(&mut queue, &mut held).await.unwrap();
        assert_eq!((first.records.len(), first.epochs[&3]), (3, 5));
        let second = next_merged(&mut queue, &mut held).await.unwrap();
        assert_eq!((second.records.len(), second.epochs[&3]), (5, 6));
        assert!(next_merged(&mut queue, &mut held).await.is_none());
    }

    /// Audited batches announced together keep each new row's position and every count.
    #[test]
    fn audited_batches_merge_positions_and_counts() {
        let audited = |partition, offsets, epoch, new_rows, watermark| {
            let DecidedBatch { records, outcomes, epochs } = decided(partition, offsets, epoch);
            let counts = BucketCounts { watermarks: vec![(partition, watermark)], ..BucketCounts::default() };
            AuditedBatch { records, outcomes, epochs, new_rows, counts }
        };
        let mut first = audited(1, 0..3, 2, vec![0, 2], 10);
        first.absorb(audited(2, 0..2, 7, vec![1], 20));
        assert_eq!(first.new_rows, [0, 2, 4]);
        assert_eq!(first.counts.watermarks, [(1, 10), (2, 20)]);
        assert_eq!(first.records.len(), 5);
    }
}
