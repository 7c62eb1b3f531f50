//! The environment overlay: `CREDIT_WORKER__SECTION__KEY=value` entries override file keys.

use std::collections::BTreeMap;

use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;

use super::{ConfigError, RawConfig};

/// Prefix of environment variables that override config keys; `__` separates levels.
pub const ENV_PREFIX: &str = "CREDIT_WORKER__";

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
}
