//! What flows through the pipeline: a consumed record, and the one outcome each record ends as
//! (a decision to audit and announce, a decision already stored, or a dead letter with its reason).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::audit::AuditRow;
use super::DomainError;

/// Longest accepted application id (it becomes a Kafka key, a UUIDv5 input and an indexed column).
pub const MAX_APPLICATION_ID_BYTES: usize = 256;

/// A consumed Kafka record. Its key and value share the buffer of the batch it was consumed in.
#[derive(Debug, Clone)]
pub struct InputRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub consumed_at: DateTime<Utc>,
}

/// What became of one record. A decision is boxed: inline, a batch's outcomes took ten times
/// the memory, in allocations too large for the allocator to reuse at once.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Scored and decided now: audit, then announce.
    Decided(Box<Decided>),
    /// Redelivered from below the partition's audited offset: not scored again; the pipeline
    /// looks up its stored decision (and decides it afresh if there is none). `announced`: it
    /// also lies below the partition's announced offset.
    Redelivered {
        application_id: String,
        announced: bool,
    },
    /// Already decided: the stored decision, announced again unchanged (not audited again).
    Stored(Box<Decided>),
    /// Redelivered from below the partition's announced offset with its outcome stored (or
    /// dead-lettered again): it was audited and announced before; nothing is done again.
    Announced,
    DeadLetter(DeadLetter),
}

/// A decision ready to audit and announce (its `LoanDecision` is encoded from the row when
/// it is announced).
#[derive(Debug, Clone)]
pub struct Decided {
    pub row: AuditRow,
}

/// Why a record goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Fixed reason label.
    pub kind: &'static str,
    /// Human-readable reason; never applicant data.
    pub message: String,
}

impl From<DomainError> for DeadLetter {
    fn from(error: DomainError) -> Self {
        Self { kind: error.kind(), message: error.to_string() }
    }
}
