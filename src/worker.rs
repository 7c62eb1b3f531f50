//! The worker: wires source → decode → score → decide → publish + audit → offsets.
//! Batches run one at a time; a batch's offsets are stored only after every record in it is
//! durable (decision acknowledged and audit row committed, or dead letter acknowledged).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use schema_registry_converter::async_impl::schema_registry::{get_all_subjects, post_schema, SrSettings};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::admin::Admin;
use crate::audit::AuditStore;
use crate::config::WorkerConfig;
use crate::decode::{split_frame, DecodeError, SchemaCache, SchemaLookupError};
use crate::events::{DecisionOutcome, LOAN_DECISION_SCHEMA, MONITORING_ALERT_SCHEMA};
use crate::http::{self, Readiness};
use crate::metrics::Metrics;
use crate::model::lifecycle::{LoadedModel, ModelManager};
use crate::monitoring::{run_evaluator, Monitoring};
use crate::offsets::next_offsets;
use crate::outcomes::source::OutcomeSource;
use crate::process::{process_batch, BatchContext, InputRecord, Outcome, WriterSchema};
use crate::publish::{Publication, Publisher};
use crate::shadow::{Comparison, ShadowComparison};
use crate::source::{PartitionEvent, Source};

/// Shutdown was requested while a batch could not be finished; its offsets were not stored.
struct Abandoned;

struct Worker {
    config: WorkerConfig,
    metrics: Metrics,
    readiness: Arc<Readiness>,
    models: Arc<ModelManager>,
    shadow: Arc<ShadowComparison>,
    audit: AuditStore,
    schemas: SchemaCache,
    decision_schema_id: u32,
    publisher: Arc<Publisher>,
    source: Source,
    monitoring: Arc<Monitoring>,
    shutdown: CancellationToken,
}

