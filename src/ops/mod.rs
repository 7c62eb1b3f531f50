//! Operations on the audit table outside the hot path: `audit verify` (hash chains and
//! bit-exact re-scoring, [`verify`]), `audit purge` (retention, [`retention`]) and `report`
//! (the model-risk report of a period, [`model_risk`]).

mod legacy;
pub mod model_risk;
mod report;
pub mod retention;
pub mod verify;

use crate::error::{Retriable, Retry};
use crate::sinks::SinkError;

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(
        "retention_months = {0} is below the {minimum} months Regulation B requires (12 CFR 1002.12(b))",
        minimum = retention::MINIMUM_RETENTION_MONTHS
    )]
    RetentionTooShort(u32),
}

impl Retriable for OpsError {
    /// A database outage may pass; a refused retention period does not.
    fn retry(&self) -> Retry {
        match self {
            Self::Database(_) => Retry::Unavailable,
            Self::Sink(error) => error.retry(),
            Self::RetentionTooShort(_) => Retry::Never,
        }
    }
}
