//! Bytes on the wire ↔ typed events: the Confluent frame and Avro bodies (`avro`, with the
//! bundled application schema read in place by `in_place`), and the
//! schema registry (`registry`): writer schemas by id, cached, and our output schemas
//! registered; decisions written straight from their audit rows (`decision`); protected attributes sealed for storage (`sealed`).

mod avro;
mod decision;
mod in_place;
mod registry;
mod sealed;

use crate::domain::DeadLetter;
use crate::error::{Retriable, Retry};

pub(crate) use avro::{decode_outcome, encode_framed};
pub use avro::{split_frame, ApplicationDecoder, Decoded};
pub use decision::{encode_decision, encode_decision_into};
pub use registry::SchemaCache;
pub(crate) use registry::{register_schema, registry_reachable};
pub use sealed::{ProtectedKeys, SealError, StoredProtected, SEAL_OVERHEAD};

/// Why a record could not be decoded or encoded, or a schema not found or registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
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
    #[error("cannot encode the event: {0}")]
    Encode(String),
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    #[error("the schema registry refuses the schema for subject {subject}: {reason}")]
    SchemaRefused { subject: String, reason: String },
}

impl CodecError {
    /// Fixed, low-cardinality reason label (metrics, dead-letter header).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EmptyValue => "empty_value",
            Self::BadFraming(_) => "bad_framing",
            Self::UnknownSchema(_) => "unknown_schema",
            Self::IncompatibleSchema { .. } => "incompatible_schema",
            Self::Avro(_) => "avro_decode",
            Self::TrailingBytes(_) => "trailing_bytes",
            Self::Encode(_) => "encode_failed",
            Self::RegistryUnavailable(_) => "schema_registry",
            Self::SchemaRefused { .. } => "schema_refused",
        }
    }
}

impl Retriable for CodecError {
    /// Only an unreachable registry can get better; a record's bytes stay what they are.
    fn retry(&self) -> Retry {
        match self {
            Self::RegistryUnavailable(_) => Retry::Unavailable,
            _ => Retry::Never,
        }
    }
}

impl From<CodecError> for DeadLetter {
    fn from(error: CodecError) -> Self {
        Self { kind: error.kind(), message: error.to_string() }
    }
}
