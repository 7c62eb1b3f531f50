//! Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro body) → a loan
//! application: read in place when written with the bundled schema (`in_place`), otherwise
//! resolved against it into a [`LoanApplication`]; and events → framed Avro.

use std::collections::HashMap;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use schema_registry_converter::schema_registry_common::get_payload;

use super::in_place::read_application;
use super::CodecError;
use crate::domain::{ApplicationView, LoanApplication, LoanOutcome, LOAN_APPLICATION, LOAN_OUTCOME};

/// Splits a Confluent-framed value into schema id and Avro body.
pub fn split_frame(value: Option<&[u8]>) -> Result<(u32, &[u8]), CodecError> {
    let value = value.ok_or(CodecError::EmptyValue)?;
    match value {
        [] => Err(CodecError::EmptyValue),
        [magic, ..] if *magic != 0 => Err(CodecError::BadFraming("magic byte is not 0")),
        [_, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => Err(CodecError::BadFraming("shorter than the 5-byte header")),
    }
}

/// How a body written with one schema id is read.
enum BodyReader<'s> {
    /// The writer schema is the bundled one: read in place, borrowing the body's texts.
    InPlace,
    /// Another (compatible) writer schema: read with it, check the encoding round-trips (the
    /// generic reader treats end of input inside a union or string as null), resolve to ours.
    Resolving(Box<(GenericDatumReader<'s>, GenericDatumWriter<'s>)>),
}

/// A decoded application: borrowed from the body, or resolved from another writer schema.
/// The borrowed variant is the common one and stays unboxed: boxing it would allocate per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<'a> {
    InPlace(ApplicationView<'a>),
    Resolved(Box<LoanApplication>),
}

impl Decoded<'_> {
    /// The application, borrowed.
    pub fn view(&self) -> ApplicationView<'_> {
        match self {
            Self::InPlace(view) => *view,
            Self::Resolved(application) => application.view(),
        }
    }
}

/// Builds the readers for a set of writer schemas and decodes bodies with them.
pub struct ApplicationDecoder<'s> {
    readers: HashMap<u32, BodyReader<'s>>,
}

impl<'s> ApplicationDecoder<'s> {
    /// Prepares a reader per (schema id, writer schema); a schema that cannot be prepared fails its records.
    pub fn new(writer_schemas: impl IntoIterator<Item = (u32, &'s Schema)>) -> Self {
        let readers = writer_schemas
            .into_iter()
            .filter_map(|(id, writer_schema)| {
                // apache-avro's structural comparison: no canonical form built per batch.
                let reader = if *writer_schema == *LOAN_APPLICATION {
                    BodyReader::InPlace
                } else {
                    BodyReader::Resolving(Box::new((
                        GenericDatumReader::builder(writer_schema).build().ok()?,
                        GenericDatumWriter::builder(writer_schema).build().ok()?,
                    )))
                };
                Some((id, reader))
            })
            .collect();
        Self { readers }
    }

    /// Decodes the Avro `body` written with schema `schema_id`.
    pub fn decode<'b>(&self, schema_id: u32, body: &'b [u8]) -> Result<Decoded<'b>, CodecError> {
        let reader = self.readers.get(&schema_id).ok_or_else(|| CodecError::IncompatibleSchema {
            id: schema_id,
            reason: "writer schema cannot be prepared for reading".into(),
        })?;
        let (application, taken) = match reader {
            BodyReader::InPlace => {
                let (view, taken) = read_application(body)?;
                (Decoded::InPlace(view), taken)
            }
            BodyReader::Resolving(readers) => {
                let (reader, writer) = &**readers;
                let mut remaining = body;
                let value = reader.read_value(&mut remaining).map_err(|error| CodecError::Avro(error.to_string()))?;
                let consumed = &body[..body.len() - remaining.len()];
                let mut encoded = Vec::with_capacity(body.len());
                let round_trips = writer.write_value_ref(&mut encoded, &value).is_ok() && encoded == consumed;
                if !round_trips {
                    return Err(CodecError::Avro("body is truncated or not canonically encoded".into()));
                }
                let resolved = value.resolve(&LOAN_APPLICATION).map_err(|error| classify(schema_id, &error))?;
                let application: LoanApplication = apache_avro::from_value(&resolved)
                    .map_err(|error| CodecError::IncompatibleSchema { id: schema_id, reason: error.to_string() })?;
                (Decoded::Resolved(Box::new(application)), consumed.len())
            }
        };
        if taken < body.len() {
            return Err(CodecError::TrailingBytes(body.len() - taken));
        }
        Ok(application)
    }
}

