//! Secrets: the admin token (from a file or the environment, compared in constant time), and
//! redaction of every secret before the configuration is printed or logged.

use std::collections::BTreeMap;

use super::{invalid, AdminConfig, ConfigError, DatabaseConfig, WorkerConfig};
use crate::codec::ProtectedKeys;

/// Environment variable holding the admin bearer token (alternative to `admin.token_file`).
pub const ADMIN_TOKEN_ENV: &str = "CREDIT_WORKER_ADMIN_TOKEN";

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

/// The admin token from `admin.token_file`, else from [`ADMIN_TOKEN_ENV`] in `environment` (an
/// empty variable counts as unset).
pub fn admin_token(
    admin: &AdminConfig,
    environment: &BTreeMap<String, String>,
) -> Result<Option<AdminToken>, ConfigError> {
    if let Some(path) = &admin.token_file {
        let secret = std::fs::read_to_string(path)
            .map_err(|error| invalid("admin.token_file", format!("cannot read {}: {error}", path.display())))?;
        return AdminToken::new(&secret).map(Some).map_err(|reason| invalid("admin.token_file", reason));
    }
    match environment.get(ADMIN_TOKEN_ENV).filter(|secret| !secret.trim().is_empty()) {
        Some(secret) => AdminToken::new(secret)
            .map(Some)
            .map_err(|reason| ConfigError::Variable { variable: ADMIN_TOKEN_ENV, reason }),
        None => Ok(None),
    }
}

/// The keys of `database.protected_key_file`; errors name the key and never show a key.
pub fn protected_keys(database: &DatabaseConfig) -> Result<std::sync::Arc<ProtectedKeys>, ConfigError> {
    const KEY: &str = "database.protected_key_file";
    let path = database.protected_key_file.as_ref().ok_or_else(|| {
        invalid(KEY, "required: the protected attributes are stored sealed under its keys (README, Security)")
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|error| invalid(KEY, format!("cannot read {}: {error}", path.display())))?;
    let keys = ProtectedKeys::parse(&text).map_err(|error| invalid(KEY, format!("{}: {error}", path.display())))?;
    Ok(std::sync::Arc::new(keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};
    use figment::Figment;

    fn load(environment: &[(&str, &str)]) -> WorkerConfig {
        let environment = environment.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let figment = Figment::from(Toml::string(include_str!("../../config/default.toml")));
        super::super::RawConfig::from_figment(figment, &environment).unwrap().validate().unwrap()
    }

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
        let mut config = load(&environment);
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
        assert!(error.contains(ADMIN_TOKEN_ENV) && !error.contains("admin.token_file"), "{error}");
        assert!(!error.contains("short"), "{error}");
        let short_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(short_file.path(), "short").unwrap();
        let error = admin_token(&AdminConfig { token_file: Some(short_file.path().to_owned()) }, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(error.contains("admin.token_file"), "{error}");
        assert!(admin_token(&AdminConfig::default(), &BTreeMap::new()).unwrap().is_none());
    }

    /// The key file is required, read, and validated, errors naming the key and the line only.
    #[test]
    fn protected_key_file_is_required_and_checked() {
        let database = |file: Option<std::path::PathBuf>| DatabaseConfig {
            url: "postgres://db/x".into(),
            max_connections: 1,
            run_migrations: false,
            protected_key_file: file,
        };
        let missing = protected_keys(&database(None)).unwrap_err().to_string();
        assert!(missing.contains("database.protected_key_file") && missing.contains("required"), "{missing}");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("1 {}\n2 {}", "ab".repeat(32), "cd".repeat(31))).unwrap();
        let bad = protected_keys(&database(Some(file.path().to_owned()))).unwrap_err().to_string();
        assert!(bad.contains("database.protected_key_file") && bad.contains("line 2"), "{bad}");
        assert!(!bad.contains("abab") && !bad.contains("cdcd"), "{bad}");
        std::fs::write(file.path(), ProtectedKeys::generate()).unwrap();
        assert!(protected_keys(&database(Some(file.path().to_owned()))).is_ok());
    }

    /// An empty (or blank) `CREDIT_WORKER_ADMIN_TOKEN=` counts as unset: the admin endpoints are
    /// disabled, and the start does not fail over a key that was never set.
    #[test]
    fn empty_admin_token_variable_counts_as_unset() {
        for blank in ["", "  "] {
            let environment: BTreeMap<String, String> = [(ADMIN_TOKEN_ENV.to_owned(), blank.to_owned())].into();
            assert!(admin_token(&AdminConfig::default(), &environment).unwrap().is_none(), "{blank:?}");
        }
    }
}