/// Runs the worker until `shutdown` is cancelled, then drains, commits and returns.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<()> {
    info!(config = %config.redacted(), "configuration loaded");
    let metrics = Metrics::new();
    let readiness = Arc::new(Readiness::default());
    let models = {
        let (config, metrics) = (config.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || ModelManager::start(&config, metrics)).await?
    }
    .with_context(|| format!("loading model.directory {}", config.model.directory.display()))?;
    let models = Arc::new(models);
    let active = models.active();
    let monitoring = Arc::new(Monitoring::new(&config, &active.bundle.card, metrics.clone()));
    let shadow = Arc::new(ShadowComparison::new(config.grouping.clone(), metrics.clone()));
    let admin = Admin { models: Arc::clone(&models), shadow: Arc::clone(&shadow), token: config.admin_token.clone() };
    let bound = http::serve(
        config.http_listen,
        metrics.clone(),
        Arc::clone(&readiness),
        Arc::clone(&monitoring),
        Some(admin),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("binding http.listen {}", config.http_listen))?;
    info!(address = %bound, admin_api = config.admin_token.is_some(), "http endpoint listening");

    readiness.model_loaded.store(true, Ordering::Release);
    let status = models.status();
    info!(
        version = %status.active.version,
        sha256 = %status.active.sha256,
        cutoffs = ?active.cutoffs,
        catalogue = %active.bundle.catalogue.version,
        shadow = status.shadow.as_ref().map(|model| model.version.as_str()).unwrap_or("-"),
        "model loaded"
    );
    drop(active);

    let audit = AuditStore::connect_lazy(&config.database.url, config.database.max_connections)?;
    let backoff = Backoff::new(config.retry_backoff());
    if config.database.run_migrations {
        retry_until(&shutdown, &backoff, "database migrations", || audit.migrate()).await?;
    }
    readiness.database_ok.store(true, Ordering::Release);

    let registry = SrSettings::new_builder(config.schema_registry.url.clone())
        .set_timeout(Duration::from_millis(config.schema_registry.timeout_ms))
        .build()
        .context("schema_registry settings")?;
    let subject = format!("{}-value", config.kafka.decisions_topic);
    let decision_schema_id = retry_until(&shutdown, &backoff, "registering the LoanDecision schema", || async {
        let schema = SuppliedSchema::new(None, SchemaType::Avro, LOAN_DECISION_SCHEMA.to_owned());
        post_schema(&registry, subject.clone(), schema).await.map(|registered| registered.id)
    })
    .await?;
    let alerts_subject = format!("{}-value", config.kafka.alerts_topic);
    let alert_schema_id = retry_until(&shutdown, &backoff, "registering the MonitoringAlert schema", || async {
        let schema = SuppliedSchema::new(None, SchemaType::Avro, MONITORING_ALERT_SCHEMA.to_owned());
        post_schema(&registry, alerts_subject.clone(), schema).await.map(|registered| registered.id)
    })
    .await?;
    readiness.schema_registry_ok.store(true, Ordering::Release);
    info!(subject, id = decision_schema_id, alerts_subject, alert_id = alert_schema_id, "output schemas registered");

    let kafka = &config.kafka;
    let publisher = Arc::new(Publisher::new(
        &kafka.bootstrap_servers,
        &kafka.client_properties,
        &kafka.decisions_topic,
        &kafka.dead_letter_topic,
    )?);
    let (source, partition_events) = Source::subscribe(
        &kafka.bootstrap_servers,
        &kafka.group_id,
        &kafka.input_topic,
        kafka.session_timeout_ms,
        &kafka.client_properties,
        Some((metrics.clone(), Arc::clone(&readiness))),
    )?;
    info!(topic = %kafka.input_topic, group = %kafka.group_id, "subscribed");
    let outcomes_group = format!("{}-outcomes", kafka.group_id);
    let (outcome_consumer, outcome_events) = Source::subscribe(
        &kafka.bootstrap_servers,
        &outcomes_group,
        &kafka.outcomes_topic,
        kafka.session_timeout_ms,
        &kafka.client_properties,
        None,
    )?;
    let outcome_task = tokio::spawn(
        OutcomeSource {
            source: outcome_consumer,
            partition_events: outcome_events,
            schemas: SchemaCache::new(registry.clone()),
            pool: audit.pool().clone(),
            monitoring: Arc::clone(&monitoring),
            models: Arc::clone(&models),
            topic: kafka.outcomes_topic.clone(),
            window_seconds: config.fairness.window_seconds as i64,
            batch_max_records: config.pipeline.batch_max_records,
            batch_max_wait: Duration::from_millis(config.pipeline.batch_max_wait_ms),
        }
        .run(shutdown.clone()),
    );
    tokio::spawn(follow_partitions(
        Arc::clone(&monitoring),
        audit.pool().clone(),
        kafka.input_topic.clone(),
        config.fairness.window_seconds as i64,
        partition_events,
    ));
    tokio::spawn(probe_dependencies(audit.clone(), registry.clone(), Arc::clone(&readiness), shutdown.clone()));
    let evaluator = tokio::spawn(run_evaluator(
        Arc::clone(&monitoring),
        Arc::clone(&publisher),
        kafka.alerts_topic.clone(),
        alert_schema_id,
        Duration::from_millis(config.alerts.evaluation_interval_ms),
        shutdown.clone(),
    ));

    let worker = Worker {
        models,
        shadow,
        audit,
        schemas: SchemaCache::new(registry),
        decision_schema_id,
        publisher,
        source,
        metrics,
        readiness,
        monitoring,
        shutdown: shutdown.clone(),
        config,
    };
    let result = worker.run_loop().await;
    let _ = evaluator.await;
    let _ = outcome_task.await;
    result
}

/// Keeps `/ready` true to the dependencies while idle: pings PostgreSQL and the schema registry
/// every 5 s (batches also update the flags as they succeed or fail).
async fn probe_dependencies(
    audit: AuditStore,
    registry: SrSettings,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        readiness.database_ok.store(audit.ping().await, Ordering::Release);
        readiness.schema_registry_ok.store(get_all_subjects(&registry).await.is_ok(), Ordering::Release);
    }
}

/// Keeps the monitors to this replica's partitions: rebuilds newly assigned partitions' windows
/// from the audit table, forgets revoked ones.
async fn follow_partitions(
    monitoring: Arc<Monitoring>,
    pool: sqlx::PgPool,
    topic: String,
    window_seconds: i64,
    mut events: UnboundedReceiver<PartitionEvent>,
) {
    while let Some(event) = events.recv().await {
        match event {
            PartitionEvent::Revoked { partitions } => monitoring.forget_partitions(&partitions),
            PartitionEvent::Assigned { partitions, at } => {
                for attempt in 0..5u64 {
                    match monitoring.rebuild(&pool, &topic, &partitions, at, window_seconds).await {
                        Ok(rows) => {
                            info!(?partitions, rows, "monitoring windows rebuilt from the audit table");
                            break;
                        }
                        Err(error) => {
                            warn!(%error, attempt, "rebuilding monitoring windows failed");
                            tokio::time::sleep(Duration::from_secs(1 + attempt)).await;
                        }
                    }
                }
            }
        }
    }
}

