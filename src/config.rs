//! Configuration: a TOML file plus environment overrides (`CREDIT_WORKER__SECTION__KEY=value`),
//! deserialized strictly into [`RawConfig`] (unknown keys rejected, errors name the key),
//! then checked into a [`WorkerConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::decision::Cutoffs;
use crate::fairness::groups::GroupingConfig;

/// Prefix of environment variables that override config keys; `__` separates levels.
pub const ENV_PREFIX: &str = "CREDIT_WORKER__";

/// Invalid configuration; every variant names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

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

/// Environment variable holding the admin bearer token (alternative to `admin.token_file`).
pub const ADMIN_TOKEN_ENV: &str = "CREDIT_WORKER_ADMIN_TOKEN";

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
    /// Extra librdkafka properties for consumer and producer (security settings and tuning), passed through as is.
    #[serde(default)]
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
    /// Pool size.
    pub max_connections: u32,
    /// Apply the bundled migrations at start.
    pub run_migrations: bool,
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
    /// Longest wait to fill a batch once it has a record.
    pub batch_max_wait_ms: u64,
    /// Decided batches that may wait for their sinks while the next one is scored (at least 1).
    #[serde(default = "default_batches_in_flight")]
    pub batches_in_flight: usize,
    /// First retry delay when a sink fails.
    pub retry_initial_backoff_ms: u64,
    /// Longest retry delay.
    pub retry_max_backoff_ms: u64,
}

fn default_batches_in_flight() -> usize {
    2
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

/// A secret bearer token: never printed, compared in constant time.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AdminToken(<redacted>)")
    }
}

/// Shortest accepted admin token.
pub const MIN_ADMIN_TOKEN_LENGTH: usize = 16;

impl AdminToken {
    /// A token of at least [`MIN_ADMIN_TOKEN_LENGTH`] characters (surrounding whitespace trimmed).
    pub fn new(secret: &str) -> Result<Self, String> {
        let secret = secret.trim();
        if secret.len() < MIN_ADMIN_TOKEN_LENGTH {
            return Err(format!("the admin token must have at least {MIN_ADMIN_TOKEN_LENGTH} characters"));
        }
        Ok(Self(secret.to_owned()))
    }

    /// Whether `presented` is the token; time independent of where they differ (digests compared
    /// with `subtle`, so the length is not revealed either).
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let expected = Sha256::digest(self.0.as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        expected.as_slice().ct_eq(presented.as_slice()).into()
    }
}

impl WorkerConfig {
    /// Loads `path`, applies the `CREDIT_WORKER__*` entries of `environment`, validates.
    pub fn load(path: &Path, environment: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::MissingFile(path.to_owned()));
        }
        let raw = RawConfig::from_figment(Figment::from(Toml::file(path)), environment)?;
        let admin = raw.admin.clone();
        let mut config = raw.validate()?;
        config.admin_token = admin_token(&admin, environment)?;
        Ok(config)
    }

    /// The effective configuration with every secret replaced by `***` (database password,
    /// secret-looking librdkafka properties, the admin token), safe to print or log.
    pub fn redacted(&self) -> serde_json::Value {
        let mut kafka = serde_json::to_value(&self.kafka).unwrap_or_default();
        if let Some(properties) = kafka.get_mut("client_properties").and_then(|value| value.as_object_mut()) {
            for (key, value) in properties.iter_mut() {
                if is_secret_property(key) {
                    *value = "***".into();
                }
            }
        }
        let mut database = serde_json::to_value(&self.database).unwrap_or_default();
        database["url"] = redact_url_password(&self.database.url).into();
        serde_json::json!({
            "kafka": kafka,
            "schema_registry": redact_url_password(&self.schema_registry.url),
            "database": database,
            "model": self.model,
            "pipeline": self.pipeline,
            "fairness": self.fairness,
            "drift": self.drift,
            "alerts": self.alerts,
            "http_listen": self.http_listen,
            "logging": { "format": format!("{:?}", self.log_format), "level": self.log_level },
            "admin_token": self.admin_token.as_ref().map(|_| "***"),
        })
    }

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

    /// The pipeline's retry backoff bounds.
    pub fn retry_backoff(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.pipeline.retry_initial_backoff_ms),
            Duration::from_millis(self.pipeline.retry_max_backoff_ms),
        )
    }
}

/// librdkafka properties that hold secrets.
fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "ssl.key.pem", "ssl.keystore", "sasl.oauthbearer.config", "sasl.jaas"]
        .iter()
        .any(|marker| key.contains(marker))
}

/// `scheme://user:password@host/...` → `scheme://user:***@host/...`; other strings unchanged.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let Some((credentials, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
    let masked = if credentials.contains(':') { format!("{user}:***") } else { user.to_owned() };
    match path {
        Some(path) => format!("{scheme}://{masked}@{host}/{path}"),
        None => format!("{scheme}://{masked}@{host}"),
    }
}

