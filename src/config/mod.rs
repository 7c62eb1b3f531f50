//! Configuration: a TOML file (`raw`) plus environment overrides (`env`,
//! `CREDIT_WORKER__SECTION__KEY=value`), deserialized strictly (unknown keys rejected, errors
//! name the key), checked into a typed [`WorkerConfig`] (`validated`), with secrets read from
//! files or the environment and never printed (`secrets`).

mod env;
mod raw;
mod secrets;
mod validated;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::Figment;

use crate::error::{Retriable, Retry};

pub use env::ENV_PREFIX;
pub use raw::{
    AdminConfig, AlertsConfig, DatabaseConfig, DriftConfig, FairnessConfig, HttpConfig, KafkaConfig, LoggingConfig,
    ModelConfig, PipelineConfig, RawConfig, SchemaRegistryConfig,
};
pub use secrets::{
    admin_token, protected_keys, redact_url_password, AdminToken, ADMIN_TOKEN_ENV, MIN_ADMIN_TOKEN_LENGTH,
};
pub use validated::{LogFormat, WorkerConfig};

/// Invalid configuration; every variant names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("environment variable {variable}: {source}")]
    Environment { variable: String, source: Box<figment::Error> },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("environment variable `{variable}`: {reason}")]
    Variable { variable: &'static str, reason: String },
}

pub(crate) fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

impl Retriable for ConfigError {
    /// A configuration is fixed by editing it, never by trying again.
    fn retry(&self) -> Retry {
        Retry::Never
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Cutoffs;
    const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

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
                ("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__TOPIC.METADATA.REFRESH.INTERVAL.MS", "1000"),
                ("CREDIT_WORKER__KAFKA__CLIENT_PROPERTIES__SASL.PASSWORD", "000123"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        let property = |key: &str| config.kafka.client_properties.get(key).map(String::as_str);
        assert_eq!(property("topic.metadata.refresh.interval.ms"), Some("1000"));
        assert_eq!(property("sasl.password"), Some("000123"), "kept as text, leading zeros included");
        assert_eq!(config.kafka.bootstrap_servers, "broker:29092");
        assert_eq!(config.pipeline.batch_max_records, 42);
        assert_eq!(config.model.approve_below, Some(0.2));
        assert_eq!(config.kafka.client_properties.get("security.protocol").map(String::as_str), Some("SSL"));
    }

    /// librdkafka properties written as numbers or booleans in the file pass as their text.
    #[test]
    fn numeric_client_properties_in_the_file_pass_as_text() {
        let config = load("[kafka.client_properties]\n'linger.ms' = 5\n'enable.idempotence' = true", &[]).unwrap();
        let property = |key: &str| config.kafka.client_properties.get(key).map(String::as_str);
        assert_eq!((property("linger.ms"), property("enable.idempotence")), (Some("5"), Some("true")));
    }

    /// Unknown keys are rejected, and the error names them, from the file or from the environment.
    #[test]
    fn unknown_keys_are_rejected_by_name() {
        assert!(error_text(load("[kafka]\nbootstrap_server = 'x'", &[])).contains("bootstrap_server"));
        assert!(error_text(load("", &[("CREDIT_WORKER__HTTP__PORT", "1")])).contains("port"));
        assert!(error_text(load("[nonsense]\na = 1", &[])).contains("nonsense"));
    }

    /// An empty environment variable counts as unset: the file's value (or the default) stays.
    #[test]
    fn empty_environment_values_count_as_unset() {
        let config = load(
            "[kafka]\ninstance_id = 'worker-7'",
            &[("CREDIT_WORKER__KAFKA__INSTANCE_ID", ""), ("CREDIT_WORKER__PIPELINE__BATCH_MAX_RECORDS", "")],
        )
        .unwrap();
        assert_eq!(config.kafka.instance_id.as_deref(), Some("worker-7"));
        assert_eq!(config.pipeline.batch_max_records, load("", &[]).unwrap().pipeline.batch_max_records);
    }

    /// A bad value or an unknown key from the environment is reported under the variable's name.
    #[test]
    fn environment_errors_name_the_variable() {
        let text = error_text(load("", &[("CREDIT_WORKER__PIPELINE__BATCH_MAX_RECORDS", "many")]));
        assert!(text.contains("CREDIT_WORKER__PIPELINE__BATCH_MAX_RECORDS"), "{text}");
        let text = error_text(load("", &[("CREDIT_WORKER__KAFKA__BOOTSTRAP_SERVER", "x")]));
        assert!(text.contains("CREDIT_WORKER__KAFKA__BOOTSTRAP_SERVER"), "{text}");
    }

    /// Topics must all differ, the outcomes topic included; the error names the key that clashes.
    #[test]
    fn clashing_topics_name_the_key_given() {
        for key in ["decisions_topic", "dead_letter_topic", "alerts_topic", "outcomes_topic"] {
            let text = error_text(load(&format!("[kafka]\n{key} = 'loan-applications'"), &[]));
            assert!(text.contains(&format!("kafka.{key}")), "{key}: {text}");
        }
    }

    /// Each invalid value fails validation naming its key.
    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("[kafka]\ngroup_id = ' '", "kafka.group_id"),
            ("[kafka]\ndecisions_topic = 'loan-applications'", "kafka.decisions_topic"),
            ("[kafka]\nsession_timeout_ms = 10", "kafka.session_timeout_ms"),
            ("[kafka]\ninput_fetch_wait_ms = 0", "kafka.input_fetch_wait_ms"),
            ("[kafka.client_properties]\n'group.id' = 'x'", "kafka.client_properties"),
            ("[schema_registry]\nurl = 'localhost:8081'", "schema_registry.url"),
            ("[database]\nurl = 'mysql://x'", "database.url"),
            ("[model]\nscoring_threads = 0", "model.scoring_threads"),
            ("[model]\napprove_below = 1.5", "model.approve_below"),
            ("[pipeline]\nbatch_max_records = 0", "pipeline.batch_max_records"),
            ("[pipeline]\nretry_max_backoff_ms = 1", "pipeline.retry_max_backoff_ms"),
            ("[http]\nlisten = 'nowhere'", "http.listen"),
            ("[logging]\nformat = 'xml'", "logging.format"),
            ("[kafka]\nalerts_topic = 'loan-decisions'", "kafka.alerts_topic"),
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