/// A batch decided on a scoring thread, waiting for its sinks.
struct DecidedBatch {
    records: Vec<InputRecord>,
    outcomes: Vec<Outcome>,
}

impl Worker {
    /// Two stages joined by a bounded queue of `pipeline.batches_in_flight` batches, so the next
    /// batch is decoded and scored while the previous one is published and audited. The sink
    /// stage takes batches in order (all that are waiting at once) and stores offsets only once
    /// they are durable; on
    /// shutdown the intake stops and the queued batches are finished (or left for redelivery).
    async fn run_loop(self) -> Result<()> {
        let max_records = self.config.pipeline.batch_max_records;
        let max_wait = Duration::from_millis(self.config.pipeline.batch_max_wait_ms);
        let (decided, mut to_finish) = tokio::sync::mpsc::channel(self.config.pipeline.batches_in_flight);
        let worker = &self;
        let intake = async move {
            loop {
                let batch = tokio::select! {
                    _ = worker.shutdown.cancelled() => break,
                    batch = worker.source.next_batch(max_records, max_wait) => batch,
                };
                let span = info_span!("decide", records = batch.len());
                let Ok(batch) = worker.decide_batch(batch).instrument(span).await else { break };
                if decided.send(batch).await.is_err() {
                    break;
                }
            }
        };
        let sink = async {
            while let Some(mut batch) = to_finish.recv().await {
                // Batches that queued up behind a slow sink are finished together: one audit
                // transaction (one commit to wait for) and one publish wait for all of them.
                while let Ok(next) = to_finish.try_recv() {
                    batch.records.extend(next.records);
                    batch.outcomes.extend(next.outcomes);
                }
                let span = info_span!("finish", records = batch.records.len());
                if worker.finish_batch(batch).instrument(span).await.is_err() {
                    warn!("shutdown during a failing batch: its offsets (and later ones) were not stored; they will be redelivered");
                    to_finish.close();
                    break;
                }
            }
        };
        tokio::join!(intake, sink);
        info!("draining: committing stored offsets and flushing the producer");
        if let Err(error) = self.source.commit() {
            warn!(%error, "final commit (no new offsets is fine)");
        }
        self.publisher.flush(Duration::from_secs(10))?;
        Ok(())
    }

    /// Decodes, scores and decides a batch on the active model's scoring thread.
    async fn decide_batch(&self, records: Vec<InputRecord>) -> Result<DecidedBatch, Abandoned> {
        self.metrics.events_consumed.inc_by(records.len() as u64);
        let started = Instant::now();
        let model = self.models.active();
        let context = self.batch_context(&model, &records).await?;
        self.observe_stage("decode_schemas", started);

        let started = Instant::now();
        let (records, outcomes) = model
            .pool
            .run(move |scorer| {
                let outcomes = process_batch(scorer, &context, &records);
                (records, outcomes)
            })
            .await
            .map_err(|error| {
                tracing::error!(%error, "scoring pool failed");
                self.metrics.errors.with_label_values(&["scoring"]).inc();
                Abandoned
            })?;
        self.observe_stage("score", started);
        Ok(DecidedBatch { records, outcomes })
    }

    /// Makes a decided batch durable, then stores its offsets and records its outcomes.
    async fn finish_batch(&self, batch: DecidedBatch) -> Result<(), Abandoned> {
        let DecidedBatch { records, outcomes } = batch;
        self.write_durably(&records, &outcomes).await?;
        self.source.store(&next_offsets(records.iter().map(|r| (&*r.topic, r.partition, r.offset))));
        self.record_outcomes(&outcomes);
        if let Some(challenger) = self.models.shadow() {
            self.compare_with(&challenger, outcomes).await;
        }
        Ok(())
    }

