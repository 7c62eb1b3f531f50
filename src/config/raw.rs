//! The configuration as written: every key documented in `config/default.toml`, each section
//! with `deny_unknown_fields` and a doc comment per key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The configuration as written: every key documented in `config/default.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Kafka connection and topics.
    pub kafka: KafkaConfig,
    /// Schema registry (Confluent REST API).
    pub schema_registry: SchemaRegistryConfig,
    /// PostgreSQL audit store.
    pub database: DatabaseConfig,
    /// Which model to serve and how.
    pub model: ModelConfig,
    /// Batching and retries.
    pub pipeline: PipelineConfig,
    /// Fairness windows and thresholds.
    pub fairness: FairnessConfig,
    /// Drift (PSI) windows and thresholds.
    pub drift: DriftConfig,
    /// Alert evaluation.
    pub alerts: AlertsConfig,
    /// HTTP endpoint for metrics and probes.
    pub http: HttpConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// Admin endpoints (model lifecycle).
    #[serde(default)]
    pub admin: AdminConfig,
}

/// Admin endpoints: enabled only when a token is configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// File holding the bearer token (a mounted secret); else `CREDIT_WORKER_ADMIN_TOKEN`; else disabled.
    pub token_file: Option<PathBuf>,
}

/// Fairness monitoring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FairnessConfig {
    /// Sliding window length over event time.
    pub window_seconds: u64,
    /// Bucket width; the window slides by one bucket.
    pub bucket_seconds: u64,
    /// Below this many decisions in a group (or its reference group) metrics read "insufficient data".
    pub min_group_size: u64,
    /// Upper edges (inclusive) of the age bands: `[25]` gives `<=25` and `>25`.
    pub age_band_edges: Vec<u32>,
    /// Reference group for `sex`.
    pub sex_reference: String,
    /// Reference group for `age_band`.
    pub age_band_reference: String,
    /// Reference group for `foreign_worker`.
    pub foreign_worker_reference: String,
    /// Pairs of attributes also monitored together (intersectional groups), e.g.
    /// `[["sex", "age_band"]]`; at most 3 pairs.
    #[serde(default)]
    pub intersections: Vec<[String; 2]>,
    /// Fire when a group's disparate-impact interval lies wholly below this; clear when the point estimate is back at or above it.
    pub disparate_impact_threshold: f64,
    /// Fire when a group's parity-difference interval lies wholly beyond ± this; clear when the point estimate is within it.
    pub parity_difference_threshold: f64,
}

/// Drift monitoring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// PSI is reported only from this many events in the window.
    pub min_count: u64,
    /// Drifted when PSI exceeds this and the sampling-noise critical value.
    pub psi_threshold: f64,
}

/// Alert evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// A condition must hold this long to fire, and be clear this long to resolve.
    pub sustain_seconds: u64,
    /// How often metrics are evaluated and gauges refreshed.
    pub evaluation_interval_ms: u64,
}

/// Kafka connection and topics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Consumer group shared by all replicas.
    pub group_id: String,
    /// Topic of `LoanApplication` events.
    pub input_topic: String,
    /// Topic for `LoanDecision` events.
    pub decisions_topic: String,
    /// Topic for records that cannot be decided (original bytes + reason headers).
    pub dead_letter_topic: String,
    /// Fairness and drift alert events.
    pub alerts_topic: String,
    /// `LoanOutcome` events (delayed labels), consumed by the group `<group_id>-outcomes`.
    pub outcomes_topic: String,
    /// Consumer group session timeout.
    pub session_timeout_ms: u64,
    /// Longest wait of an input fetch for records (`fetch.wait.max.ms`, 1-1000). A broker that
    /// does not answer a long poll early (Tansu) holds a record up to this long; every empty
    /// fetch costs the broker CPU.
    #[serde(default = "default_input_fetch_wait_ms")]
    pub input_fetch_wait_ms: u32,
    /// This replica's stable name (for example the pod name): its static group membership
    /// (`group.instance.id`, so a restarted replica gets its partitions back at once) and its
    /// Kafka transactional id (`<group_id>-<instance_id>`). Unset: dynamic membership and a
    /// transactional id unique to the process.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Extra librdkafka properties for consumer and producer (security settings and tuning),
    /// passed through as is; numbers and booleans (`linger.ms = 5`, or the same from the
    /// environment) are passed as their text.
    #[serde(default, deserialize_with = "property_values")]
    pub client_properties: BTreeMap<String, String>,
}

