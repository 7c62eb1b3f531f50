//! The environment overlay: `CREDIT_WORKER__SECTION__KEY=value` entries override file keys.

use std::collections::BTreeMap;

use figment::error::Kind;
use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;

use super::{ConfigError, RawConfig};

/// Prefix of environment variables that override config keys; `__` separates levels.
pub const ENV_PREFIX: &str = "CREDIT_WORKER__";

impl RawConfig {
    /// Extracts from `base` overlaid with the environment overrides. An empty variable counts
    /// as unset; an error in a variable's value or key is reported under the variable's name.
    pub fn from_figment(base: Figment, environment: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut figment = base;
        let mut overrides: Vec<(&str, Vec<String>)> = Vec::new();
        for (name, value) in environment {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else { continue };
            if value.is_empty() {
                continue;
            }
            // Nest by `__` only, so a segment may contain dots (librdkafka property names).
            let path: Vec<String> = key.to_ascii_lowercase().split("__").map(str::to_owned).collect();
            // librdkafka properties stay text as given ("000123" is not the number 123).
            let mut nested: Value = if path.starts_with(&["kafka".to_owned(), "client_properties".to_owned()]) {
                Value::from(value.clone())
            } else {
                value.parse().unwrap_or_else(|never| match never {})
            };
            for segment in path.iter().rev() {
                nested = Value::from(Dict::from([(segment.clone(), nested)]));
            }
            figment = figment.merge(Serialized::defaults(nested));
            overrides.push((name, path));
        }
        figment.extract().map_err(|error| {
            // An unknown key's error path may or may not end with the key itself.
            let mut with_field = error.path.clone();
            if let Kind::UnknownField(field, _) = &error.kind {
                with_field.push(field.clone());
            }
            match overrides.iter().find(|(_, key)| *key == error.path || *key == with_field) {
                Some((variable, _)) => {
                    ConfigError::Environment { variable: (*variable).to_owned(), source: Box::new(error) }
                }
                None => ConfigError::Parse(Box::new(error)),
            }
        })
    }
}