    /// Scores the batch's decided feature vectors with the challenger and records the comparison.
    /// Shadow results are never published or audited; a failure only costs the comparison.
    async fn compare_with(&self, challenger: &LoadedModel, outcomes: Vec<Outcome>) {
        let started = Instant::now();
        let decided: Vec<_> = outcomes
            .into_iter()
            .filter_map(|outcome| match outcome {
                Outcome::Decided(decided) => Some(decided),
                Outcome::DeadLetter(_) => None,
            })
            .collect();
        let cutoffs = challenger.cutoffs;
        let scored = challenger
            .pool
            .run(move |scorer| {
                let probabilities: Result<Vec<f64>, _> =
                    decided.iter().map(|decided| scorer.score_row(&decided.features)).collect();
                (decided, probabilities)
            })
            .await;
        let (decided, probabilities) = match scored {
            Ok((decided, Ok(probabilities))) => (decided, probabilities),
            Ok((_, Err(error))) => return warn!(%error, "shadow scoring failed"),
            Err(error) => return warn!(%error, "shadow scoring pool failed"),
        };
        let comparisons: Vec<Comparison<'_>> = decided
            .iter()
            .zip(&probabilities)
            .map(|(decided, probability)| Comparison {
                protected: &decided.audit.protected_attributes,
                champion: decided.decision.decision,
                champion_probability: decided.decision.probability_of_default,
                challenger: cutoffs.decide(*probability),
                challenger_probability: *probability,
            })
            .collect();
        self.shadow.record(&challenger.bundle.card.model_sha256, &comparisons);
        self.observe_stage("shadow", started);
    }

    /// Writer schemas for the batch; unknown ids become per-record failures, an unreachable
    /// registry is waited out (cached schemas never need it).
    async fn batch_context(&self, model: &LoadedModel, records: &[InputRecord]) -> Result<BatchContext, Abandoned> {
        let mut writer_schemas = HashMap::new();
        let mut unknown: HashMap<u32, DecodeError> = HashMap::new();
        let ids: HashSet<u32> =
            records.iter().filter_map(|r| split_frame(r.value.as_deref()).ok().map(|(id, _)| id)).collect();
        let backoff = Backoff::new(self.config.retry_backoff());
        for id in ids {
            let mut attempt = 0;
            loop {
                match self.schemas.writer_schema(id).await {
                    Ok(schema) => {
                        writer_schemas.insert(id, WriterSchema::Registry(schema));
                        break;
                    }
                    Err(SchemaLookupError::Unknown(error)) => {
                        unknown.insert(id, error);
                        break;
                    }
                    Err(SchemaLookupError::Unavailable(reason)) => {
                        self.readiness.schema_registry_ok.store(false, Ordering::Release);
                        self.metrics.sink_retries.with_label_values(&["schema_registry"]).inc();
                        self.metrics.errors.with_label_values(&["schema_registry"]).inc();
                        warn!(schema_id = id, %reason, "schema registry unavailable; waiting");
                        self.pause(&backoff, &mut attempt).await?;
                    }
                }
            }
        }
        self.readiness.schema_registry_ok.store(true, Ordering::Release);
        let early_failures = records
            .iter()
            .enumerate()
            .filter_map(|(index, record)| {
                let (id, _) = split_frame(record.value.as_deref()).ok()?;
                unknown.get(&id).map(|error| (index, error.clone()))
            })
            .collect();
        Ok(BatchContext {
            model: Arc::clone(&model.bundle),
            cutoffs: model.cutoffs,
            decision_schema_id: self.decision_schema_id,
            writer_schemas,
            early_failures,
        })
    }

