//! The validated, typed configuration: [`RawConfig::validate`] checks every value and names
//! the first bad key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{invalid, AlertsConfig, ConfigError, DatabaseConfig, DriftConfig, FairnessConfig, KafkaConfig};
use super::{AdminToken, ModelConfig, PipelineConfig, RawConfig, SchemaRegistryConfig};
use crate::domain::{Cutoffs, EventTimePolicy, GroupingConfig};

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration that passed validation.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub kafka: KafkaConfig,
    pub schema_registry: SchemaRegistryConfig,
    pub database: DatabaseConfig,
    pub model: ModelConfig,
    pub pipeline: PipelineConfig,
    pub fairness: FairnessConfig,
    pub grouping: GroupingConfig,
    pub drift: DriftConfig,
    pub alerts: AlertsConfig,
    pub http_listen: SocketAddr,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Bearer token for the admin endpoints (`None`: they are disabled).
    pub admin_token: Option<AdminToken>,
}

impl WorkerConfig {
    /// The directory holding model versions.
    pub fn models_root(&self) -> PathBuf {
        self.model.models_root.clone().unwrap_or_else(|| match self.model.directory.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        })
    }

    /// The cutoffs to use: config overrides, else the model card's.
    pub fn cutoffs(&self, model_card_cutoffs: Cutoffs) -> Result<Cutoffs, ConfigError> {
        Cutoffs {
            approve_below: self.model.approve_below.unwrap_or(model_card_cutoffs.approve_below),
            decline_at_or_above: self.model.decline_at_or_above.unwrap_or(model_card_cutoffs.decline_at_or_above),
        }
        .validate()
        .map_err(|error| invalid("model.approve_below/model.decline_at_or_above", error.to_string()))
    }

    /// The Kafka transactional id of this replica's decisions producer.
    pub fn transactional_id(&self) -> String {
        match &self.kafka.instance_id {
            Some(instance_id) => format!("{}-{instance_id}", self.kafka.group_id),
            None => format!("{}-{}", self.kafka.group_id, uuid::Uuid::new_v4().simple()),
        }
    }

    /// How far event times may lie from the processing time.
    pub fn event_times(&self) -> EventTimePolicy {
        EventTimePolicy {
            max_future: chrono::Duration::seconds(self.pipeline.max_event_time_future_seconds as i64),
            max_past: chrono::Duration::seconds(self.pipeline.max_event_time_past_seconds as i64),
        }
    }

    /// The pipeline's retry backoff bounds.
    pub fn retry_backoff(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.pipeline.retry_initial_backoff_ms),
            Duration::from_millis(self.pipeline.retry_max_backoff_ms),
        )
    }
}

