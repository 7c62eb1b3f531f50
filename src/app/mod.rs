//! The worker: wires source → decide → sinks → monitors and runs them until shutdown.
//!
//! - `pipeline`: the intake and sink stages; `queue`: the queues between them, bounded by
//!   records; `batches`: the batches between stages, and how queued ones join;
//! - `decide`: one batch through decode → features → score → decide, on a scoring thread (pure);
//! - `schemas`: writer schemas for a batch; `durable`: publish + audit with retries;
//!   `observe`: metrics and monitors fed once a batch is durable; `shadow`: the challenger;
//! - `outcomes`: the delayed-outcomes consumer (`interleave`: its batches and partition
//!   events on one task); `alerts`: alert events to Kafka;
//!   `tasks`: readiness probes and partition following;
//! - `isolate`: a panic costs one record (`internal_error`), not the stream;
//! - `retry`: the one retry policy; `shutdown`: the shutdown token and the stage supervisor.

mod alerts;
mod batches;
mod decide;
mod durable;
mod interleave;
mod isolate;
mod observe;
mod outcomes;
mod pipeline;
mod queue;
mod recall;
mod retry;
mod schemas;
mod shadow;
mod shutdown;
mod tasks;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::codec::{register_schema, CodecError, SchemaCache};
use crate::config::WorkerConfig;
use crate::domain::{LOAN_DECISION_SCHEMA, MONITORING_ALERT_SCHEMA};
use crate::error::{Retriable, Retry};
use crate::http::{self, Admin};
use crate::model::{ModelError, ModelManager};
use crate::monitor::{MonitorError, Monitoring, ShadowComparison};
use crate::sinks::{AuditStore, DecisionProducer, Publisher, SinkError};
use crate::sources::{Assignment, Source, SourceError, SourceOptions};
use crate::telemetry::{Metrics, Readiness};
use alerts::AlertOutput;
use outcomes::OutcomeConsumer;
use pipeline::Pipeline;
use retry::{GaveUp, RetryPolicy};
use shutdown::Supervisor;

pub use decide::{process_batch, BatchContext, WriterSchema};
pub use shutdown::shutdown_on_signal;

/// Fetch wait of the outcomes consumer (librdkafka's default): delayed labels need no 10 ms
/// polls, which cost an idle Tansu about 9% of a core.
const OUTCOMES_FETCH_WAIT_MS: u32 = 500;

/// Shutdown was requested while a batch could not be finished; its offsets were not stored.
struct Abandoned;

/// Why a stage of the worker failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
}

impl Retriable for AppError {
    /// As the failing stage's error says.
    fn retry(&self) -> Retry {
        match self {
            Self::Codec(error) => error.retry(),
            Self::Sink(error) => error.retry(),
            Self::Source(error) => error.retry(),
            Self::Model(error) => error.retry(),
            Self::Monitor(error) => error.retry(),
        }
    }
}