/// The admin token from `admin.token_file`, else from [`ADMIN_TOKEN_ENV`] in `environment`.
pub fn admin_token(
    admin: &AdminConfig,
    environment: &BTreeMap<String, String>,
) -> Result<Option<AdminToken>, ConfigError> {
    if let Some(path) = &admin.token_file {
        let secret = std::fs::read_to_string(path)
            .map_err(|error| invalid("admin.token_file", format!("cannot read {}: {error}", path.display())))?;
        return AdminToken::new(&secret).map(Some).map_err(|reason| invalid("admin.token_file", reason));
    }
    match environment.get(ADMIN_TOKEN_ENV) {
        Some(secret) => AdminToken::new(secret).map(Some).map_err(|reason| invalid("admin.token_file", reason)),
        None => Ok(None),
    }
}

impl RawConfig {
    /// Extracts from `base` overlaid with the environment overrides.
    pub fn from_figment(base: Figment, environment: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut figment = base;
        for (name, value) in environment {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else { continue };
            // Nest by `__` only, so a segment may contain dots (librdkafka property names).
            let mut nested: Value = value.parse().unwrap_or_else(|never| match never {});
            for segment in key.to_ascii_lowercase().rsplit("__") {
                nested = Value::from(Dict::from([(segment.to_owned(), nested)]));
            }
            figment = figment.merge(Serialized::defaults(nested));
        }
        figment.extract().map_err(|error| ConfigError::Parse(Box::new(error)))
    }

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
        non_empty("kafka.input_topic", &self.kafka.input_topic)?;
        non_empty("kafka.decisions_topic", &self.kafka.decisions_topic)?;
        non_empty("kafka.dead_letter_topic", &self.kafka.dead_letter_topic)?;
        non_empty("kafka.alerts_topic", &self.kafka.alerts_topic)?;
        let topics = [
            &self.kafka.input_topic,
            &self.kafka.decisions_topic,
            &self.kafka.dead_letter_topic,
            &self.kafka.alerts_topic,
        ];
        let distinct: std::collections::HashSet<_> = topics.iter().collect();
        if distinct.len() != topics.len() {
            return Err(invalid(
                "kafka.decisions_topic",
                "input, decisions, dead-letter, alerts and outcomes topics must differ",
            ));
        }
        if !(1000..=300_000).contains(&self.kafka.session_timeout_ms) {
            return Err(invalid("kafka.session_timeout_ms", "must be between 1000 and 300000"));
        }
        for key in self.kafka.client_properties.keys() {
            if ["group.id", "bootstrap.servers", "enable.auto.offset.store"].contains(&key.as_str()) {
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
        if self.pipeline.retry_initial_backoff_ms == 0
            || self.pipeline.retry_max_backoff_ms < self.pipeline.retry_initial_backoff_ms
        {
            return Err(invalid(
                "pipeline.retry_max_backoff_ms",
                "need 0 < retry_initial_backoff_ms <= retry_max_backoff_ms",
            ));
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
        };
        grouping.validate().map_err(|reason| invalid("fairness", reason))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The redacted dump hides the database password, secret librdkafka properties and the
    /// admin token, and keeps everything else.
    #[test]
    fn redacted_dump_hides_secrets() {
        let environment = [
            ("CREDIT_WORKER__DATABASE__URL", "postgres://app:hunter2-secret@db:5432/credit"),
            ("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__SASL.PASSWORD", "kafka-secret-pw"),
            ("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__SASL.USERNAME", "app"),
            (ADMIN_TOKEN_ENV, "admin-token-abcdefghijkl"),
        ];
        let mut config = load("", &environment).unwrap();
        let map = environment.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        config.admin_token = admin_token(&AdminConfig::default(), &map).unwrap();
        let dump = config.redacted().to_string();
        for secret in ["hunter2-secret", "kafka-secret-pw", "admin-token-abcdefghijkl"] {
            assert!(!dump.contains(secret), "{secret} leaked: {dump}");
        }
        assert!(
            dump.contains("postgres://app:***@db:5432/credit") && dump.contains("\"sasl.username\":\"app\""),
            "{dump}"
        );
        assert_eq!(redact_url_password("http://registry:8081"), "http://registry:8081");
        assert_eq!(redact_url_password("postgres://app@db/x"), "postgres://app@db/x");
    }

    /// The token comes from the file first, then the environment; short tokens are refused naming
    /// the key; the secret never shows in Debug output; only the exact token matches.
    #[test]
    fn admin_token_sources_validation_and_redaction() {
        let environment: BTreeMap<String, String> =
            [(ADMIN_TOKEN_ENV.to_owned(), "environment-token-0123".to_owned())].into();
        let token = admin_token(&AdminConfig::default(), &environment).unwrap().unwrap();
        assert!(token.matches("environment-token-0123"));
        assert!(!token.matches("environment-token-012"));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains("environment"));
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "file-token-abcdefghij\n").unwrap();
        let from_file = AdminConfig { token_file: Some(file.path().to_owned()) };
        assert!(admin_token(&from_file, &environment).unwrap().unwrap().matches("file-token-abcdefghij"));
        let short: BTreeMap<String, String> = [(ADMIN_TOKEN_ENV.to_owned(), "short".to_owned())].into();
        let error = admin_token(&AdminConfig::default(), &short).unwrap_err().to_string();
        assert!(error.contains("admin.token_file") && !error.contains("short"), "{error}");
        assert!(admin_token(&AdminConfig::default(), &BTreeMap::new()).unwrap().is_none());
    }