fn classify(schema_id: u32, error: &apache_avro::Error) -> CodecError {
    CodecError::IncompatibleSchema { id: schema_id, reason: error.to_string() }
}

/// Decodes a `LoanOutcome` body written with `writer_schema`, which must be the bundled
/// `LoanOutcome` schema (compared structurally: names, fields and types in order).
pub fn decode_outcome(schema_id: u32, writer_schema: &Schema, body: &[u8]) -> Result<LoanOutcome, CodecError> {
    if *writer_schema != *LOAN_OUTCOME {
        return Err(CodecError::IncompatibleSchema { id: schema_id, reason: "not the LoanOutcome schema".into() });
    }
    let reader = GenericDatumReader::builder(writer_schema)
        .build()
        .map_err(|error| CodecError::IncompatibleSchema { id: schema_id, reason: error.to_string() })?;
    let mut remaining = body;
    let outcome =
        reader.read_deser::<LoanOutcome>(&mut remaining).map_err(|error| CodecError::Avro(error.to_string()))?;
    if !remaining.is_empty() {
        return Err(CodecError::TrailingBytes(remaining.len()));
    }
    Ok(outcome)
}

/// Avro-encodes `value` with `writer` and frames it with the Confluent header for `schema_id`.
pub fn encode_framed<T: serde::Serialize>(
    writer: &GenericDatumWriter<'_>,
    value: &T,
    schema_id: u32,
) -> Result<Vec<u8>, CodecError> {
    let body = writer.write_ser_to_vec(value).map_err(|error| CodecError::Encode(error.to_string()))?;
    Ok(get_payload(schema_id, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CreditRequest, ProtectedAttributes, LOAN_APPLICATION_SCHEMA};

    /// Framing: valid header, wrong magic, short header, empty and missing values.
    #[test]
    fn frame_parsing() {
        assert_eq!(split_frame(Some(&[0, 0, 0, 1, 2, 9, 9])), Ok((258, &[9u8, 9][..])));
        assert_eq!(split_frame(Some(&[0, 0, 0, 0, 7])), Ok((7, &[][..])));
        assert_eq!(split_frame(Some(&[1, 0, 0, 0, 7, 1])).unwrap_err().kind(), "bad_framing");
        assert_eq!(split_frame(Some(&[0, 0, 0])).unwrap_err().kind(), "bad_framing");
        assert_eq!(split_frame(Some(&[])), Err(CodecError::EmptyValue));
        assert_eq!(split_frame(None), Err(CodecError::EmptyValue));
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
            let expected = application();
            assert_eq!(decoder.decode(id, body).unwrap().view(), expected.view());
            for cut in 0..body.len() {
                let result = decoder.decode(id, &body[..cut]);
                assert!(result.is_err(), "schema {id}, cut {cut} of {}: {result:?}", body.len());
            }
            let mut trailing = body.clone();
            trailing.push(0);
            assert_eq!(decoder.decode(id, &trailing), Err(CodecError::TrailingBytes(1)));
        }
    }

    /// An outcome written with the bundled schema reads back through the strict reader; a
    /// truncated one and one under another schema do not.
    #[test]
    fn outcome_round_trips() {
        let outcome = LoanOutcome { application_id: "a".into(), defaulted: true, observed_at: 5 };
        let bytes = GenericDatumWriter::builder(&LOAN_OUTCOME).build().unwrap().write_ser_to_vec(&outcome).unwrap();
        assert_eq!(decode_outcome(3, &LOAN_OUTCOME, &bytes), Ok(outcome));
        assert!(decode_outcome(3, &LOAN_OUTCOME, &bytes[..bytes.len() - 1]).is_err());
        assert!(matches!(
            decode_outcome(3, &LOAN_APPLICATION, &bytes),
            Err(CodecError::IncompatibleSchema { id: 3, .. })
        ));
    }
}