/// Runs the worker until `shutdown` is cancelled, then drains, commits and returns.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<()> {
    info!(config = %config.redacted(), "configuration loaded");
    let metrics = Metrics::new();
    let readiness = Arc::new(Readiness::default());
    let supervisor = Supervisor::new(shutdown.clone(), Arc::clone(&readiness));
    let retry = {
        let (initial, max) = config.retry_backoff();
        RetryPolicy::new(initial, max)
    };
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

    let keys = crate::config::protected_keys(&config.database)?;
    // One connection per audit lane, and one for the rest (announced offsets, monitors).
    let kept = config.pipeline.audit_lanes as u32 + 1;
    let audit = AuditStore::connect_lazy(&config.database.url, config.database.max_connections, kept, keys)?;
    if config.database.run_migrations {
        let migrate = || audit.migrate();
        let on_retry = |error: &SinkError, _| warn!(%error, "database migrations failed; retrying");
        retry
            .run(&shutdown, migrate, on_retry)
            .await
            .map_err(|error| stopped("database migrations on database.url", error))?;
    }
    let warm_up = || audit.warm_up(kept);
    let on_retry = |error: &SinkError, _| warn!(%error, "opening the database connections failed; retrying");
    retry.run(&shutdown, warm_up, on_retry).await.map_err(|error| stopped("connecting to database.url", error))?;
    readiness.database_ok.store(true, Ordering::Release);

    let registry = SrSettings::new_builder(config.schema_registry.url.clone())
        .set_timeout(Duration::from_millis(config.schema_registry.timeout_ms))
        .build()
        .context("schema_registry settings")?;
    let register = |subject: String, schema: &'static str| {
        let (registry, shutdown) = (&registry, &shutdown);
        async move {
            let attempt = || register_schema(registry, &subject, schema);
            let on_retry = |error: &CodecError, _| warn!(%error, subject, "registering a schema failed; retrying");
            retry.run(shutdown, attempt, on_retry).await.map_err(|error| stopped("registering a schema", error))
        }
    };
    let kafka = &config.kafka;
    let decision_schema_id = register(format!("{}-value", kafka.decisions_topic), LOAN_DECISION_SCHEMA).await?;
    let alert_schema_id = register(format!("{}-value", kafka.alerts_topic), MONITORING_ALERT_SCHEMA).await?;
    readiness.schema_registry_ok.store(true, Ordering::Release);
    info!(decision_schema_id, alert_schema_id, "output schemas registered");

    let publisher = Arc::new(Publisher::new(&kafka.bootstrap_servers, &kafka.client_properties)?);
    let producer = {
        let (kafka, transactional_id) = (kafka.clone(), config.transactional_id());
        let start = move || {
            DecisionProducer::start(
                &kafka.bootstrap_servers,
                &kafka.client_properties,
                &transactional_id,
                &kafka.decisions_topic,
                &kafka.dead_letter_topic,
            )
        };
        let attempt =
            || async { tokio::task::spawn_blocking(start.clone()).await.map_err(|_| SinkError::Interrupted)? };
        let on_retry = |error: &SinkError, _| warn!(%error, "starting the transactional producer failed; retrying");
        let producer =
            retry.run(&shutdown, attempt, on_retry).await.map_err(|error| stopped("starting the producer", error))?;
        info!(transactional_id = %config.transactional_id(), run = producer.run(), "transactional producer ready");
        Arc::new(producer)
    };
    let assignment = Arc::new(Assignment::default());
    let instance_id = kafka.instance_id.as_deref();
    let (source, partition_events) = Source::subscribe(
        &SourceOptions {
            bootstrap_servers: &kafka.bootstrap_servers,
            group_id: &kafka.group_id,
            topic: &kafka.input_topic,
            session_timeout_ms: kafka.session_timeout_ms,
            instance_id,
            transactional: true,
            fetch_wait_max_ms: kafka.input_fetch_wait_ms,
            client_properties: &kafka.client_properties,
        },
        Some((metrics.clone(), Arc::clone(&readiness))),
        Some(Arc::clone(&assignment)),
    )?;
    info!(topic = %kafka.input_topic, group = %kafka.group_id, instance = instance_id.unwrap_or("-"), "subscribed");
    let outcomes_instance = instance_id.map(|id| format!("{id}-outcomes"));
    let (outcome_source, outcome_events) = Source::subscribe(
        &SourceOptions {
            bootstrap_servers: &kafka.bootstrap_servers,
            group_id: &format!("{}-outcomes", kafka.group_id),
            topic: &kafka.outcomes_topic,
            session_timeout_ms: kafka.session_timeout_ms,
            instance_id: outcomes_instance.as_deref(),
            transactional: false,
            fetch_wait_max_ms: OUTCOMES_FETCH_WAIT_MS,
            client_properties: &kafka.client_properties,
        },
        None,
        None,
    )?;
    let window_seconds = config.fairness.window_seconds as i64;
    let outcome_task = supervisor.spawn(
        "outcomes",
        OutcomeConsumer {
            schemas: SchemaCache::new(registry.clone()),
            audit: audit.clone(),
            monitoring: Arc::clone(&monitoring),
            models: Arc::clone(&models),
            topic: kafka.outcomes_topic.clone(),
            window_seconds,
            batch_max_records: config.pipeline.batch_max_records,
            batch_max_wait: Duration::from_millis(config.pipeline.batch_max_wait_ms),
            retry,
        }
        .run(outcome_source, outcome_events, shutdown.clone()),
    );
    let partitions_task = supervisor.spawn(
        "partition following",
        tasks::follow_partitions(
            Arc::clone(&assignment),
            Arc::clone(&monitoring),
            audit.clone(),
            kafka.input_topic.clone(),
            partition_events,
            retry,
            shutdown.clone(),
        ),
    );
    let probe = tasks::probe_dependencies(audit.clone(), registry.clone(), Arc::clone(&readiness), shutdown.clone());
    let probe_task = supervisor.spawn("readiness probes", probe);
    let evaluator = supervisor.spawn(
        "alert evaluator",
        alerts::run_evaluator(
            Arc::clone(&monitoring),
            AlertOutput {
                publisher: Arc::clone(&publisher),
                topic: kafka.alerts_topic.clone(),
                schema_id: alert_schema_id,
                retry,
            },
            Duration::from_millis(config.alerts.evaluation_interval_ms),
            shutdown.clone(),
        ),
    );

    let pipeline = Pipeline {
        models,
        shadow,
        audit,
        schemas: SchemaCache::new(registry),
        decision_schema_id,
        producer,
        source,
        assignment,
        announced: Default::default(),
        payloads: Default::default(),
        metrics,
        readiness,
        monitoring,
        retry,
        shutdown: shutdown.clone(),
        supervisor: supervisor.clone(),
        config,
    };
    let result = supervisor.watch("pipeline", pipeline.run()).await;
    for task in [evaluator, outcome_task, partitions_task, probe_task] {
        let _ = task.await;
    }
    if let Err(error) = publisher.flush(Duration::from_secs(10)) {
        warn!(%error, "flushing alert events");
    }
    result?;
    match supervisor.failure() {
        Some(stage) => {
            anyhow::bail!("the worker stopped because its {stage} stage ended on its own (see the errors above)")
        }
        None => Ok(()),
    }
}

/// A start-up step that did not succeed: shut down first, or failed in a way retrying cannot fix.
fn stopped<E: std::error::Error + Send + Sync + 'static>(what: &str, error: GaveUp<E>) -> anyhow::Error {
    match error {
        GaveUp::Shutdown => anyhow::anyhow!("shutdown before {what} succeeded"),
        GaveUp::Fatal(error) => anyhow::Error::new(error).context(format!("{what} failed")),
    }
}