impl RawConfig {
    /// Checks every value; the error names the first bad key.
    pub fn validate(self) -> Result<WorkerConfig, ConfigError> {
        let non_empty = |key: &'static str, value: &str| {
            if value.trim().is_empty() {
                Err(invalid(key, "must not be empty"))
            } else {
                Ok(())
            }
        };
        non_empty("kafka.bootstrap_servers", &self.kafka.bootstrap_servers)?;
        non_empty("kafka.group_id", &self.kafka.group_id)?;
        let topics = [
            ("kafka.input_topic", &self.kafka.input_topic),
            ("kafka.decisions_topic", &self.kafka.decisions_topic),
            ("kafka.dead_letter_topic", &self.kafka.dead_letter_topic),
            ("kafka.alerts_topic", &self.kafka.alerts_topic),
            ("kafka.outcomes_topic", &self.kafka.outcomes_topic),
        ];
        for (position, (key, topic)) in topics.iter().enumerate() {
            non_empty(key, topic)?;
            if let Some((other, _)) = topics[..position].iter().find(|(_, earlier)| earlier == topic) {
                return Err(invalid(key, format!("must differ from {other} (both are `{topic}`)")));
            }
        }
        if !(1000..=300_000).contains(&self.kafka.session_timeout_ms) {
            return Err(invalid("kafka.session_timeout_ms", "must be between 1000 and 300000"));
        }
        if !(1..=1000).contains(&self.kafka.input_fetch_wait_ms) {
            return Err(invalid("kafka.input_fetch_wait_ms", "must be between 1 and 1000"));
        }
        if let Some(instance_id) = &self.kafka.instance_id {
            let plain = !instance_id.is_empty()
                && instance_id.len() <= 200
                && instance_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !plain {
                return Err(invalid("kafka.instance_id", "must be 1-200 letters, digits, '.', '_' or '-'"));
            }
        }
        for key in self.kafka.client_properties.keys() {
            let owned =
                ["group.id", "group.instance.id", "bootstrap.servers", "enable.auto.offset.store", "transactional.id"];
            if owned.contains(&key.as_str()) {
                return Err(invalid("kafka.client_properties", format!("`{key}` is set by the worker")));
            }
        }
        if !(self.schema_registry.url.starts_with("http://") || self.schema_registry.url.starts_with("https://")) {
            return Err(invalid("schema_registry.url", "must start with http:// or https://"));
        }
        if self.schema_registry.timeout_ms == 0 {
            return Err(invalid("schema_registry.timeout_ms", "must be positive"));
        }
        if !(self.database.url.starts_with("postgres://") || self.database.url.starts_with("postgresql://")) {
            return Err(invalid("database.url", "must be a postgres:// URL"));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be positive"));
        }
        if !(1..=64).contains(&self.model.scoring_threads) {
            return Err(invalid("model.scoring_threads", "must be between 1 and 64"));
        }
        for (key, cutoff) in [
            ("model.approve_below", self.model.approve_below),
            ("model.decline_at_or_above", self.model.decline_at_or_above),
        ] {
            if cutoff.is_some_and(|value| !(0.0..=1.0).contains(&value)) {
                return Err(invalid(key, "must be a probability in [0, 1]"));
            }
        }
        if !(1..=50_000).contains(&self.pipeline.batch_max_records) {
            return Err(invalid("pipeline.batch_max_records", "must be between 1 and 50000"));
        }
        if !(1..=16).contains(&self.pipeline.batches_in_flight) {
            return Err(invalid("pipeline.batches_in_flight", "must be between 1 and 16"));
        }
        if !(1..=8).contains(&self.pipeline.audit_lanes) {
            return Err(invalid("pipeline.audit_lanes", "must be between 1 and 8"));
        }
        if self.pipeline.audit_lanes as u32 >= self.database.max_connections {
            return Err(invalid(
                "pipeline.audit_lanes",
                "must be below database.max_connections (a lane holds a connection)",
            ));
        }
        if self.pipeline.retry_initial_backoff_ms == 0
            || self.pipeline.retry_max_backoff_ms < self.pipeline.retry_initial_backoff_ms
        {
            return Err(invalid(
                "pipeline.retry_max_backoff_ms",
                "need 0 < retry_initial_backoff_ms <= retry_max_backoff_ms",
            ));
        }
        if self.pipeline.max_event_time_future_seconds > 86_400 {
            return Err(invalid("pipeline.max_event_time_future_seconds", "must be at most 86400 (one day)"));
        }
        if !(1..=3650 * 86_400).contains(&self.pipeline.max_event_time_past_seconds) {
            return Err(invalid("pipeline.max_event_time_past_seconds", "must be between 1 and 315360000 (ten years)"));
        }
        let fairness = &self.fairness;
        if fairness.bucket_seconds == 0 || fairness.window_seconds < fairness.bucket_seconds {
            return Err(invalid("fairness.window_seconds", "need 0 < bucket_seconds <= window_seconds"));
        }
        if fairness.min_group_size == 0 {
            return Err(invalid("fairness.min_group_size", "must be positive"));
        }
        if !(fairness.disparate_impact_threshold > 0.0 && fairness.disparate_impact_threshold <= 1.0) {
            return Err(invalid("fairness.disparate_impact_threshold", "must be in (0, 1]"));
        }
        if !(fairness.parity_difference_threshold > 0.0 && fairness.parity_difference_threshold < 1.0) {
            return Err(invalid("fairness.parity_difference_threshold", "must be in (0, 1)"));
        }
        let grouping = GroupingConfig {
            age_band_edges: fairness.age_band_edges.clone(),
            sex_reference: fairness.sex_reference.clone(),
            age_band_reference: fairness.age_band_reference.clone(),
            foreign_worker_reference: fairness.foreign_worker_reference.clone(),
            intersections: fairness.intersections.clone(),
        };
        grouping.validate().map_err(|reason| invalid("fairness", reason.to_string()))?;
        if self.drift.min_count == 0 || self.drift.psi_threshold <= 0.0 || self.drift.psi_threshold.is_nan() {
            return Err(invalid("drift.psi_threshold", "need min_count > 0 and psi_threshold > 0"));
        }
        if self.alerts.evaluation_interval_ms == 0 {
            return Err(invalid("alerts.evaluation_interval_ms", "must be positive"));
        }
        let http_listen =
            self.http.listen.parse().map_err(|_| {
                invalid("http.listen", format!("`{}` is not a host:port socket address", self.http.listen))
            })?;
        let log_format = match self.logging.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("logging.format", format!("`{other}` is not one of text, json"))),
        };
        Ok(WorkerConfig {
            kafka: self.kafka,
            schema_registry: self.schema_registry,
            database: self.database,
            model: self.model,
            pipeline: self.pipeline,
            fairness: self.fairness,
            grouping,
            drift: self.drift,
            alerts: self.alerts,
            http_listen,
            log_format,
            log_level: self.logging.level,
            admin_token: None,
        })
    }
}