/// Schema registry connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL, e.g. `http://schema-registry:8081`.
    pub url: String,
    /// Request timeout.
    pub timeout_ms: u64,
}

/// PostgreSQL connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL (`postgres://user@host:port/db`). Never logged.
    pub url: String,
    /// Pool size; `pipeline.audit_lanes` + 1 connections are opened at start and kept open.
    pub max_connections: u32,
    /// Apply the bundled migrations at start.
    pub run_migrations: bool,
    /// File of the keys that seal protected attributes at rest (a mounted secret; one
    /// `<id> <64 hex digits>` per line, the last one sealing). Required by the worker.
    #[serde(default)]
    pub protected_key_file: Option<PathBuf>,
}

/// Model selection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Model directory (LightGBM model + model card).
    pub directory: PathBuf,
    /// Scoring threads, each with its own booster.
    pub scoring_threads: usize,
    /// Override of the model card's approve cutoff.
    pub approve_below: Option<f64>,
    /// Override of the model card's decline cutoff.
    pub decline_at_or_above: Option<f64>,
    /// Challenger directory, scored on every event for comparison only (never acted on).
    pub shadow_directory: Option<PathBuf>,
    /// Directory holding model versions, for the admin endpoints; default: `directory`'s parent.
    pub models_root: Option<PathBuf>,
}

/// Batching and retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most records per batch.
    pub batch_max_records: usize,
    /// Longest wait for more records once a batch has one; 0: the batch takes what the consumer
    /// has fetched already and closes (under load that fills it, under light load nothing waits).
    pub batch_max_wait_ms: u64,
    /// Full batches' worth of records (`batch_max_records` each) that may wait for their audit
    /// while the next batch is scored, and for their announcement while the next is audited
    /// (1 to 16). The queues count records, so many small batches fit.
    #[serde(default = "default_batches_in_flight")]
    pub batches_in_flight: usize,
    /// Audit transactions that may run at once, each on its own connection, for the batches of
    /// its partitions (partition modulo lanes): a partition's batches are audited in order (1 to 8).
    #[serde(default = "default_audit_lanes")]
    pub audit_lanes: usize,
    /// First retry delay when a sink fails.
    pub retry_initial_backoff_ms: u64,
    /// Longest retry delay.
    pub retry_max_backoff_ms: u64,
    /// Latest accepted event time, in seconds after the processing time; later ones are
    /// dead-lettered (`event_time_out_of_range`).
    #[serde(default = "default_max_event_time_future_seconds")]
    pub max_event_time_future_seconds: u64,
    /// Earliest accepted event time, in seconds before the processing time.
    #[serde(default = "default_max_event_time_past_seconds")]
    pub max_event_time_past_seconds: u64,
}

/// A librdkafka property value as written: text, a number or a boolean.
#[derive(Deserialize)]
#[serde(untagged)]
enum PropertyValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

fn property_values<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    let values = BTreeMap::<String, PropertyValue>::deserialize(deserializer)?;
    Ok(values
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                PropertyValue::Text(text) => text,
                PropertyValue::Integer(number) => number.to_string(),
                PropertyValue::Float(number) => number.to_string(),
                PropertyValue::Boolean(flag) => flag.to_string(),
            };
            (key, text)
        })
        .collect())
}

fn default_input_fetch_wait_ms() -> u32 {
    10
}

fn default_batches_in_flight() -> usize {
    2
}

fn default_audit_lanes() -> usize {
    2
}

fn default_max_event_time_future_seconds() -> u64 {
    300
}

fn default_max_event_time_past_seconds() -> u64 {
    7 * 86_400
}

/// HTTP endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address (`host:port`; port 0 picks a free one).
    pub listen: String,
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// `text` or `json`.
    pub format: String,
    /// `tracing` filter, e.g. `info` or `credit_worker=debug,info`.
    pub level: String,
}
