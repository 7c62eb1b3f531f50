//! Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body) →
//! [`LoanApplication`]. Writer schemas come from the registry by id and are cached;
//! the body is resolved against the bundled reader schema.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::AvroSchema;

use crate::events::{LoanApplication, LOAN_APPLICATION};

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no value")]
    EmptyValue,
    #[error("not Confluent wire format: {0}")]
    BadFraming(&'static str),
    #[error("schema id {0} is not known to the schema registry")]
    UnknownSchema(u32),
    #[error("schema id {id} cannot be read as LoanApplication: {reason}")]
    IncompatibleSchema { id: u32, reason: String },
    #[error("Avro body does not match its schema: {0}")]
    Avro(String),
    #[error("{0} trailing bytes after the Avro body")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// Fixed, low-cardinality reason label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EmptyValue => "empty_value",
            Self::BadFraming(_) => "bad_framing",
            Self::UnknownSchema(_) => "unknown_schema",
            Self::IncompatibleSchema { .. } => "incompatible_schema",
            Self::Avro(_) => "avro_decode",
            Self::TrailingBytes(_) => "trailing_bytes",
        }
    }
}

/// Splits a Confluent-framed value into schema id and Avro body.
pub fn split_frame(value: Option<&[u8]>) -> Result<(u32, &[u8]), DecodeError> {
    let value = value.ok_or(DecodeError::EmptyValue)?;
    match value {
        [] => Err(DecodeError::EmptyValue),
        [magic, ..] if *magic != 0 => Err(DecodeError::BadFraming("magic byte is not 0")),
        [_, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => Err(DecodeError::BadFraming("shorter than the 5-byte header")),
    }
}

/// Builds the readers for a set of writer schemas and decodes bodies with them.
pub struct ApplicationDecoder<'s> {
    readers: HashMap<u32, GenericDatumReader<'s>>,
}

impl<'s> ApplicationDecoder<'s> {
    /// Prepares a reader (writer schema resolved against the bundled reader schema) per schema id.
    pub fn new(writer_schemas: &'s HashMap<u32, Arc<AvroSchema>>) -> Self {
        let readers = writer_schemas
            .iter()
            .filter_map(|(id, schema)| {
                GenericDatumReader::builder(&schema.parsed)
                    .reader_schema(&LOAN_APPLICATION)
                    .build()
                    .ok()
                    .map(|reader| (*id, reader))
            })
            .collect();
        Self { readers }
    }

    /// Decodes the Avro `body` written with schema `schema_id`.
    pub fn decode(&self, schema_id: u32, body: &[u8]) -> Result<LoanApplication, DecodeError> {
        let reader = self.readers.get(&schema_id).ok_or_else(|| DecodeError::IncompatibleSchema {
            id: schema_id,
            reason: "writer schema does not resolve against LoanApplication".into(),
        })?;
        let mut remaining = body;
        let value = reader.read_value(&mut remaining).map_err(|error| classify(schema_id, &error))?;
        if !remaining.is_empty() {
            return Err(DecodeError::TrailingBytes(remaining.len()));
        }
        apache_avro::from_value(&value).map_err(|error| DecodeError::IncompatibleSchema {
            id: schema_id,
            reason: error.to_string(),
        })
    }
}

fn classify(schema_id: u32, error: &apache_avro::Error) -> DecodeError {
    let text = error.to_string();
    if text.contains("resolve") || text.contains("Resolve") {
        DecodeError::IncompatibleSchema { id: schema_id, reason: text }
    } else {
        DecodeError::Avro(text)
    }
}

/// Looking up a writer schema failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaLookupError {
    /// The registry answered: no such schema (dead-letter the record).
    #[error(transparent)]
    Unknown(DecodeError),
    /// The registry could not be reached or failed; retry later, do not dead-letter.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

/// Writer schemas by id, fetched from the registry once and cached for the life of the process.
pub struct SchemaCache {
    decoder: AvroDecoder,
}

impl SchemaCache {
    /// A cache backed by the registry described by `settings`.
    pub fn new(settings: SrSettings) -> Self {
        Self { decoder: AvroDecoder::new(settings) }
    }

    /// The writer schema with `id`. A schema that does not parse as an Avro record counts as unknown.
    pub async fn writer_schema(&self, id: u32) -> Result<Arc<AvroSchema>, SchemaLookupError> {
        match self.decoder.get_schema(id).await {
            Ok(schema) if matches!(schema.parsed, Schema::Record(_)) => Ok(schema),
            Ok(_) => Err(SchemaLookupError::Unknown(DecodeError::IncompatibleSchema {
                id,
                reason: "not an Avro record schema".into(),
            })),
            Err(error) if error.retriable => Err(SchemaLookupError::Unavailable(error.error)),
            Err(_) => Err(SchemaLookupError::Unknown(DecodeError::UnknownSchema(id))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Framing: valid header, wrong magic, short header, empty and missing values.
    #[test]
    fn frame_parsing() {
        assert_eq!(split_frame(Some(&[0, 0, 0, 1, 2, 9, 9])), Ok((258, &[9u8, 9][..])));
        assert_eq!(split_frame(Some(&[0, 0, 0, 0, 7])), Ok((7, &[][..])));
        assert_eq!(split_frame(Some(&[1, 0, 0, 0, 7, 1])).unwrap_err().kind(), "bad_framing");
        assert_eq!(split_frame(Some(&[0, 0, 0])).unwrap_err().kind(), "bad_framing");
        assert_eq!(split_frame(Some(&[])), Err(DecodeError::EmptyValue));
        assert_eq!(split_frame(None), Err(DecodeError::EmptyValue));
    }
}
