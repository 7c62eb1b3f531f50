//! The schema registry (Confluent REST API): writer schemas by id, fetched once and cached for
//! the life of the process; output schemas registered under `<topic>-value`. Only a schema is
//! cached, never a failure, and only the registry's "schema not found" (404, error code 40403)
//! makes an id unknown: every other failure is the registry's, and worth waiting out.

use std::sync::Arc;

use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{get_all_subjects, post_schema, SrSettings};
use schema_registry_converter::avro_common::AvroSchema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{RawError, SchemaType, SuppliedSchema};

use super::CodecError;

/// Writer schemas by id, from the registry.
pub struct SchemaCache {
    decoder: AvroDecoder,
}

impl SchemaCache {
    /// A cache backed by the registry described by `settings`.
    pub fn new(settings: SrSettings) -> Self {
        Self { decoder: AvroDecoder::new(settings) }
    }

    /// The writer schema with `id`. A schema that does not parse as an Avro record counts as
    /// incompatible; see [`classify`] for the failures.
    pub async fn writer_schema(&self, id: u32) -> Result<Arc<AvroSchema>, CodecError> {
        match self.decoder.get_schema(id).await {
            Ok(schema) if matches!(schema.parsed, Schema::Record(_)) => Ok(schema),
            Ok(_) => Err(CodecError::IncompatibleSchema { id, reason: "not an Avro record schema".into() }),
            Err(error) => {
                // The converter caches every failure it deems final (any 4xx or 500, say): drop
                // them, so the next lookup asks the registry again.
                self.decoder.remove_errors_from_cache();
                Err(classify(id, &error))
            }
        }
    }
}

/// Confluent's error code for "schema not found" (with HTTP 404).
const SCHEMA_NOT_FOUND: u32 = 40403;

/// A failed lookup of `id`: the registry's "schema not found" is [`CodecError::UnknownSchema`];
/// any other answer of the registry, or none, is [`CodecError::RegistryUnavailable`]; a schema
/// the registry returned that cannot be read as Avro is [`CodecError::IncompatibleSchema`].
fn classify(id: u32, error: &SRCError) -> CodecError {
    match registry_error_code(error) {
        Some(SCHEMA_NOT_FOUND) => CodecError::UnknownSchema(id),
        Some(code) => CodecError::RegistryUnavailable(format!("{} (error code {code})", error.error)),
        None if error.retriable => CodecError::RegistryUnavailable(error.error.clone()),
        None => CodecError::IncompatibleSchema { id, reason: truncate(&error.error, 200) },
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Registers the Avro `schema` under `subject`; returns its id.
pub async fn register_schema(settings: &SrSettings, subject: &str, schema: &str) -> Result<u32, CodecError> {
    let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
    post_schema(settings, subject.to_owned(), supplied).await.map(|registered| registered.id).map_err(|error| {
        match registry_error_code(&error) {
            Some(code @ (INCOMPATIBLE | INVALID_SCHEMA)) => CodecError::SchemaRefused {
                subject: subject.to_owned(),
                reason: format!("error code {code}: {}", error.cause.as_deref().unwrap_or(&error.error)),
            },
            _ => CodecError::RegistryUnavailable(error.error),
        }
    })
}

/// Confluent's error codes for a schema refused at registration: incompatible (with HTTP 409)
/// or invalid (with HTTP 422).
const INCOMPATIBLE: u32 = 409;
const INVALID_SCHEMA: u32 = 42201;

/// The registry's error code in `error`'s chain of causes, if the registry answered.
fn registry_error_code(error: &SRCError) -> Option<u32> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(raw) = cause.downcast_ref::<RawError>() {
            return Some(raw.error_code);
        }
        source = cause.source();
    }
    None
}

/// Whether the registry answers.
pub async fn registry_reachable(settings: &SrSettings) -> bool {
    get_all_subjects(settings).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: &str, body: &str) -> SRCError {
        let raw: RawError = serde_json::from_str(body).unwrap();
        SRCError::non_retryable_with_cause(raw, &format!("HTTP request to schema registry failed with status {status}"))
    }

    /// Only 40403 makes an id unknown; other registry answers, also wrapped (a reference lookup),
    /// and transport errors are the registry's; a schema that cannot be parsed is incompatible.
    #[test]
    fn only_schema_not_found_makes_an_id_unknown() {
        assert_eq!(
            classify(7, &answered("404", r#"{"error_code":40403,"message":"Schema not found"}"#)).kind(),
            "unknown_schema"
        );
        for (status, body) in [
            ("500", r#"{"error_code":50001,"message":"x"}"#),
            ("401", r#"{"error_code":40101,"message":"x"}"#),
            ("429", r#"{"error_code":42901,"message":"x"}"#),
            ("404", r#"{"error_code":0,"message":"couldn't parse schema registry error json"}"#),
        ] {
            assert_eq!(classify(7, &answered(status, body)).kind(), "schema_registry", "{status}");
            let wrapped = SRCError::non_retryable_with_cause(answered(status, body), "problem with reference");
            assert_eq!(classify(7, &wrapped).kind(), "schema_registry", "{status}, wrapped");
        }
        assert_eq!(classify(7, &SRCError::new("connection refused", None, true)).kind(), "schema_registry");
        let unparsable = SRCError::non_retryable_without_cause("failed to parse Avro schema");
        assert_eq!(classify(7, &unparsable).kind(), "incompatible_schema");
    }
}
