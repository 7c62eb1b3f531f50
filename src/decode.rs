//! Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body) →
//! [`LoanApplication`]. Writer schemas come from the registry by id and are cached;
//! the body is resolved against the bundled reader schema.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
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

/// How a body written with one schema id is read.
enum BodyReader<'s> {
    /// The writer schema is the bundled one: strict schema-aware deserialisation straight into the type.
    Direct(GenericDatumReader<'s>),
    /// Another (compatible) writer schema: read with it, check the encoding round-trips (the
    /// generic reader treats end of input inside a union or string as null), resolve to ours.
    Resolving { reader: GenericDatumReader<'s>, writer: GenericDatumWriter<'s> },
}

/// Builds the readers for a set of writer schemas and decodes bodies with them.
pub struct ApplicationDecoder<'s> {
    readers: HashMap<u32, BodyReader<'s>>,
}

impl<'s> ApplicationDecoder<'s> {
    /// Prepares a reader per (schema id, writer schema); a schema that cannot be prepared fails its records.
    pub fn new(writer_schemas: impl IntoIterator<Item = (u32, &'s Schema)>) -> Self {
        let reader_form = LOAN_APPLICATION.canonical_form();
        let readers = writer_schemas
            .into_iter()
            .filter_map(|(id, writer_schema)| {
                let reader = if writer_schema.canonical_form() == reader_form {
                    BodyReader::Direct(GenericDatumReader::builder(writer_schema).build().ok()?)
                } else {
                    BodyReader::Resolving {
                        reader: GenericDatumReader::builder(writer_schema).build().ok()?,
                        writer: GenericDatumWriter::builder(writer_schema).build().ok()?,
                    }
                };
                Some((id, reader))
            })
            .collect();
        Self { readers }
    }

    /// Decodes the Avro `body` written with schema `schema_id`.
    pub fn decode(&self, schema_id: u32, body: &[u8]) -> Result<LoanApplication, DecodeError> {
        let reader = self.readers.get(&schema_id).ok_or_else(|| DecodeError::IncompatibleSchema {
            id: schema_id,
            reason: "writer schema cannot be prepared for reading".into(),
        })?;
        let mut remaining = body;
        let application = match reader {
            BodyReader::Direct(reader) => reader
                .read_deser::<LoanApplication>(&mut remaining)
                .map_err(|error| DecodeError::Avro(error.to_string()))?,
            BodyReader::Resolving { reader, writer } => {
                let value = reader.read_value(&mut remaining).map_err(|error| DecodeError::Avro(error.to_string()))?;
                let consumed = &body[..body.len() - remaining.len()];
                let mut encoded = Vec::with_capacity(body.len());
                let round_trips = writer.write_value_ref(&mut encoded, &value).is_ok() && encoded == consumed;
                if !round_trips {
                    return Err(DecodeError::Avro("body is truncated or not canonically encoded".into()));
                }
                let resolved = value.resolve(&LOAN_APPLICATION).map_err(|error| classify(schema_id, &error))?;
                apache_avro::from_value(&resolved)
                    .map_err(|error| DecodeError::IncompatibleSchema { id: schema_id, reason: error.to_string() })?
            }
        };
        if !remaining.is_empty() {
            return Err(DecodeError::TrailingBytes(remaining.len()));
        }
        Ok(application)
    }
}

fn classify(schema_id: u32, error: &apache_avro::Error) -> DecodeError {
    DecodeError::IncompatibleSchema { id: schema_id, reason: error.to_string() }
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
    use crate::events::{CreditRequest, ProtectedAttributes, LOAN_APPLICATION_SCHEMA};

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

    fn application() -> LoanApplication {
        LoanApplication {
            application_id: "a-1".into(),
            event_time: 1_700_000_000_000,
            credit_request: CreditRequest {
                duration_in_month: Some(6),
                purpose: Some("business".into()),
                ..CreditRequest::default()
            },
            protected_attributes: ProtectedAttributes { foreign_worker: Some("no".into()), ..Default::default() },
        }
    }

    fn registered(id: u32, schema: &str) -> HashMap<u32, Schema> {
        [(id, Schema::parse_str(schema).unwrap())].into_iter().collect()
    }

    /// A newer writer schema: the same record with one more optional field at the end.
    fn evolved_schema() -> String {
        LOAN_APPLICATION_SCHEMA.replacen(
            r#"{"name": "application_id", "type": "string""#,
            r#"{"name": "channel", "type": ["null", "string"], "default": null},
    {"name": "application_id", "type": "string""#,
            1,
        )
    }

    /// Bodies written with the bundled schema and with an evolved one decode to the same
    /// application; every truncation of either is rejected, never read as nulls.
    #[test]
    fn decodes_both_paths_and_rejects_every_truncation() {
        let same = registered(1, LOAN_APPLICATION_SCHEMA);
        let evolved_text = evolved_schema();
        assert_ne!(evolved_text, LOAN_APPLICATION_SCHEMA);
        let evolved = registered(2, &evolved_text);
        let direct_body =
            GenericDatumWriter::builder(&LOAN_APPLICATION).build().unwrap().write_ser_to_vec(&application()).unwrap();
        let mut value = apache_avro::to_value(application()).unwrap();
        if let apache_avro::types::Value::Record(fields) = &mut value {
            fields.insert(0, ("channel".into(), apache_avro::types::Value::Null));
        }
        let evolved_value = value.resolve(&evolved[&2]).unwrap();
        let evolved_body =
            GenericDatumWriter::builder(&evolved[&2]).build().unwrap().write_value_to_vec(evolved_value).unwrap();
        for (schemas, id, body) in [(&same, 1, &direct_body), (&evolved, 2, &evolved_body)] {
            let decoder = ApplicationDecoder::new(schemas.iter().map(|(id, schema)| (*id, schema)));
            assert_eq!(decoder.decode(id, body), Ok(application()));
            for cut in 0..body.len() {
                let result = decoder.decode(id, &body[..cut]);
                assert!(result.is_err(), "schema {id}, cut {cut} of {}: {result:?}", body.len());
            }
            let mut trailing = body.clone();
            trailing.push(0);
            assert_eq!(decoder.decode(id, &trailing), Err(DecodeError::TrailingBytes(1)));
        }
    }
}
