//! The pipeline: the intake decodes, scores and decides the next batch on a scoring thread while
//! the sink makes earlier ones durable, joined by queues of `pipeline.batches_in_flight` full
//! batches' records. The sink audits batches in `pipeline.audit_lanes` lanes by partition, each
//! lane in order (all its batches that are waiting at once, in one transaction on its own
//! connection), and announces them, with their offsets, once they are audited (all that are
//! waiting at once), while the next are audited: an audit never waits for an announcement
//! unless that many records wait to be announced.
//! Shadow scoring runs behind the sink, on its own queue: a slow challenger never delays a batch
//! unless that queue is full.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use super::batches::{next_merged, AuditedBatch, DecidedBatch, Merge, Precounted};
use super::decide::{process_batch, BatchContext};
use super::isolate::isolate_panics;
use super::queue;
use super::retry::RetryPolicy;
use super::shutdown::Supervisor;
use super::Abandoned;
use crate::codec::SchemaCache;
use crate::config::WorkerConfig;
use crate::domain::{AuditRow, InputRecord, Outcome};
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
    /// The buffer each announcement encodes its decisions into (one announcement at a time).
    pub(super) payloads: std::sync::Mutex<Vec<u8>>,
    pub(super) monitoring: Arc<Monitoring>,
    pub(super) retry: RetryPolicy,
    pub(super) shutdown: CancellationToken,
    /// Told when a stage fails in a way retrying cannot fix.
    pub(super) supervisor: Supervisor,
}

impl Pipeline {
    /// Runs both stages until shutdown; on shutdown the intake stops and the queued batches are
    /// finished (or left for redelivery).
    pub async fn run(self) -> anyhow::Result<()> {
        let max_records = self.config.pipeline.batch_max_records;
        let max_wait = Duration::from_millis(self.config.pipeline.batch_max_wait_ms);
        let queued_records = self.config.pipeline.batches_in_flight * max_records;
        let lanes = self.config.pipeline.audit_lanes;
        let (to_lanes, lane_queues): (Vec<_>, Vec<_>) =
            (0..lanes).map(|_| queue::bounded::<DecidedBatch>(queued_records)).unzip();
        // Each stage is a task of its own: a stage blocking its thread on librdkafka (in
        // `block_in_place`) leaves the others running.
        let shared = Arc::new(self);
        let pipeline = Arc::clone(&shared);
        let (to_shadow, mut shadowed) = tokio::sync::mpsc::channel::<(Arc<LoadedModel>, Vec<Outcome>)>(SHADOW_QUEUE);
        let intake = async move {
            'batches: loop {
                let started = Instant::now();
                let batch = tokio::select! {
                    _ = pipeline.shutdown.cancelled() => break,
                    batch = pipeline.source.next_batch(max_records, max_wait) => batch,
                };
                pipeline.observe_stage("poll", started);
                let span = info_span!("decide", records = batch.len());
                let Ok(batch) = pipeline.decide_batch(batch).instrument(span).await else {
                    pipeline.supervisor.ended("intake");
                    break;
                };
                let started = Instant::now();
                for (lane, part) in batch.into_lanes(lanes) {
                    let records = part.records();
                    if to_lanes[lane].send(part, records).await.is_err() {
                        break 'batches;
                    }
                }
                pipeline.observe_stage("queue", started);
            }
        };
        // The sink is two stages: batches are audited, in lanes by partition, while earlier ones
        // are announced; a partition's batches are announced in audit order. Batches that queued
        // up behind a slow stage are finished together: one audit transaction (one commit to
        // wait for), or one Kafka transaction.
        let (audited, mut to_announce) = queue::bounded::<AuditedBatch>(queued_records);
        let mut audits = Vec::with_capacity(lanes);
        for (lane, mut to_finish) in lane_queues.into_iter().enumerate() {
            let (pipeline, audited) = (Arc::clone(&shared), audited.clone());
            audits.push(tokio::spawn(async move {
                let mut held = None;
                while let Some(batch) = next_merged(&mut to_finish, &mut held).await {
                    let span = info_span!("audit", lane, records = batch.records.len());
                    let Ok(batch) = pipeline.audit_batch(batch, lane).instrument(span).await else {
                        warn!("shutdown during a failing batch: its offsets (and later ones of its partitions) were not stored; they will be redelivered");
                        to_finish.close();
                        break;
                    };
                    let records = batch.records();
                    if audited.send(batch, records).await.is_err() {
                        to_finish.close();
                        break;
                    }
                }
            }));
        }
        drop(audited);
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
        let mut stages = vec![("intake", tokio::spawn(intake))];
        stages.extend(audits.into_iter().map(|audit| ("audit", audit)));
        stages.extend([("announce", tokio::spawn(announce)), ("shadow", tokio::spawn(shadow))]);
        for (name, stage) in stages {
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
        let (records, mut outcomes, counted) = self.score(&model, Arc::clone(&context), records).await?;
        self.observe_stage("score", started);
        let mut precounted = Some(counted);
        if outcomes.iter().any(|outcome| matches!(outcome, Outcome::Redelivered { .. })) {
            self.recall_decisions(&model, &context, &records, &mut outcomes).await?;
            precounted = None;
        }
        let epochs = claims.into_iter().map(|(partition, claim)| (partition, claim.epoch)).collect();
        Ok(DecidedBatch { records, outcomes, epochs, precounted })
    }

    /// Runs `process_batch` on a scoring thread of `model`, and counts the decided rows there.
    pub(super) async fn score(
        &self,
        model: &LoadedModel,
        context: Arc<BatchContext>,
        records: Vec<InputRecord>,
    ) -> Result<(Vec<InputRecord>, Vec<Outcome>, Precounted), Abandoned> {
        let monitoring = Arc::clone(&self.monitoring);
        model
            .pool
            .run(move |scorer| {
                let announced = |record: &InputRecord| context.is_announced(record);
                let outcomes = isolate_panics(&records, announced, |batch| process_batch(scorer, &context, batch));
                let decided: Vec<&AuditRow> = outcomes
                    .iter()
                    .filter_map(|outcome| match outcome {
                        Outcome::Decided(decided) => Some(&decided.row),
                        _ => None,
                    })
                    .collect();
                let precounted = Precounted { rows: decided.len(), counts: monitoring.bucket_counts(&decided) };
                (records, outcomes, precounted)
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
