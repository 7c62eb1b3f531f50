//! The schema registry (Confluent REST API): writer schemas by id, fetched once and cached for
//! the life of the process; output schemas registered under `<topic>-value`.

use std::sync::Arc;

use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{get_all_subjects, post_schema, SrSettings};
use schema_registry_converter::avro_common::AvroSchema;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

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
    /// incompatible; an unreachable registry is [`CodecError::RegistryUnavailable`].
    pub async fn writer_schema(&self, id: u32) -> Result<Arc<AvroSchema>, CodecError> {
        match self.decoder.get_schema(id).await {
            Ok(schema) if matches!(schema.parsed, Schema::Record(_)) => Ok(schema),
            Ok(_) => Err(CodecError::IncompatibleSchema { id, reason: "not an Avro record schema".into() }),
            Err(error) if error.retriable => Err(CodecError::RegistryUnavailable(error.error)),
            Err(_) => Err(CodecError::UnknownSchema(id)),
        }
    }
}

/// Registers the Avro `schema` under `subject`; returns its id.
pub async fn register_schema(settings: &SrSettings, subject: &str, schema: &str) -> Result<u32, CodecError> {
    let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
    post_schema(settings, subject.to_owned(), supplied)
        .await
        .map(|registered| registered.id)
        .map_err(|error| CodecError::RegistryUnavailable(error.error))
}

/// Whether the registry answers.
pub async fn registry_reachable(settings: &SrSettings) -> bool {
    get_all_subjects(settings).await.is_ok()
}