    /// Publishes decisions and dead letters and writes audit rows, retrying each sink until it
    /// succeeds (or shutdown). A sink that succeeded is not repeated.
    async fn write_durably(&self, records: &[InputRecord], outcomes: &[Outcome]) -> Result<(), Abandoned> {
        let publications: Vec<Publication<'_>> = records
            .iter()
            .zip(outcomes)
            .map(|(record, outcome)| match outcome {
                Outcome::Decided(decided) => Publication::Decision {
                    application_id: &decided.decision.application_id,
                    payload: &decided.payload,
                },
                Outcome::DeadLetter(reason) => Publication::DeadLetter { record, reason },
            })
            .collect();
        let rows: Vec<_> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Outcome::Decided(decided) => Some(&decided.audit),
                Outcome::DeadLetter(_) => None,
            })
            .collect();
        let (mut published, mut audited) = (false, false);
        let backoff = Backoff::new(self.config.retry_backoff());
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let publish = async {
                if published {
                    return Ok(());
                }
                let result = self.publisher.publish_all(&publications).await;
                self.observe_stage("publish", started);
                result
            };
            let write = async {
                if audited {
                    return Ok(0);
                }
                let result = self.audit.write_batch(&rows).await;
                self.observe_stage("audit", started);
                result
            };
            let (publish_result, audit_result) = tokio::join!(publish, write);
            match publish_result {
                Ok(()) => published = true,
                Err(error) => {
                    self.metrics.sink_retries.with_label_values(&["kafka"]).inc();
                    self.metrics.errors.with_label_values(&["kafka_publish"]).inc();
                    warn!(%error, "publishing failed; retrying");
                }
            }
            match audit_result {
                Ok(inserted) => {
                    if !audited {
                        self.metrics.audit_rows_written.inc_by(inserted);
                        self.metrics.audit_batch_rows.observe(rows.len() as f64);
                    }
                    audited = true;
                    self.readiness.database_ok.store(true, Ordering::Release);
                }
                Err(error) => {
                    self.metrics.sink_retries.with_label_values(&["postgres"]).inc();
                    self.metrics.errors.with_label_values(&["postgres"]).inc();
                    self.readiness.database_ok.store(false, Ordering::Release);
                    warn!(%error, "audit write failed; retrying");
                }
            }
            if published && audited {
                return Ok(());
            }
            self.pause(&backoff, &mut attempt).await?;
        }
    }

    fn record_outcomes(&self, outcomes: &[Outcome]) {
        let now = chrono::Utc::now();
        for outcome in outcomes {
            match outcome {
                Outcome::Decided(decided) => {
                    let outcome = decided.decision.decision;
                    self.metrics.decisions.with_label_values(&[outcome.as_str()]).inc();
                    if outcome == DecisionOutcome::Decline && decided.decision.reasons.is_empty() {
                        self.metrics.declines_without_reasons.inc();
                        tracing::error!(decision_id = %decided.decision.decision_id, "decline without an adverse-action reason");
                    }
                    for reason in &decided.decision.reasons {
                        self.metrics.adverse_reasons.with_label_values(&[&reason.code]).inc();
                    }
                    let audit = &decided.audit;
                    self.monitoring.record(
                        audit.source_partition,
                        decided.decision.event_time,
                        &audit.protected_attributes,
                        decided.decision.decision,
                        &decided.features,
                        audit.probability_of_default,
                    );
                    let since_event = (now - audit.event_time).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    let since_consume = (now - audit.consumed_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                    self.metrics.event_to_decision_seconds.observe(since_event.max(0.0));
                    self.metrics.consume_to_decision_seconds.observe(since_consume.max(0.0));
                }
                Outcome::DeadLetter(reason) => self.metrics.dead_letters.with_label_values(&[reason.kind]).inc(),
            }
        }
    }

    fn observe_stage(&self, stage: &str, started: Instant) {
        self.metrics.stage_seconds.with_label_values(&[stage]).observe(started.elapsed().as_secs_f64());
    }

    async fn pause(&self, backoff: &Backoff, attempt: &mut u32) -> Result<(), Abandoned> {
        let delay = backoff.delay(*attempt);
        *attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.shutdown.cancelled() => Err(Abandoned),
        }
    }
}

/// Exponential backoff between bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// Backoff from `bounds.0` doubling up to `bounds.1`.
    pub fn new(bounds: (Duration, Duration)) -> Self {
        Self { initial: bounds.0, max: bounds.1 }
    }

    /// Delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max)
    }
}

async fn retry_until<T, E, F, Fut>(
    shutdown: &CancellationToken,
    backoff: &Backoff,
    what: &str,
    mut operation: F,
) -> Result<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error) => warn!(%error, attempt, "{what} failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.delay(attempt)) => {}
            _ = shutdown.cancelled() => anyhow::bail!("shutdown before {what} succeeded"),
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delays double from the initial value and stop at the maximum.
    #[test]
    fn backoff_doubles_then_caps() {
        let backoff = Backoff::new((Duration::from_millis(100), Duration::from_millis(1000)));
        let delays: Vec<u128> = (0..6).map(|attempt| backoff.delay(attempt).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_millis(1000));
    }
}