    const DEFAULT_TOML: &str = include_str!("../config/default.toml");

    fn load(extra_toml: &str, environment: &[(&str, &str)]) -> Result<WorkerConfig, ConfigError> {
        let environment = environment.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let figment = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(extra_toml));
        RawConfig::from_figment(figment, &environment)?.validate()
    }

    fn error_text(result: Result<WorkerConfig, ConfigError>) -> String {
        result.unwrap_err().to_string()
    }

    /// The shipped default config is valid as is.
    #[test]
    fn default_config_is_valid() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.kafka.input_topic, "loan-applications");
        assert_eq!(config.log_format, LogFormat::Text);
    }

    /// Environment entries override file values, nested by `__`, typed by content; others are ignored.
    #[test]
    fn environment_overrides_nested_keys() {
        let config = load(
            "",
            &[
                ("CREDIT_WORKER__KAFKA__BOOTSTRAP_SERVERS", "broker:29092"),
                ("CREDIT_WORKER__PIPELINE__BATCH_MAX_RECORDS", "42"),
                ("CREDIT_WORKER__MODEL__APPROVE_BELOW", "0.2"),
                ("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__SECURITY.PROTOCOL", "SSL"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "broker:29092");
        assert_eq!(config.pipeline.batch_max_records, 42);
        assert_eq!(config.model.approve_below, Some(0.2));
        assert_eq!(config.kafka.client_properties.get("security.protocol").map(String::as_str), Some("SSL"));
    }

    /// Unknown keys are rejected, and the error names them, from the file or from the environment.
    #[test]
    fn unknown_keys_are_rejected_by_name() {
        assert!(error_text(load("[kafka]\nbootstrap_server = 'x'", &[])).contains("bootstrap_server"));
        assert!(error_text(load("", &[("CREDIT_WORKER__HTTP__PORT", "1")])).contains("port"));
        assert!(error_text(load("[nonsense]\na = 1", &[])).contains("nonsense"));
    }

    /// Each invalid value fails validation naming its key.
    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("[kafka]\ngroup_id = ' '", "kafka.group_id"),
            ("[kafka]\ndecisions_topic = 'loan-applications'", "kafka.decisions_topic"),
            ("[kafka]\nsession_timeout_ms = 10", "kafka.session_timeout_ms"),
            ("[kafka.client_properties]\n'group.id' = 'x'", "kafka.client_properties"),
            ("[schema_registry]\nurl = 'localhost:8081'", "schema_registry.url"),
            ("[database]\nurl = 'mysql://x'", "database.url"),
            ("[model]\nscoring_threads = 0", "model.scoring_threads"),
            ("[model]\napprove_below = 1.5", "model.approve_below"),
            ("[pipeline]\nbatch_max_records = 0", "pipeline.batch_max_records"),
            ("[pipeline]\nretry_max_backoff_ms = 1", "pipeline.retry_max_backoff_ms"),
            ("[http]\nlisten = 'nowhere'", "http.listen"),
            ("[logging]\nformat = 'xml'", "logging.format"),
            ("[kafka]\nalerts_topic = 'loan-decisions'", "kafka.decisions_topic"),
            ("[fairness]\nbucket_seconds = 0", "fairness.window_seconds"),
            ("[fairness]\nsex_reference = 'other'", "fairness"),
            ("[fairness]\ndisparate_impact_threshold = 1.5", "fairness.disparate_impact_threshold"),
            ("[drift]\npsi_threshold = 0", "drift.psi_threshold"),
            ("[alerts]\nevaluation_interval_ms = 0", "alerts.evaluation_interval_ms"),
        ];
        for (toml, key) in cases {
            let text = error_text(load(toml, &[]));
            assert!(text.contains(key), "{toml}: {text}");
        }
    }

    /// Cutoff overrides are combined with the card's and must stay ordered.
    #[test]
    fn cutoff_overrides() {
        let card = Cutoffs { approve_below: 0.3, decline_at_or_above: 0.55 };
        let config = load("[model]\ndecline_at_or_above = 0.7", &[]).unwrap();
        assert_eq!(config.cutoffs(card).unwrap(), Cutoffs { approve_below: 0.3, decline_at_or_above: 0.7 });
        let config = load("[model]\napprove_below = 0.6", &[]).unwrap();
        assert!(config.cutoffs(card).is_err());
    }
}
